//! A run's audit trail for people and consoles: its journal as named events, in order —
//! `request.approved` and `request.rejected` (and `modified`, `extended`, `aborted`) are
//! distinct events naming who decided (or that the escalation policy did), and every
//! escalation that came due is there (`escalation.paged` with whom, `escalation.default`).
//! Outputs are not part of it (see `runs show --outputs`); [`detailed_event`] adds them, with
//! timings, errors and gate and check verdicts, for a run's receipt (`crate::receipt`).

use serde_json::{Value, json};
use tollgate_engine::run::{Decision, Event, Timer};
use tollgate_engine::spec::ValidatedSpec;

use crate::service::decision_word;

/// The journal as audit events.
pub fn audit_events(spec: &ValidatedSpec, journal: &[Event]) -> Vec<Value> {
    journal.iter().map(|e| audit_event(spec, e)).collect()
}

/// An audit event with what an auditor needs besides: an attempt's start, its output (or the
/// redacted form the gate held), its error, the gate and check verdicts with their rules, the
/// run's parameters, a decision's released or corrected value, a received event's payload.
/// `redact` is applied to every value that came from outside (parameters, outputs, errors,
/// comments, reasons, payloads), never to ids, times, costs or verdicts.
pub fn detailed_event(spec: &ValidatedSpec, e: &Event, redact: &mut dyn FnMut(&Value) -> Value) -> Value {
    let mut v = audit_event(spec, e);
    let mut put = |k: &str, value: Value| v[k] = value;
    match e {
        Event::RunStarted { params, .. } => put("params", redact(params)),
        Event::StepSucceeded { started_at, output, gate, .. } => {
            put("started_at", json!(started_at));
            put("output", redact(output));
            put("gate", verdict_summary(gate.as_ref(), redact));
        }
        Event::StepFailed { started_at, error, gate, .. } => {
            put("started_at", json!(started_at));
            put("error", json!({"code": error.code, "message": redact(&json!(error.message))}));
            put("gate", verdict_summary(gate.as_ref(), redact));
        }
        Event::StepBlocked { started_at, redacted, cost, gate, .. } => {
            put("started_at", json!(started_at));
            put("cost", json!(cost));
            put("held_output", redact(redacted));
            put("gate", verdict_summary(Some(gate), redact));
        }
        Event::AttemptInterrupted { started_at, .. } => put("started_at", json!(started_at)),
        // What the human was shown: the call's arguments and the model's reason (redacted
        // when they were journaled, and again here), or the prompt finding.
        Event::ToolAuthorisationAsked { started_at, ask, .. } => {
            put("started_at", json!(started_at));
            put("arguments", redact(&ask.arguments));
            put("reason", redact(&json!(ask.reason)));
        }
        Event::PromptHeld { started_at, hold, .. } => {
            put("started_at", json!(started_at));
            put("flagged", redact(&json!(hold.flagged)));
        }
        Event::HumanDecided { decision, comment, released, .. } => {
            put("comment", comment.as_ref().map_or(Value::Null, |c| redact(&json!(c))));
            if let Decision::Modify { value } = decision {
                put("value", redact(value));
            }
            if let Decision::Deny { reason } = decision {
                put("reason", redact(&json!(reason)));
            }
            if let Some(r) = released {
                put("released", redact(r));
            }
        }
        Event::Cancelled { reason, .. } => put("reason", redact(&json!(reason))),
        Event::EventReceived { received, .. } => put("payload", redact(&received["payload"])),
        Event::ChildFinished { outcome, .. } => match outcome {
            tollgate_engine::run::ChildOutcome::Succeeded { output } => put("output", redact(output)),
            tollgate_engine::run::ChildOutcome::Failed { error } => {
                put("error", json!({"code": error.code, "message": redact(&json!(error.message))}))
            }
        },
        Event::TimerFired { .. } | Event::ItemsResolved { .. } | Event::ChildBudgetAsked { .. } => {}
    }
    v
}

/// A journaled gate verdict as an auditor reads it: the action, the rules that fired and
/// their categories, the ruleset, the threat score, and the checks with their evidence —
/// never match hashes or spans.
fn verdict_summary(gate: Option<&Value>, redact: &mut dyn FnMut(&Value) -> Value) -> Value {
    let Some(g) = gate else { return Value::Null };
    let findings = g["findings"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut rules: Vec<&str> = findings.iter().filter_map(|f| f["rule_id"].as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    let mut categories: Vec<&str> = findings.iter().filter_map(|f| f["category"].as_str()).collect();
    categories.sort_unstable();
    categories.dedup();
    let checks: Vec<Value> = g["checks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| json!({"name": c["name"], "passed": c["passed"], "evidence": redact(&c["evidence"])}))
        .collect();
    json!({
        "action": g["action"],
        "rules": rules,
        "categories": categories,
        "findings": findings.len(),
        "ruleset": g["ruleset"],
        "threat": g["threat"],
        "checks": checks,
    })
}

fn audit_event(spec: &ValidatedSpec, e: &Event) -> Value {
    let at = e.at();
    match e {
        Event::RunStarted { .. } => json!({"at": at, "kind": "run.started"}),
        Event::StepSucceeded { step, attempt, cost, .. } => {
            json!({"at": at, "kind": "step.succeeded", "step": step, "attempt": attempt, "cost": cost})
        }
        Event::StepFailed { step, attempt, error, .. } => {
            json!({"at": at, "kind": "step.failed", "step": step, "attempt": attempt, "code": error.code})
        }
        Event::StepBlocked { step, attempt, .. } => {
            json!({"at": at, "kind": "step.blocked", "step": step, "attempt": attempt})
        }
        Event::PromptHeld { step, attempt, hold, .. } => {
            json!({"at": at, "kind": "prompt.held", "step": step, "attempt": attempt, "signals": hold.signals, "score": hold.score})
        }
        // The tool and the call; its (redacted) arguments are on the request.
        Event::ToolAuthorisationAsked { step, attempt, ask, cost, .. } => {
            json!({"at": at, "kind": "tool.authorisation_asked", "step": step, "attempt": attempt, "tool": ask.tool, "call": ask.call_id, "turn": ask.turn, "cost": cost})
        }
        Event::AttemptInterrupted { step, attempt, worker, .. } => {
            json!({"at": at, "kind": "attempt.interrupted", "step": step, "attempt": attempt, "worker": worker})
        }
        Event::TimerFired { timer, .. } => match timer {
            Timer::Delay { step } => json!({"at": at, "kind": "delay.elapsed", "step": step}),
            Timer::QueueTimeout { step, attempt } => {
                json!({"at": at, "kind": "attempt.queue_timeout", "step": step, "attempt": attempt})
            }
            Timer::StepTimeout { step, attempt } => {
                json!({"at": at, "kind": "attempt.timed_out", "step": step, "attempt": attempt})
            }
            Timer::RunTimeout => json!({"at": at, "kind": "run.timed_out"}),
            Timer::EventWait { step } => json!({"at": at, "kind": "event.wait_timed_out", "step": step}),
            Timer::Escalate { .. } | Timer::EscalateBudget { .. } => {
                let (step, level) = match timer {
                    Timer::Escalate { step, level } => (Some(step), *level),
                    Timer::EscalateBudget { level } => (None, *level),
                    _ => unreachable!(),
                };
                let mut v = match tollgate_engine::run::escalation_level(spec, timer) {
                    Some(e) if e.to.is_some() => {
                        json!({"at": at, "kind": "escalation.paged", "level": level, "to": e.to})
                    }
                    Some(e) => {
                        json!({"at": at, "kind": "escalation.default", "level": level, "default": e.default.as_ref().map(|d| d.name())})
                    }
                    None => json!({"at": at, "kind": "escalation.default", "level": level}),
                };
                match step {
                    Some(step) => v["step"] = json!(step),
                    None => v["budget"] = json!(true),
                }
                v
            }
        },
        Event::HumanDecided { request, decision, by, comment, by_policy, .. } => {
            let kind = match decision {
                Decision::Approve => "request.approved",
                Decision::Reject => "request.rejected",
                Decision::Modify { .. } => "request.modified",
                Decision::Extend { .. } => "request.extended",
                Decision::Abort => "request.aborted",
                Decision::AllowOnce => "tool.allowed_once",
                Decision::AllowForRun => "tool.allowed_for_run",
                Decision::Deny { .. } => "tool.denied",
            };
            let mut v = json!({"at": at, "kind": kind, "request": request, "decision": decision_word(decision), "by": by, "by_policy": by_policy, "comment": comment});
            if let Decision::Extend { amount } = decision {
                v["amount"] = json!(amount);
            }
            if let Decision::Deny { reason } = decision {
                v["reason"] = json!(reason);
            }
            v
        }
        Event::Cancelled { by, reason, .. } => json!({"at": at, "kind": "run.cancelled", "by": by, "reason": reason}),
        Event::ItemsResolved { step, items, limit, .. } => {
            json!({"at": at, "kind": "step.fanned_out", "step": step, "items": items, "limit": limit})
        }
        // The event's id and name; its payload is output, shown by `runs show --outputs`.
        Event::EventReceived { step, received, .. } => {
            json!({"at": at, "kind": "event.received", "step": step, "event": received["id"], "name": received["name"]})
        }
        Event::ChildFinished { step, child, outcome, cost, .. } => match outcome {
            tollgate_engine::run::ChildOutcome::Succeeded { .. } => {
                json!({"at": at, "kind": "child.succeeded", "step": step, "child": child, "cost": cost})
            }
            tollgate_engine::run::ChildOutcome::Failed { error } => {
                json!({"at": at, "kind": "child.failed", "step": step, "child": child, "cost": cost, "code": error.code})
            }
        },
        Event::ChildBudgetAsked { step, child, request, amount, .. } => {
            json!({"at": at, "kind": "child.budget_asked", "step": step, "child": child, "request": request, "amount": amount})
        }
    }
}
