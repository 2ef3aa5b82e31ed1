//! One module per step type: the struct of the fields that belong to it, their validation, and
//! any resolution the run does itself (a condition's branch, a delay's deadline). A step holds
//! one of them in its [`StepKind`]; [`format`] reads a step from the one flat map users write
//! and describes it in the JSON Schema.
//!
//! Adding a step type is adding its module and one line to the `step_kinds!` list below.

mod api_call;
mod approval;
mod code;
mod condition;
mod connector;
mod delay;
mod event;
mod format;
mod llm;
mod platform;
mod research;
mod tools;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::spec::{SpecProblem, StepType};

pub use api_call::{ApiCallStep, HttpRequestSpec};
pub use approval::ApprovalStep;
pub use code::{CodeLimits, CodeStep};
pub use condition::ConditionStep;
pub use connector::{
    AttachmentSource, AttachmentSpec, ConnectorAction, ConnectorStep, EmailFetchWith, EmailSendWith, HttpRequestWith,
    MAX_FETCH, Recipients, read_with,
};
pub use delay::DelayStep;
pub use event::{DEFAULT_LOOKBACK, EmitSpec, EventStep, OnTimeout, WaitSpec, valid_event_name};
pub(crate) use format::one_shape_per_type;
pub use llm::{LlmMessage, LlmStep, OnInjection, compile_schema, schema_errors};
pub use platform::{
    DEFAULT_MEMORY_SINCE, MAX_MEMORY_LIST, MAX_NOTE_BYTES, MAX_WORKFLOW_DEPTH, MemoryListWith, MemoryReadWith,
    MemoryWriteWith, NotifyWith, PlatformAction, PlatformStep, WorkflowRunWith,
};
pub use research::{
    CITATIONS_CHECK, DEFAULT_COLLECTION, IfMissing, MAX_TOP_K, ResearchStep, ResearchSummary, citation_check,
    citations, is_collection_name, summary_context,
};
pub use tools::{
    Authorize, DEFAULT_MAX_TURNS, MAX_TOOL_CALLS_PER_TURN, MAX_TOOL_RESULT_BYTES, MAX_TURNS_LIMIT, ToolBacking,
    ToolSpec, is_tool_name,
};

/// What a step type's own fields add to validation. Places start with `at` (`steps[2] (fetch)`).
pub(crate) trait StepShape {
    /// Problems in the type's own fields (ranges, formats).
    fn check(&self, _at: &str, _p: &mut Vec<SpecProblem>) {}
    /// CEL expressions among its fields, with their places (their syntax and references are checked).
    fn expressions(&self, _at: &str) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Values among its fields whose strings may hold `${{ … }}` templates, with their places.
    fn templates(&self, _at: &str) -> Vec<(String, Value)> {
        Vec::new()
    }
    /// Steps its fields name, which must be upstream of it, with their places.
    fn upstream_refs(&self, _at: &str) -> Vec<(String, crate::ids::StepId)> {
        Vec::new()
    }
}

/// Declares [`StepKind`] with one variant per step type (named as in [`StepType`]) and the
/// dispatch from a [`StepType`] to its struct.
macro_rules! step_kinds {
    ($($variant:ident($t:ty)),+ $(,)?) => {
        /// A step's type and the fields that belong to it.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum StepKind {
            $($variant($t)),+
        }

        impl StepKind {
            pub fn ty(&self) -> StepType {
                match self {
                    $(StepKind::$variant(_) => StepType::$variant),+
                }
            }

            pub(crate) fn shape(&self) -> &dyn StepShape {
                match self {
                    $(StepKind::$variant(s) => s),+
                }
            }
        }

        /// Every step type, in the order the schema lists them.
        const KINDS: &[StepType] = &[$(StepType::$variant),+];

        /// The fields of a step of type `ty` besides those every step has.
        fn own_fields(ty: StepType) -> &'static [&'static str] {
            match ty {
                $(StepType::$variant => <$t>::FIELDS),+
            }
        }

        /// Read the fields of a step of type `ty` besides those every step has.
        fn deserialize_kind<'de, D: Deserializer<'de>>(ty: StepType, d: D) -> Result<StepKind, D::Error> {
            match ty {
                $(StepType::$variant => <$t as Deserialize>::deserialize(d).map(StepKind::$variant)),+
            }
        }

        fn kind_schema(ty: StepType, generator: &mut SchemaGenerator) -> Schema {
            match ty {
                $(StepType::$variant => <$t as JsonSchema>::json_schema(generator)),+
            }
        }
    };
}

impl StepKind {
    /// The model conversation this step holds, if any: an `llm` step's, or a `research` step's
    /// summary (as an `llm` step without tools or schema). What the run renders, quotes,
    /// reserves and charges exactly.
    pub fn model_step(&self) -> Option<std::borrow::Cow<'_, LlmStep>> {
        match self {
            StepKind::Llm(llm) => Some(std::borrow::Cow::Borrowed(llm)),
            StepKind::Research(r) if r.ingest.is_none() => {
                r.summarize.as_ref().map(|s| std::borrow::Cow::Owned(s.llm()))
            }
            _ => None,
        }
    }
}

step_kinds! {
    Condition(ConditionStep),
    Code(CodeStep),
    ApiCall(ApiCallStep),
    Approval(ApprovalStep),
    Delay(DelayStep),
    Llm(LlmStep),
    Research(ResearchStep),
    Connector(ConnectorStep),
    Event(EventStep),
    Platform(PlatformStep),
}
