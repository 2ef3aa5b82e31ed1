//! `/api/runs`: list (a page at a time, from summary records), show, start, cancel.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_engine::ids::{is_valid_id, RunId};
use tollgate_engine::run::RunStatus;
use tollgate_engine::spec::parse_yaml;
use tollgate_engine::store::RunListing;

use crate::access::Caller;
use crate::http::openapi::{ApiErrorDoc, AuditDoc, CancellingDoc, RunCreatedDoc, RunDoc, RunPageDoc};
use crate::http::error::{ApiError, Body};
use crate::service::{ServiceError, Tollgate};

/// Runs per page when `limit` is not given, and the most one page may hold.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
}

#[utoipa::path(get, path = "/api/runs", tag = "runs",
    params(("limit" = Option<usize>, Query, description = "runs per page, 1–500 (default 50)"), ("after" = Option<String>, Query, description = "the `next` of an earlier page")),
    responses((status = 200, body = RunPageDoc), (status = 400, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/runs?limit=&after=`: newest first; `next` is the `after` of the following page
/// (`null` on the last one).
pub async fn list(State(t): State<Tollgate>, caller: Caller, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request("bad_limit", format!("limit must be a whole number from 1 to {MAX_PAGE}, not {l:?}")))?,
    };
    let after = match q.after {
        Some(a) if !is_valid_id(&a) => return Err(ApiError::bad_request("bad_cursor", format!("after must be a run id (a `next` from an earlier page), not {a:?}"))),
        a => a.map(RunId),
    };
    let page = t.run_page_as(&caller, after.as_ref(), limit).await?;
    let runs: Vec<Value> = page.runs.iter().map(listing_json).collect();
    Ok(Json(json!({ "runs": runs, "next": page.next })))
}

fn listing_json(l: &RunListing) -> Value {
    let (status, reason) = match l.summary.as_ref().map(|s| &s.status) {
        None => ("pending", None),
        Some(RunStatus::Failed { reason }) => ("failed", Some(json!(reason))),
        Some(RunStatus::Cancelled { by, reason }) => ("cancelled", Some(json!({"code": "cancelled", "message": format!("{reason} (by {by})")}))),
        Some(s) => (s.label(), None),
    };
    json!({
        "run": l.meta.run,
        "workflow": l.meta.workflow,
        "version": l.meta.version,
        "status": status,
        "reason": reason,
        "created_at": l.meta.created_at,
        "started_at": l.summary.as_ref().map(|s| s.started_at),
        "finished_at": l.summary.as_ref().and_then(|s| s.finished_at),
    })
}

#[utoipa::path(get, path = "/api/runs/{run}", tag = "runs", params(("run" = String, Path)),
    responses((status = 200, body = RunDoc), (status = 404, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/runs/{run}`: 404 unless the caller sees the run's workflow.
pub async fn show(State(t): State<Tollgate>, caller: Caller, Path(run): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(crate::cli::summary_json(&t.view_as(&caller, &RunId(run)).await?)))
}

#[utoipa::path(get, path = "/api/runs/{run}/audit", tag = "runs", params(("run" = String, Path)),
    responses((status = 200, body = AuditDoc), (status = 404, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/runs/{run}/audit`: the run's journal as named events (404 as for `show`).
pub async fn audit(State(t): State<Tollgate>, caller: Caller, Path(run): Path<String>) -> Result<Json<Value>, ApiError> {
    let events = t.audit_as(&caller, &RunId(run.clone())).await?;
    Ok(Json(json!({"run": run, "events": events})))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct StartRun {
    /// The workflow spec, YAML.
    spec: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    params: serde_json::Map<String, Value>,
}

/// `POST /api/runs`: the spec goes through the same size and nesting bounds as a file.
#[utoipa::path(post, path = "/api/runs", tag = "runs", request_body = StartRun,
    responses((status = 201, body = RunCreatedDoc), (status = 403, body = ApiErrorDoc), (status = 422, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// The caller must own the spec's `owner` (be it, or be in that group), or be an admin.
pub async fn start(State(t): State<Tollgate>, caller: Caller, Body(body): Body<StartRun>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = parse_yaml(&body.spec).map_err(ServiceError::from)?;
    let run = t.start_run_as(&caller, &spec, &body.params).await?;
    Ok((StatusCode::CREATED, Json(json!({"run": run}))))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/api/runs/{run}/cancel", tag = "runs", params(("run" = String, Path)), request_body(content = Option<CancelBody>),
    responses((status = 200, body = CancellingDoc), (status = 404, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// Recorded as cancelled by the caller.
pub async fn cancel(State(t): State<Tollgate>, caller: Caller, Path(run): Path<String>, body: Option<Body<CancelBody>>) -> Result<Json<Value>, ApiError> {
    let b = body.map(|b| b.0).unwrap_or_default();
    t.cancel_as(&caller, &RunId(run.clone()), b.reason.as_deref().unwrap_or("cancelled via the admin API")).await?;
    Ok(Json(json!({"run": run, "cancelling": true})))
}
