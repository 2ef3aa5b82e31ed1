//! `GET /api/runs/{run}/timeline`: what the console's run view draws — the spec's DAG (steps and
//! their needs), and per step its status, every attempt, duration, cost, the output as the gate
//! mesh let it through, the error, the decision and who made it, and the gate trail: each rule
//! or check that fired, on which JSON path, located on the REDACTED text (a span and an excerpt
//! with the marked part), with the ruleset version. An output a human released after a block is
//! shown in its redacted form (from the journal's `StepBlocked` event), never the held original.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use tollgate_engine::gates::{GateVerdict, redacted_locations};
use tollgate_engine::ids::RunId;
use tollgate_engine::run::{self, Event, RunStatus, StepStatus};

use crate::access::Caller;
use crate::http::error::ApiError;
use crate::http::openapi::{ApiErrorDoc, TimelineDoc};
use crate::service::{ServiceError, Tollgate};

#[utoipa::path(get, path = "/api/runs/{run}/timeline", tag = "runs", params(("run" = String, Path)),
    responses((status = 200, body = TimelineDoc), (status = 404, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/runs/{run}/timeline`: the console's run view. 404 for a run the caller may not
/// see, as for one that does not exist.
pub async fn show(State(t): State<Tollgate>, caller: Caller, Path(run): Path<String>) -> Result<Json<Value>, ApiError> {
    let run = RunId(run);
    let engine = &t.engine;
    let meta = engine.store.run_meta(&run).await.map_err(|e| match e {
        tollgate_engine::store::StoreError::NotFound(_) => ServiceError::NotFound(run.to_string()),
        e => e.into(),
    })?;
    if !caller.sees(meta.owner.as_str()) {
        return Err(ServiceError::NotFound(run.to_string()).into());
    }
    let spec = engine.spec(&meta.workflow, &meta.spec_digest).await.map_err(|e| ServiceError::Engine(e.to_string()))?;
    let journal = engine.store.read_journal(&meta.workflow, &run).await?;
    let state = run::replay(&spec, run.clone(), &journal);
    // The last redacted form of each step's blocked output, for steps released since.
    let mut held: HashMap<&str, &Value> = HashMap::new();
    for e in &journal {
        if let Event::StepBlocked { step, redacted, .. } = e {
            held.insert(step.as_str(), redacted);
        }
    }
    let steps: Vec<Value> = spec
        .spec()
        .steps
        .iter()
        .zip(&state.steps)
        .map(|(step, s)| {
            let released = held.get(step.id.as_str()).copied();
            // What the gate trail's spans refer to: the blocked form while held or once
            // released, the recorded output otherwise.
            let released_as_is = released.filter(|_| s.status == StepStatus::Succeeded && s.decision.as_ref().is_some_and(|d| d.decision == run::Decision::Approve));
            let (output, shown_redacted) = match (&s.blocked, released_as_is) {
                (Some(b), _) => (Some(b.clone()), true),
                (None, Some(r)) => (Some(r.clone()), true),
                (None, None) => (s.output.clone(), false),
            };
            let gate = s.gate.as_ref().map(|g| gate_trail(g, output.as_ref().or(released)));
            json!({
                "id": step.id,
                "type": step.ty().name(),
                "needs": step.needs,
                "join": step.join,
                "status": s.status.label(),
                "skip_reason": match &s.status { StepStatus::Skipped { reason, .. } => Some(reason.clone()), _ => None },
                "waiting_request": match &s.status { StepStatus::WaitingHuman { request } => Some(request.clone()), _ => None },
                "attempts": s.attempts,
                "started_at": s.started_at,
                "finished_at": s.finished_at,
                "duration_ms": s.started_at.zip(s.finished_at).map(|(a, b)| b.saturating_sub(a)),
                "cost": s.cost,
                "output": output,
                "output_redacted": shown_redacted,
                "error": s.error,
                "decision": s.decision,
                "gate": gate,
                // A `for_each` step's items (`STEP.K`): status, attempts, cost, error, an open request.
                "items": s.items.iter().enumerate().map(|(k, it)| json!({
                    "id": format!("{}.{k}", step.id),
                    "status": it.status.label(),
                    "attempts": it.attempts.len(),
                    "cost": it.cost,
                    "error": it.error,
                    "waiting_request": match &it.status { StepStatus::WaitingHuman { request } => Some(request.clone()), _ => None },
                    "decision": it.decision,
                })).collect::<Vec<_>>(),
                "child": s.child,
            })
        })
        .collect();
    let reason = match &state.status {
        RunStatus::Failed { reason } => Some(json!(reason)),
        RunStatus::Cancelled { by, reason } => {
            Some(json!({"code": "cancelled", "message": format!("{reason} (by {by})")}))
        }
        _ => None,
    };
    let b = &state.budget;
    Ok(Json(json!({
        "run": meta.run,
        "workflow": meta.workflow,
        "version": meta.version,
        "status": if state.is_waiting() { "waiting" } else { state.status.label() },
        "reason": reason,
        "created_at": meta.created_at,
        "parent": meta.parent,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "budget": {
            "cap": b.cap,
            "extended": b.extended,
            "limit": b.limit(),
            "spent": b.spent,
            "reserved": b.reserved,
            "currency": spec.spec().budget.as_ref().map(|b| b.currency.clone()),
            "request": state.budget_request,
        },
        "steps": steps,
    })))
}

/// The verdict with each finding located on the redacted document it refers to.
fn gate_trail(gate: &Value, redacted: Option<&Value>) -> Value {
    let Ok(verdict) = serde_json::from_value::<GateVerdict>(gate.clone()) else { return gate.clone() };
    let locations =
        redacted.map(|r| redacted_locations(&verdict, r)).unwrap_or_else(|| vec![None; verdict.findings.len()]);
    let findings: Vec<Value> = verdict
        .findings
        .iter()
        .zip(locations)
        .map(|(f, at)| {
            json!({
                "rule_id": f.rule_id,
                "category": f.category,
                "detector": f.detector,
                "severity": f.severity,
                "action": f.action,
                "path": f.path.as_deref().unwrap_or(""),
                "in_key": f.in_key,
                "confidence": f.confidence,
                "message": f.message,
                "redacted": at,
            })
        })
        .collect();
    json!({ "action": verdict.action, "ruleset": verdict.ruleset, "threat": verdict.threat, "findings": findings })
}
