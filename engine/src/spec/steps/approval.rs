//! `approval` steps: a question put to a human, resolved inside `apply` as a human request
//! (built by `run::requests::approval`); the run waits, passivated, for the decision — or for
//! its escalation timers: page a second assignee after a while, apply a default after longer.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{is_valid_id, StepId};
use crate::spec::steps::StepShape;
use crate::spec::validate::problem;
use crate::spec::SpecProblem;

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
    /// Escalation, in order of `after` (counted from when the request was made): page another
    /// assignee (`to`), or apply a decision (`default`), which ends the wait.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<Escalation>,
}

/// One escalation level: after `after`, either page `to` or apply `default`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub after: Duration,
    /// A user or group paged (and added to the request's assignees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The decision applied by the policy, recorded as the policy's, not a person's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultDecision>,
}

/// `approve`, `reject`, or `{ value: … }` (the step's output, as a `modify` would give).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DefaultDecision {
    Word(DefaultWord),
    Value { value: Value },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DefaultWord {
    Approve,
    Reject,
}

impl ApprovalStep {
    pub const FIELDS: &'static [&'static str] = &["question", "assignee", "forbid_self_approval", "context", "escalate"];
}

impl StepShape for ApprovalStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if let Some(a) = &self.assignee {
            if !is_valid_id(a) {
                p.push(problem(format!("{at}.assignee"), format!("`{a}` is not a user or group name")));
            }
        }
        let mut last = Duration::ZERO;
        for (n, e) in self.escalate.iter().enumerate() {
            let here = format!("{at}.escalate[{n}]");
            match (&e.to, &e.default) {
                (Some(_), Some(_)) => p.push(problem(&here, "an escalation either pages (`to`) or applies a `default`, not both")),
                (None, None) => p.push(problem(&here, "an escalation needs `to` (who is paged) or `default` (the decision applied)")),
                (Some(to), None) if !is_valid_id(to) => p.push(problem(format!("{here}.to"), format!("`{to}` is not a user or group name"))),
                (None, Some(_)) if n + 1 != self.escalate.len() => {
                    p.push(problem(&here, "a `default` ends the wait, so it must be the last escalation"))
                }
                _ => {}
            }
            if e.after.is_zero() || e.after <= last {
                p.push(problem(format!("{here}.after"), "must be more than zero and later than the escalation before it"));
            }
            last = e.after;
        }
    }

    fn templates(&self, at: &str) -> Vec<(String, Value)> {
        vec![(format!("{at}.question"), Value::String(self.question.clone()))]
    }

    fn upstream_refs(&self, at: &str) -> Vec<(String, StepId)> {
        self.context.iter().map(|s| (format!("{at}.context"), s.clone())).collect()
    }
}
