//! Escalation of a human request that nobody answers: after a while page another user or
//! group (`to`), after longer apply a `default` answer, recorded as the escalation policy's.
//! Every mode of request has its ladder — an `approval` step's or any other step's `escalate:`
//! (the approval it asks; the guidance and tool authorisations a job step asks), the
//! workflow budget's `escalate:` (its extensions) — and each mode its legal defaults:
//!
//! | mode | defaults |
//! |---|---|
//! | approval | `approve`, `reject`/`refuse`, `abort`, `{ value: … }` (the step's output) |
//! | budget extension | `refuse`/`reject` (the run fails, its budget exhausted), `abort` |
//! | guidance | `fail`/`refuse` (the step fails, saying why), `abort`, `{ value: … }` (a fallback output instead of the blocked one) |
//! | tool authorisation | `deny`/`refuse` (the model is told why), `{ deny: reason }`, `abort` |
//!
//! `refuse` is the refusing answer of every mode, so one ladder fits a step that may ask for
//! guidance and for a tool authorisation. A default never lets through what a person was
//! asked to vouch for beyond an approval: it does not release output the gate mesh or a
//! check blocked, authorise a tool call, or spend beyond the cap.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::is_valid_id;
use crate::run::HumanMode;
use crate::spec::SpecProblem;
use crate::spec::validate::problem;

/// One escalation level: after `after` (counted from when the request was made), either page
/// `to` or apply `default`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub after: Duration,
    /// A user or group paged (and added to the request's assignees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The answer applied by the policy, recorded as the policy's, not a person's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultDecision>,
}

/// A word (`approve`, `refuse`, `fail`…), `{ value: … }` (an output, as a `modify` would give)
/// or `{ deny: reason }` (a tool authorisation denied with the reason the model receives).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DefaultDecision {
    Word(DefaultWord),
    Value { value: Value },
    Deny { deny: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DefaultWord {
    Approve,
    Reject,
    /// The refusing answer of the request's mode.
    Refuse,
    /// Guidance: fail the step.
    Fail,
    /// Tool authorisation: deny the call.
    Deny,
    Abort,
}

impl DefaultDecision {
    /// How the spec writes it (for messages and the audit).
    pub fn name(&self) -> String {
        match self {
            DefaultDecision::Word(w) => {
                serde_json::to_value(w).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
            }
            DefaultDecision::Value { .. } => "value".into(),
            DefaultDecision::Deny { .. } => "deny".into(),
        }
    }

    /// Whether it is an answer to a request of `mode`.
    pub fn is_legal_for(&self, mode: HumanMode) -> bool {
        use DefaultWord::*;
        matches!(
            (self, mode),
            (DefaultDecision::Word(Refuse | Abort), _)
                | (DefaultDecision::Word(Approve | Reject) | DefaultDecision::Value { .. }, HumanMode::Approval)
                | (DefaultDecision::Word(Reject), HumanMode::BudgetExtension)
                | (DefaultDecision::Word(Fail) | DefaultDecision::Value { .. }, HumanMode::Guidance)
                | (DefaultDecision::Word(Deny) | DefaultDecision::Deny { .. }, HumanMode::ToolAuthorisation)
        )
    }
}

/// The defaults a request of `mode` accepts, as the spec writes them.
pub fn legal_defaults(mode: HumanMode) -> &'static str {
    match mode {
        HumanMode::Approval => "approve, reject, refuse, abort or { value: … }",
        HumanMode::BudgetExtension => "refuse, reject or abort (a policy never spends beyond the cap)",
        HumanMode::Guidance => "fail, refuse, abort or { value: … } (a policy never releases blocked output)",
        HumanMode::ToolAuthorisation => "deny, refuse, { deny: reason } or abort (a policy never authorises a call)",
    }
}

/// What the spec calls a mode in messages.
pub fn mode_name(mode: HumanMode) -> &'static str {
    match mode {
        HumanMode::Approval => "an approval",
        HumanMode::BudgetExtension => "a budget extension",
        HumanMode::Guidance => "a guidance request",
        HumanMode::ToolAuthorisation => "a tool authorisation",
    }
}

/// Check an escalation ladder at `at` (`steps[2] (ask).escalate`) for requests of `modes`:
/// each level pages or applies a default (not both), `after` grows, a default comes last and
/// is an answer to every mode the ladder serves.
pub(crate) fn check(ladder: &[Escalation], at: &str, modes: &[HumanMode], p: &mut Vec<SpecProblem>) {
    let mut last = Duration::ZERO;
    for (n, e) in ladder.iter().enumerate() {
        let here = format!("{at}[{n}]");
        match (&e.to, &e.default) {
            (Some(_), Some(_)) => {
                p.push(problem(&here, "an escalation either pages (`to`) or applies a `default`, not both"))
            }
            (None, None) => {
                p.push(problem(&here, "an escalation needs `to` (who is paged) or `default` (the decision applied)"))
            }
            (Some(to), None) if !is_valid_id(to) => {
                p.push(problem(format!("{here}.to"), format!("`{to}` is not a user or group name")))
            }
            (None, Some(_)) if n + 1 != ladder.len() => {
                p.push(problem(&here, "a `default` ends the wait, so it must be the last escalation"))
            }
            _ => {}
        }
        if let Some(d) = &e.default {
            if let DefaultDecision::Deny { deny } = d
                && deny.trim().is_empty()
            {
                p.push(problem(format!("{here}.default.deny"), "the reason the model is given may not be empty"));
            }
            for &mode in modes {
                if !d.is_legal_for(mode) {
                    p.push(problem(
                        format!("{here}.default"),
                        format!(
                            "`{}` cannot answer {}, which this escalation serves: use {}",
                            d.name(),
                            mode_name(mode),
                            legal_defaults(mode)
                        ),
                    ));
                }
            }
        }
        if e.after.is_zero() || e.after <= last {
            p.push(problem(format!("{here}.after"), "must be more than zero and later than the escalation before it"));
        }
        last = e.after;
    }
}
