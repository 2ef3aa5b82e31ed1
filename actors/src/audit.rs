//! A run's audit trail for people and consoles: its journal as named events, in order —
//! `request.approved` and `request.rejected` (and `modified`, `extended`, `aborted`) are
//! distinct events naming who decided (or that the escalation policy did), and every
//! escalation that came due is there (`escalation.paged` with whom, `escalation.default`).
//! Outputs are not part of it (see `runs show --outputs`).

use serde_json::{json, Value};
use tollgate_engine::run::{Decision, Event, Timer};
use tollgate_engine::spec::{StepKind, ValidatedSpec};

use crate::service::decision_word;

/// The journal as audit events.
pub fn audit_events(spec: &ValidatedSpec, journal: &[Event]) -> Vec<Value> {
    journal.iter().map(|e| audit_event(spec, e)).collect()
}

fn audit_event(spec: &ValidatedSpec, e: &Event) -> Value {
    let at = e.at();
    match e {
        Event::RunStarted { .. } => json!({"at": at, "kind": "run.started"}),
        Event::StepSucceeded { step, attempt, cost, .. } => json!({"at": at, "kind": "step.succeeded", "step": step, "attempt": attempt, "cost": cost}),
        Event::StepFailed { step, attempt, error, .. } => json!({"at": at, "kind": "step.failed", "step": step, "attempt": attempt, "code": error.code}),
        Event::StepBlocked { step, attempt, .. } => json!({"at": at, "kind": "step.blocked", "step": step, "attempt": attempt}),
        Event::AttemptInterrupted { step, attempt, worker, .. } => json!({"at": at, "kind": "attempt.interrupted", "step": step, "attempt": attempt, "worker": worker}),
        Event::TimerFired { timer, .. } => match timer {
            Timer::Delay { step } => json!({"at": at, "kind": "delay.elapsed", "step": step}),
            Timer::QueueTimeout { step, attempt } => json!({"at": at, "kind": "attempt.queue_timeout", "step": step, "attempt": attempt}),
            Timer::StepTimeout { step, attempt } => json!({"at": at, "kind": "attempt.timed_out", "step": step, "attempt": attempt}),
            Timer::RunTimeout => json!({"at": at, "kind": "run.timed_out"}),
            Timer::EventWait { step } => json!({"at": at, "kind": "event.wait_timed_out", "step": step}),
            Timer::Escalate { step, level } => {
                let level_spec = spec.step_by_id(step).and_then(|(_, s)| match &s.kind {
                    StepKind::Approval(a) => a.escalate.get(*level as usize),
                    _ => None,
                });
                match level_spec {
                    Some(e) if e.to.is_some() => json!({"at": at, "kind": "escalation.paged", "step": step, "level": level, "to": e.to}),
                    _ => json!({"at": at, "kind": "escalation.default", "step": step, "level": level}),
                }
            }
        },
        Event::HumanDecided { request, decision, by, comment, by_policy, .. } => {
            let kind = match decision {
                Decision::Approve => "request.approved",
                Decision::Reject => "request.rejected",
                Decision::Modify { .. } => "request.modified",
                Decision::Extend { .. } => "request.extended",
                Decision::Abort => "request.aborted",
            };
            let mut v = json!({"at": at, "kind": kind, "request": request, "decision": decision_word(decision), "by": by, "by_policy": by_policy, "comment": comment});
            if let Decision::Extend { amount } = decision {
                v["amount"] = json!(amount);
            }
            v
        }
        Event::Cancelled { by, reason, .. } => json!({"at": at, "kind": "run.cancelled", "by": by, "reason": reason}),
        // The event's id and name; its payload is output, shown by `runs show --outputs`.
        Event::EventReceived { step, received, .. } => {
            json!({"at": at, "kind": "event.received", "step": step, "event": received["id"], "name": received["name"]})
        }
        Event::ChildFinished { step, child, outcome, cost, .. } => match outcome {
            tollgate_engine::run::ChildOutcome::Succeeded { .. } => json!({"at": at, "kind": "child.succeeded", "step": step, "child": child, "cost": cost}),
            tollgate_engine::run::ChildOutcome::Failed { error } => {
                json!({"at": at, "kind": "child.failed", "step": step, "child": child, "cost": cost, "code": error.code})
            }
        },
        Event::ChildBudgetAsked { step, child, request, amount, .. } => {
            json!({"at": at, "kind": "child.budget_asked", "step": step, "child": child, "request": request, "amount": amount})
        }
    }
}
