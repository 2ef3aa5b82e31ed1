//! `approval` steps: a question put to a human, resolved inside `apply` as a human request
//! (built by `run::requests`); the run waits, passivated, for the decision.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::steps::StepShape;

/// `approval`: the run waits until a human approves or rejects; a rejection fails the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStep {
    /// What the human is asked; may hold `${{ … }}` templates.
    pub question: String,
    /// Who is asked first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
}

impl ApprovalStep {
    pub const FIELDS: &'static [&'static str] = &["question", "assignee"];
}

impl StepShape for ApprovalStep {
    fn templates(&self, at: &str) -> Vec<(String, Value)> {
        vec![(format!("{at}.question"), Value::String(self.question.clone()))]
    }
}
