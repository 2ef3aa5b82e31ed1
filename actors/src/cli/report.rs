//! Run summaries for people (a table) and machines (JSON): per step, status, attempts (an `llm`
//! step's model usage and tool calls too),
//! duration, cost, error and human decision. Outputs only when asked (`runs show --outputs`):
//! the run holds them gated, so what is printed is their redacted form (a blocked output's
//! redacted copy; the held original never leaves its quarantine record).

use serde_json::{Value, json};
use tollgate_engine::run::{AttemptStatus, RunStatus, StepState};

use tollgate_engine::store::{RunPage, RunSummary};

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
                "usage": model_usage(v.step_types[i], s),
                // A `for_each` step's items (`STEP.K`): each one's status, attempts, cost, error.
                "items": (!s.items.is_empty()).then(|| s.items.iter().enumerate().map(|(k, it)| json!({
                    "id": format!("{}.{k}", v.step_ids[i]),
                    "status": it.status.label(),
                    "attempts": it.attempts.len(),
                    "attempt_log": it.attempts,
                    "cost": it.cost,
                    "error": it.error,
                    "decision": it.decision,
                    "gate": it.gate,
                })).collect::<Vec<_>>()),
                "tool_calls": (v.step_types[i] == "llm").then(|| s.output.as_ref().and_then(|o| o.get("tool_calls"))).flatten(),
                "child": s.child,
            })
        })
        .collect();
    let reason = match &v.state.status {
        RunStatus::Failed { reason } => Some(json!(reason)),
        RunStatus::Cancelled { by, reason } => {
            Some(json!({"code": "cancelled", "message": format!("{reason} (by {by})")}))
        }
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
        "parent": v.meta.parent,
        "steps": steps,
        "escalations": v.escalations,
    })
}

/// `escalation of the guidance request: paged leads after 1h; default `fail` after 2h (applied)`
fn escalation_line(e: &Value) -> String {
    let mode = match e["mode"].as_str() {
        Some("guidance") => "guidance request".to_string(),
        Some(m) => m.replace('_', " "),
        None => "request".to_string(),
    };
    let levels: Vec<String> = e["levels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let after = l["after"].as_str().unwrap_or("?");
            let (fired, pending) = (l["fired"] == true, e["open"] == true);
            match (l["to"].as_str(), l["default"].as_str()) {
                (Some(to), _) if fired => format!("paged {to} after {after}"),
                (Some(to), _) if pending => format!("pages {to} after {after}"),
                (Some(to), _) => format!("would have paged {to} after {after}"),
                (_, Some(d)) if fired => format!("default `{d}` after {after} (applied)"),
                (_, Some(d)) if pending => format!("default `{d}` after {after}"),
                (_, Some(d)) => format!("default `{d}` after {after} (not needed)"),
                _ => String::new(),
            }
        })
        .collect();
    format!("escalation of the {mode}: {}", levels.join("; "))
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
    if let Some(p) = &v.meta.parent {
        println!("  sub-workflow of run {} (step `{}` of workflow {}, depth {})", p.run, p.step, p.workflow, p.depth);
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
        if let Some(child) = &s.child {
            println!("      sub-workflow run: {child}");
        }
        // Every attempt, when there was more than one or one did not simply run.
        if s.attempts.len() > 1
            || s.attempts
                .iter()
                .any(|a| !matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Failed | AttemptStatus::Queued))
        {
            println!("      attempts: {}", attempt_log(s));
        }
        if let tollgate_engine::run::StepStatus::Skipped { reason, .. } = &s.status {
            println!("      skipped: {reason}");
        }
        // A `for_each` step's items, one line each (`STEP.K`).
        for (k, it) in s.items.iter().enumerate() {
            let dur = duration_ms(it).map_or("-".to_string(), |ms| format!("{ms}ms"));
            let id = format!("{}.{k}", v.step_ids[i]);
            println!(
                "    {id:<22} {:<10} {:<14} {:>8} {:>10} {:>8}",
                "item",
                it.status.label(),
                it.attempts.len(),
                dur,
                it.cost
            );
            if let Some(e) = &it.error {
                println!("        error: {e}");
            }
        }
        if let Some(u) = model_usage(v.step_types[i], s) {
            println!(
                "      model: {}/{}, {} call(s), {} tokens in, {} out, cost {}",
                u["provider"].as_str().unwrap_or("?"),
                u["model"].as_str().unwrap_or("?"),
                u["calls"],
                u["input_tokens"],
                u["output_tokens"],
                u["cost"].as_str().unwrap_or("?"),
            );
        }
        // An `llm` step's tool calls and how each ended.
        if let Some(calls) = s
            .output
            .as_ref()
            .filter(|_| v.step_types[i] == "llm")
            .and_then(|o| o["tool_calls"].as_array())
            .filter(|c| !c.is_empty())
        {
            let line: Vec<String> = calls
                .iter()
                .map(|c| format!("{} {}", c["tool"].as_str().unwrap_or("?"), c["status"].as_str().unwrap_or("?")))
                .collect();
            println!("      tool calls: {}", line.join(", "));
        }
        // A clean `allow` is the common case; show verdicts that found something.
        if let Some(g) = s
            .gate
            .as_ref()
            .filter(|g| g["action"] != "allow" || g["findings"].as_array().is_some_and(|f| !f.is_empty()))
        {
            println!("      gate: {}", gate_line(g));
        }
        if let Some(checks) = s.gate.as_ref().and_then(|g| g["checks"].as_array()) {
            let line: Vec<String> = checks
                .iter()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or("?");
                    if c["passed"] == true {
                        format!("{name} ✓")
                    } else {
                        let evidence: Vec<&str> =
                            c["evidence"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        format!("{name} ✗ ({})", evidence.join("; "))
                    }
                })
                .collect();
            println!("      checks: {}", line.join(", "));
        }
        for e in v.escalations.iter().filter(|e| {
            e["step"].as_str().is_some_and(|id| {
                id == v.step_ids[i] || id.strip_prefix(v.step_ids[i].as_str()).is_some_and(|k| k.starts_with('.'))
            })
        }) {
            let item =
                e["step"].as_str().filter(|id| *id != v.step_ids[i]).map(|id| format!("{id}: ")).unwrap_or_default();
            println!("      {item}{}", escalation_line(e));
        }
        if let Some(d) = &s.decision {
            let c = d.comment.as_deref().map(|c| format!(" — {c}")).unwrap_or_default();
            let policy = if d.by_policy { " (applied by policy)" } else { "" };
            println!("      decision: {:?} by {}{policy}{c}", d.decision, d.by);
        }
    }
    if let Some(limit) = v.state.budget.limit() {
        println!("  budget: {} spent of {limit}", v.state.budget.spent);
    }
    for e in v.escalations.iter().filter(|e| e["step"].is_null()) {
        println!("    {}", escalation_line(e));
    }
}

/// The model usage an `llm` step (or a `research` step's summary) reported with its output
/// (provider, model, calls, tokens, cost).
fn model_usage<'s>(ty: &str, s: &'s StepState) -> Option<&'s Value> {
    (ty == "llm" || ty == "research").then(|| s.output.as_ref()?.get("usage")).flatten()
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
                    let path =
                        f["path"].as_str().filter(|p| !p.is_empty()).map(|p| format!(" at {p}")).unwrap_or_default();
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

pub fn print_list(page: &RunPage) {
    println!("{:<28} {:<24} {:<10} {:<24}", "RUN", "WORKFLOW", "STATUS", "CREATED");
    for l in &page.runs {
        let created = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(l.meta.created_at),
        );
        println!(
            "{:<28} {:<24} {:<10} {:<24}",
            l.meta.run,
            l.meta.workflow,
            RunSummary::label(l.summary.as_ref()),
            created
        );
    }
    if let Some(next) = &page.next {
        println!("more: tollgate runs list --after {next}");
    }
}

/// A step's output as the run holds it (gated), or a blocked output's redacted copy.
fn shown_output(s: &StepState) -> Option<&Value> {
    s.output.as_ref().or(s.blocked.as_ref())
}

/// `--outputs --json`: each step gets an `output`.
pub fn add_outputs(v: &RunView, summary: &mut Value) {
    if let Some(steps) = summary["steps"].as_array_mut() {
        for (s, out) in v.state.steps.iter().zip(steps) {
            out["output"] = shown_output(s).cloned().unwrap_or(Value::Null);
        }
    }
}

/// `--outputs`: each step's output, indented under its id.
pub fn print_outputs(v: &RunView) {
    println!(
        "
  outputs (redacted by the gate mesh where it found something):"
    );
    for (i, s) in v.state.steps.iter().enumerate() {
        let Some(out) = shown_output(s) else { continue };
        let held = if s.output.is_none() { " (blocked; redacted copy)" } else { "" };
        let text = serde_json::to_string_pretty(out).unwrap_or_default();
        println!("  {}{held}:", v.step_ids[i]);
        for line in text.lines() {
            println!("      {line}");
        }
    }
}
