//! `delay` steps: a durable timer resolved inside `apply` (no job); its deadline is journaled
//! state, so a restart neither shortens nor restarts the wait.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::steps::StepShape;

/// `delay`: the steps that need this one wait `duration`; the wait survives restarts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayStep {
    /// How long to wait (e.g. `10m`), durable across restarts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duration: Duration,
}

impl DelayStep {
    pub const FIELDS: &'static [&'static str] = &["duration"];

    /// When a delay that starts at `now` (ms since the epoch) ends.
    pub fn deadline(&self, now: u64) -> u64 {
        now.saturating_add(self.duration.as_millis() as u64)
    }
}

impl StepShape for DelayStep {}
