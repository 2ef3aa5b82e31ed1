//! `/api/triggers`: this process's triggers with their health; a workflow's fire history.
//! A caller sees the triggers and history of the workflows it may see (others: 404).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_engine::ids::{WorkflowId, is_valid_id};

use tollgate_engine::store::StoreError;

use crate::access::Caller;
use crate::http::error::ApiError;
use crate::http::openapi::{ApiErrorDoc, FiresDoc, TriggersDoc};
use crate::service::Tollgate;

#[utoipa::path(get, path = "/api/triggers", tag = "triggers",
    responses((status = 200, body = TriggersDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/triggers`: every trigger running here: type, connected, last success, last
/// error, counters (started, failed, duplicates, rejected), restarts.
pub async fn list(State(t): State<Tollgate>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut visible = Vec::new();
    for trigger in t.engine.triggers.list() {
        if caller.sees(t.engine.store.workflow_owner(&trigger.workflow).await?.as_str()) {
            visible.push(trigger);
        }
    }
    Ok(Json(json!({ "triggers": visible })))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/triggers/{workflow}/history", tag = "triggers",
    params(("workflow" = String, Path), ("limit" = Option<usize>, Query, description = "1–10,000 (default 100)")),
    responses(
        (status = 200, body = FiresDoc),
        (status = 400, description = "not a workflow id", body = ApiErrorDoc),
        (status = 404, description = "no such workflow, or not the caller's", body = ApiErrorDoc),
        (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/triggers/{workflow}/history?limit=`: the workflow's fires, newest first.
pub async fn history(
    State(t): State<Tollgate>,
    caller: Caller,
    Path(workflow): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    if !is_valid_id(&workflow) {
        return Err(ApiError::bad_request("bad_workflow", format!("{workflow:?} is not a workflow id")));
    }
    let wf = WorkflowId::new(workflow);
    // Someone else's workflow and an unknown one answer alike.
    let owner = match t.engine.store.workflow_owner(&wf).await {
        Ok(owner) => owner,
        Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(format!("no workflow {wf}"))),
        Err(e) => return Err(e.into()),
    };
    if !caller.sees(owner.as_str()) {
        return Err(ApiError::not_found(format!("no workflow {wf}")));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let fires = t.engine.store.fire_history(&wf, limit).await?;
    Ok(Json(json!({ "fires": fires })))
}
