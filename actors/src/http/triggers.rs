//! `/api/triggers`: this process's triggers with their health; a workflow's fire history.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_engine::ids::{is_valid_id, WorkflowId};

use crate::http::error::ApiError;
use crate::service::Tollgate;

/// `GET /api/triggers`: every trigger running here: type, connected, last success, last
/// error, counters (started, failed, duplicates, rejected), restarts.
pub async fn list(State(t): State<Tollgate>) -> Json<Value> {
    Json(json!({ "triggers": t.engine.triggers.list() }))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

/// `GET /api/triggers/{workflow}/history?limit=`: the workflow's fires, newest first.
pub async fn history(State(t): State<Tollgate>, Path(workflow): Path<String>, Query(q): Query<HistoryQuery>) -> Result<Json<Value>, ApiError> {
    if !is_valid_id(&workflow) {
        return Err(ApiError::bad_request("bad_workflow", format!("{workflow:?} is not a workflow id")));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let fires = t.engine.store.fire_history(&WorkflowId::new(workflow), limit).await?;
    Ok(Json(json!({ "fires": fires })))
}
