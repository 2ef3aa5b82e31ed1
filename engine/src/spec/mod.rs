//! Workflow specs: the YAML model, parsing with located errors, and validation into a
//! [`ValidatedSpec`] — the only form the run state machine accepts.

pub mod escalation;
mod join;
pub mod limits;
mod model;
mod parse;
pub mod steps;
pub mod triggers;
mod validate;

pub use escalation::{DefaultDecision, DefaultWord, Escalation};
pub use join::{Join, JoinVerdict, NeedOutcome};
pub use model::*;
pub use parse::{SpecError, SpecProblem, parse_yaml};
pub use steps::{
    ApiCallStep, ApprovalStep, Authorize, CITATIONS_CHECK, CodeLimits, CodeStep, ConditionStep, ConnectorStep,
    DEFAULT_COLLECTION, DEFAULT_MAX_TURNS, DelayStep, HttpRequestSpec, IfMissing, LlmMessage, LlmStep,
    MAX_TOOL_CALLS_PER_TURN, MAX_TOOL_RESULT_BYTES, MAX_TOP_K, OnInjection, ResearchStep, ResearchSummary, StepKind,
    ToolBacking, ToolSpec, citation_check, citations, compile_schema, is_collection_name, is_tool_name, schema_errors,
    summary_context,
};
pub(crate) use validate::problem;
pub use validate::{Dag, ValidatedSpec, validate};

/// The JSON Schema of the spec format, for editors (`tollgate schema`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(WorkflowSpec)).expect("schema serialises")
}

#[cfg(test)]
mod tests;
