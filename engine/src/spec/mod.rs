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
pub use parse::{parse_yaml, SpecError, SpecProblem};
pub use steps::{
    is_collection_name, ApiCallStep, ApprovalStep, CodeLimits, CodeStep, ConditionStep, ConnectorStep, DelayStep, HttpRequestSpec, LlmMessage,
    LlmStep, OnInjection, ResearchStep, StepKind, Authorize, ToolBacking, ToolSpec, is_tool_name, DEFAULT_MAX_TURNS, MAX_TOOL_CALLS_PER_TURN, MAX_TOOL_RESULT_BYTES, compile_schema, schema_errors, DEFAULT_COLLECTION, MAX_TOP_K,
    IfMissing, ResearchSummary, citation_check, citations, summary_context, CITATIONS_CHECK,
};
pub use validate::{validate, Dag, ValidatedSpec};
pub(crate) use validate::problem;

/// The JSON Schema of the spec format, for editors (`tollgate schema`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(WorkflowSpec)).expect("schema serialises")
}

#[cfg(test)]
mod tests;
