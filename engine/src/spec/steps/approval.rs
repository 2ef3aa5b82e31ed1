//! `approval` steps: a question put to a human, resolved inside `apply` as a human request
//! (built by `run::requests::approval`); the run waits, passivated, for the decision — or for
//! the step's escalation timers (`escalate:`, a field every step that asks has: see
//! `spec::escalation`): page a second assignee after a while, apply a default after longer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{StepId, is_valid_id};
use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::validate::problem;

/// `approval`: the run waits until a human approves or rejects; a rejection fails the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStep {
    /// What the human is asked; may hold `${{ … }}` templates.
    pub question: String,
    /// Who is asked first: a user or a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// The user who started the run may not approve it (nor modify its answer); they may
    /// still reject or abort.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forbid_self_approval: bool,
    /// Upstream steps whose (gated, so redacted) outputs the request shows as its context.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub context: Vec<StepId>,
}

impl ApprovalStep {
    pub const FIELDS: &'static [&'static str] = &["question", "assignee", "forbid_self_approval", "context"];
}

impl StepShape for ApprovalStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if let Some(a) = &self.assignee {
            if !is_valid_id(a) {
                p.push(problem(format!("{at}.assignee"), format!("`{a}` is not a user or group name")));
            }
        }
    }

    fn templates(&self, at: &str) -> Vec<(String, Value)> {
        vec![(format!("{at}.question"), Value::String(self.question.clone()))]
    }

    fn upstream_refs(&self, at: &str) -> Vec<(String, StepId)> {
        self.context.iter().map(|s| (format!("{at}.context"), s.clone())).collect()
    }
}
