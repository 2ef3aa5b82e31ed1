//! Run summaries for people (a table) and machines (JSON): per step, status, attempts,
//! duration, cost, error and human decision. Outputs are never printed here.

use serde_json::{json, Value};
use tollgate_engine::run::{AttemptStatus, RunStatus, StepState};

use crate::service::RunView;

fn duration_ms(s: &StepState) -> Option<u64> {
    Some(s.finished_at?.saturating_sub(s.started_at?))
}

pub fn summary_json(v: &RunView) -> Value {
    let steps: Vec<Value> = v
        .state
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": v.step_ids[i],
                "type": v.step_types[i],
                "status": s.status.label(),
                "skip_reason": match &s.status { tollgate_engine::run::StepStatus::Skipped { reason, .. } => Some(reason.clone()), _ => None },
                "attempts": s.attempts.len(),
                "attempt_log": s.attempts,
                "duration_ms": duration_ms(s),
                "cost": s.cost,
                "error": s.error,
                "decision": s.decision,
                "gate": s.gate,
            })
        })
        .collect();
    let reason = match &v.state.status {
        RunStatus::Failed { reason } => Some(json!(reason)),
        RunStatus::Cancelled { by, reason } => Some(json!({"code": "cancelled", "message": format!("{reason} (by {by})")})),
        _ => None,
    };
    json!({
        "run": v.meta.run,
        "workflow": v.meta.workflow,
        "version": v.meta.version,
        "status": if v.state.is_waiting() { "waiting" } else { v.state.status.label() },
        "reason": reason,
        "started_at": v.state.started_at,
        "finished_at": v.state.finished_at,
        "budget": v.state.budget,
        "trigger": v.meta.trigger,
        "steps": steps,
    })
}

pub fn print_summary(v: &RunView) {
    let status = if v.state.is_waiting() { "waiting" } else { v.state.status.label() };
    println!("\nrun {}  workflow {} v{}  {status}", v.meta.run, v.meta.workflow, v.meta.version);
    match &v.state.status {
        RunStatus::Failed { reason } => println!("  reason: {} — {}", reason.code, reason.message),
        RunStatus::Cancelled { by, reason } => println!("  cancelled by {by}: {reason}"),
        _ => {}
    }
    if let Some(t) = &v.meta.trigger {
        println!("  started by {} trigger `{}` (fire {})", t.kind, t.trigger, t.fire);
    }
    println!("  {:<24} {:<10} {:<14} {:>8} {:>10} {:>8}", "STEP", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "COST");
    for (i, s) in v.state.steps.iter().enumerate() {
        let dur = duration_ms(s).map_or("-".to_string(), |ms| format!("{ms}ms"));
        println!(
            "  {:<24} {:<10} {:<14} {:>8} {:>10} {:>8}",
            v.step_ids[i],
            v.step_types[i],
            s.status.label(),
            s.attempts.len(),
            dur,
            s.cost
        );
        if let Some(e) = &s.error {
            println!("      error: {e}");
        }
        // Every attempt, when there was more than one or one did not simply run.
        if s.attempts.len() > 1 || s.attempts.iter().any(|a| !matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Failed | AttemptStatus::Queued)) {
            println!("      attempts: {}", attempt_log(s));
        }
        if let tollgate_engine::run::StepStatus::Skipped { reason, .. } = &s.status {
            println!("      skipped: {reason}");
        }
        // A clean `allow` is the common case; show verdicts that found something.
        if let Some(g) = s.gate.as_ref().filter(|g| g["action"] != "allow" || g["findings"].as_array().is_some_and(|f| !f.is_empty())) {
            println!("      gate: {}", gate_line(g));
        }
        if let Some(d) = &s.decision {
            let c = d.comment.as_deref().map(|c| format!(" — {c}")).unwrap_or_default();
            println!("      decision: {:?} by {}{c}", d.decision, d.by);
        }
    }
    if let Some(limit) = v.state.budget.limit() {
        println!("  budget: {} spent of {limit}", v.state.budget.spent);
    }
}

/// `#1 interrupted (01J…), #2 failed: timeout, #3 succeeded`
fn attempt_log(s: &StepState) -> String {
    let items: Vec<String> = s
        .attempts
        .iter()
        .map(|a| {
            let mut item = format!("#{} {}", a.attempt, a.status.label());
            if let Some(e) = a.error.as_ref().filter(|_| a.status != AttemptStatus::Interrupted) {
                item.push_str(&format!(": {}", e.code));
            }
            if let Some(late) = &a.late_result {
                item.push_str(&format!(" (late result: {late})"));
            }
            if let Some(w) = &a.worker {
                item.push_str(&format!(" (process {w})"));
            }
            item
        })
        .collect();
    items.join(", ")
}

/// `redact — secrets.openai_api_key (secret) at /text 10..61, pii.card (card) at /text 70..89`
fn gate_line(gate: &Value) -> String {
    let action = gate["action"].as_str().unwrap_or("?");
    let findings: Vec<String> = gate["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    let path = f["path"].as_str().filter(|p| !p.is_empty()).map(|p| format!(" at {p}")).unwrap_or_default();
                    format!(
                        "{} ({}){path} {}..{} → {}",
                        f["rule_id"].as_str().unwrap_or("?"),
                        f["category"].as_str().unwrap_or("?"),
                        f["span"]["start"],
                        f["span"]["end"],
                        f["action"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if findings.is_empty() { action.to_string() } else { format!("{action} — {}", findings.join(", ")) }
}

pub fn print_list(views: &[RunView]) {
    println!("{:<28} {:<24} {:<10} {:>6}", "RUN", "WORKFLOW", "STATUS", "STEPS");
    for v in views {
        let status = if v.state.is_waiting() { "waiting" } else { v.state.status.label() };
        println!("{:<28} {:<24} {:<10} {:>6}", v.meta.run, v.meta.workflow, status, v.state.steps.len());
    }
}
