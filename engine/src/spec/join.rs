//! Joins: how a step's `needs` combine into "run" or "skip" (Airflow's trigger rules, GitHub
//! Actions' `if: always()`), and what validation can know about them before any run.
//!
//! Every join waits until all needs have finished. Each finished need counts as
//! - **succeeded** — it ran and succeeded (a `condition` only when it is true);
//! - **skipped** — a branch not taken: a `condition` that is false, a `when` that is false, or a
//!   step its own join skipped because its branch was not taken;
//! - **failed** — it failed or was cancelled, or its join skipped it because something upstream
//!   failed (Airflow's `upstream_failed`): a failure propagates as a failure, never as a skip.
//!
//! A step its join skips is itself *skipped* for its dependents when none of the needs that
//! decided it failed, and *failed* otherwise — that is how skipped-vs-failed propagates.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::expr::{self, Scope};
use crate::spec::{SpecProblem, StepKind, StepType, WorkflowSpec};

/// How a step's `needs` combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Join {
    /// Run when every need succeeded (the default).
    #[default]
    AllSucceeded,
    /// Run when every need has finished, whatever its outcome (clean-up, notifications).
    AllDone,
    /// Run when at least one need succeeded.
    AnySucceeded,
    /// Run when no need failed: skipped branches are fine (the merge after an `if`).
    NoneFailed,
}

impl Join {
    pub fn name(self) -> &'static str {
        match self {
            Join::AllSucceeded => "all_succeeded",
            Join::AllDone => "all_done",
            Join::AnySucceeded => "any_succeeded",
            Join::NoneFailed => "none_failed",
        }
    }

    /// The join's verdict on the outcomes of all needs.
    pub fn verdict(self, outcomes: impl IntoIterator<Item = NeedOutcome>) -> JoinVerdict {
        let (mut succeeded, mut skipped, mut failed) = (false, false, false);
        for o in outcomes {
            match o {
                NeedOutcome::Succeeded => succeeded = true,
                NeedOutcome::Skipped => skipped = true,
                NeedOutcome::Failed => failed = true,
            }
        }
        let runs = match self {
            Join::AllSucceeded => !skipped && !failed,
            Join::AllDone => true,
            Join::AnySucceeded => succeeded,
            Join::NoneFailed => !failed,
        };
        if runs { JoinVerdict::Run } else { JoinVerdict::Skip { upstream_failed: failed } }
    }
}

/// A finished need, as its dependents' joins see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeedOutcome {
    Succeeded,
    Skipped,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinVerdict {
    Run,
    /// Skip the step; `upstream_failed` when a failed need is why (it then counts as failed).
    Skip {
        upstream_failed: bool,
    },
}

/// The outcomes a step can possibly end with, over every run (an over-approximation: what is
/// not in it can never happen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Possible {
    succeeded: bool,
    skipped: bool,
    failed: bool,
}

/// Why a step can never run, or can never succeed, for the messages.
#[derive(Clone, Debug, Default)]
struct Facts {
    possible: Possible,
    /// Set when the step can never succeed: why, in words.
    never_succeeds: Option<String>,
}

/// The value of an expression that reads neither `params` nor `steps`, if it evaluates.
fn constant_bool(src: &str) -> Option<bool> {
    if !expr::referenced_params(src).is_empty() || !expr::referenced_steps(src).is_empty() {
        return None;
    }
    let empty = json!({});
    expr::eval_bool(src, &Scope { params: &Value::Null, steps: &empty }).ok()
}

/// Check every explicit `join`: it needs `needs`, and its needs must be able to produce an
/// outcome that lets it run. `needs` and `topo` are the validated graph (no cycles).
pub(crate) fn check_joins(spec: &WorkflowSpec, needs: &[Vec<usize>], topo: &[usize], p: &mut Vec<SpecProblem>) {
    let mut facts: Vec<Facts> = vec![Facts::default(); spec.steps.len()];
    for &i in topo {
        let step = &spec.steps[i];
        let at = format!("steps[{i}] ({}).join", step.id);
        let join = step.join.unwrap_or_default();
        if step.join.is_some() && needs[i].is_empty() {
            p.push(SpecProblem {
                at: at.clone(),
                message: format!("`join: {}` combines `needs`, and this step has none", join.name()),
            });
        }
        let of = |n: usize| facts[n].possible;
        let all = |f: &dyn Fn(Possible) -> bool| needs[i].iter().all(|&n| f(of(n)));
        let any = |f: &dyn Fn(Possible) -> bool| needs[i].iter().any(|&n| f(of(n)));
        // Can the join let the step run, and with which outcome can it skip it?
        let (can_run, skip_as_skipped, skip_as_failed) = match join {
            Join::AllSucceeded => {
                (all(&|o| o.succeeded), any(&|o| o.skipped) && all(&|o| o.succeeded || o.skipped), any(&|o| o.failed))
            }
            Join::AllDone => (true, false, false),
            Join::AnySucceeded => (
                needs[i].is_empty() || any(&|o| o.succeeded),
                !needs[i].is_empty() && all(&|o| o.skipped),
                all(&|o| o.skipped || o.failed) && any(&|o| o.failed),
            ),
            Join::NoneFailed => (all(&|o| o.succeeded || o.skipped), false, any(&|o| o.failed)),
        };
        if !can_run && step.join.is_some() && !needs[i].is_empty() {
            let blockers: Vec<String> = needs[i]
                .iter()
                .filter(|&&n| match join {
                    Join::AllSucceeded | Join::AnySucceeded => !of(n).succeeded,
                    Join::NoneFailed => !(of(n).succeeded || of(n).skipped),
                    Join::AllDone => false,
                })
                .map(|&n| {
                    format!("`{}` {}", spec.steps[n].id, facts[n].never_succeeds.as_deref().unwrap_or("can only fail"))
                })
                .collect();
            let rule = match join {
                Join::AllSucceeded => "needs every need to succeed",
                Join::AnySucceeded => "needs one need to succeed",
                Join::NoneFailed => "needs no need to fail",
                Join::AllDone => unreachable!("all_done always runs"),
            };
            p.push(SpecProblem {
                at,
                message: format!("`join: {}` can never run: it {rule}, but {}", join.name(), blockers.join(", ")),
            });
        }

        // What the step itself can end with when it runs.
        let when = step.when.as_deref().map(constant_bool);
        let cond = match &step.kind {
            StepKind::Condition(c) => Some(constant_bool(&c.expr)),
            _ => None,
        };
        let mut own = Possible {
            succeeded: true,
            skipped: when.is_some_and(|w| w != Some(true)),
            failed: step.ty() != StepType::Delay,
        };
        let mut why = None;
        if let Some(c) = cond {
            own.skipped |= c != Some(true);
            own.succeeded = c != Some(false);
            own.failed = c.is_none();
            if c == Some(false) {
                why = Some("is a condition that is always false".to_string());
            }
        }
        if when == Some(Some(false)) {
            own = Possible { succeeded: false, skipped: true, failed: false };
            why = Some("has a `when` that is always false".to_string());
        }
        let mut possible = Possible { skipped: skip_as_skipped, failed: skip_as_failed, ..Possible::default() };
        if can_run {
            possible.succeeded |= own.succeeded;
            possible.skipped |= own.skipped;
            possible.failed |= own.failed;
        } else {
            why = Some(format!("can never run (its `join: {}` cannot be met)", join.name()));
        }
        if !possible.succeeded && why.is_none() {
            why = Some("can never succeed".to_string());
        }
        facts[i] = Facts { possible, never_succeeds: why };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_join_runs_on_the_outcomes_it_names() {
        use NeedOutcome::*;
        let joins = [Join::AllSucceeded, Join::AllDone, Join::AnySucceeded, Join::NoneFailed];
        let show = |v: JoinVerdict| match v {
            JoinVerdict::Run => "run",
            JoinVerdict::Skip { upstream_failed: false } => "skip",
            JoinVerdict::Skip { upstream_failed: true } => "skip(failed)",
        };
        // Columns: all_succeeded, all_done, any_succeeded, none_failed.
        let table: [(&[NeedOutcome], [&str; 4]); 6] = [
            (&[Succeeded, Succeeded], ["run", "run", "run", "run"]),
            (&[Succeeded, Skipped], ["skip", "run", "run", "run"]),
            (&[Skipped, Skipped], ["skip", "run", "skip", "run"]),
            (&[Succeeded, Failed], ["skip(failed)", "run", "run", "skip(failed)"]),
            (&[Skipped, Failed], ["skip(failed)", "run", "skip(failed)", "skip(failed)"]),
            (&[Failed], ["skip(failed)", "run", "skip(failed)", "skip(failed)"]),
        ];
        for (outcomes, expected) in table {
            let got: Vec<&str> = joins.iter().map(|j| show(j.verdict(outcomes.iter().copied()))).collect();
            assert_eq!(got, expected, "{outcomes:?}");
        }
    }
}
