//! The settings of a step type that is not available yet (`connector`,
//! `platform`): parsed so a spec written for a later version reads, refused by
//! validation. Each type gets its own module with its own fields when it lands.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::steps::StepShape;

/// `connector`, `platform`: not available in this version; the
/// type's settings go under `with`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnavailableStep {
    /// The type's settings, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<serde_json::Map<String, serde_json::Value>>,
}

impl UnavailableStep {
    pub const FIELDS: &'static [&'static str] = &["with"];
}

impl StepShape for UnavailableStep {}
