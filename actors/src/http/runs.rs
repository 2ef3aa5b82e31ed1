//! `/api/runs`: list (a page at a time, from summary records), show, start, cancel.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_engine::ids::{RunId, is_valid_id};
use tollgate_engine::run::RunStatus;
use tollgate_engine::spec::parse_yaml;
use tollgate_engine::store::{RunListing, RunSummary};

use crate::access::Caller;
use crate::http::error::{ApiError, Body};
use crate::http::openapi::{ApiErrorDoc, AuditDoc, CancellingDoc, RunCreatedDoc, RunDoc, RunPageDoc};
use crate::service::{ServiceError, Tollgate};

/// Runs per page when `limit` is not given, and the most one page may hold.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// Runs a filtered listing reads at most per call; past that it answers with what it found and
/// a `next` cursor to go on from.
pub const MAX_SCAN: usize = 5_000;

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// Only runs in this status (`pending`, `running`, `succeeded`, `failed`, `cancelled`).
    status: Option<String>,
    /// Only runs created at or after / before this time (ms since the epoch).
    since: Option<String>,
    until: Option<String>,
}

/// Which runs a filtered listing keeps.
struct Filter {
    workflow: Option<String>,
    status: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
}

impl Filter {
    fn from_query(q: &ListQuery) -> Result<Self, ApiError> {
        const STATUSES: [&str; 6] = ["pending", "running", "waiting", "succeeded", "failed", "cancelled"];
        let status = q.status.clone().filter(|s| !s.is_empty());
        if let Some(s) = status.as_deref().filter(|s| !STATUSES.contains(s)) {
            return Err(ApiError::bad_request(
                "bad_status",
                format!("status must be one of {}, not {s:?}", STATUSES.join(", ")),
            ));
        }
        let time = |name: &str, v: &Option<String>| -> Result<Option<u64>, ApiError> {
            match v.as_deref().filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    ApiError::bad_request(
                        "bad_time",
                        format!("{name} must be a time in milliseconds since the epoch, not {v:?}"),
                    )
                }),
            }
        };
        Ok(Self {
            workflow: q.workflow.clone().filter(|w| !w.is_empty()),
            status,
            since: time("since", &q.since)?,
            until: time("until", &q.until)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.workflow.is_none() && self.status.is_none() && self.since.is_none() && self.until.is_none()
    }

    fn keeps(&self, caller: &Caller, l: &RunListing) -> bool {
        let status = RunSummary::label(l.summary.as_ref());
        caller.sees(l.meta.owner.as_str())
            && self.workflow.as_deref().is_none_or(|w| l.meta.workflow.0 == w)
            && self.status.as_deref().is_none_or(|s| s == status)
            && self.since.is_none_or(|t| l.meta.created_at >= t)
            && self.until.is_none_or(|t| l.meta.created_at < t)
    }
}

#[utoipa::path(get, path = "/api/runs", tag = "runs",
    params(("limit" = Option<usize>, Query, description = "runs per page, 1–500 (default 50)"), ("after" = Option<String>, Query, description = "the `next` of an earlier page"),
        ("workflow" = Option<String>, Query, description = "only runs of this workflow"), ("status" = Option<String>, Query, description = "only runs in this status: pending, running, waiting, succeeded, failed, cancelled"),
        ("since" = Option<u64>, Query, description = "only runs created at or after this time (ms since the epoch)"), ("until" = Option<u64>, Query, description = "only runs created before this time (ms since the epoch)")),
    responses((status = 200, body = RunPageDoc), (status = 400, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/runs?limit=&after=&workflow=&status=&since=&until=`: newest first; `next` is the
/// `after` of the following page (`null` on the last one). With filters, pages of runs are read
/// until `limit` runs match, the runs are older than `since`, or [`MAX_SCAN`] were read. Only
/// runs the caller sees are listed.
pub async fn list(
    State(t): State<Tollgate>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
            ApiError::bad_request("bad_limit", format!("limit must be a whole number from 1 to {MAX_PAGE}, not {l:?}"))
        })?,
    };
    let filter = Filter::from_query(&q)?;
    let after = match q.after {
        Some(a) if !is_valid_id(&a) => {
            return Err(ApiError::bad_request(
                "bad_cursor",
                format!("after must be a run id (a `next` from an earlier page), not {a:?}"),
            ));
        }
        a => a.map(RunId),
    };
    if filter.is_empty() {
        let page = t.run_page_as(&caller, after.as_ref(), limit).await?;
        let runs: Vec<Value> = page.runs.iter().map(listing_json).collect();
        return Ok(Json(json!({ "runs": runs, "next": page.next })));
    }
    let (mut runs, mut cursor, mut scanned) = (Vec::new(), after, 0);
    loop {
        let page = t.engine.store.run_page(cursor.as_ref(), MAX_PAGE).await?;
        for l in &page.runs {
            scanned += 1;
            if filter.since.is_some_and(|since| l.meta.created_at < since) {
                return Ok(Json(json!({ "runs": runs, "next": null })));
            }
            if filter.keeps(&caller, l) {
                runs.push(listing_json(l));
                if runs.len() == limit {
                    return Ok(Json(json!({ "runs": runs, "next": l.meta.run })));
                }
            }
        }
        cursor = page.next;
        if cursor.is_none() || scanned >= MAX_SCAN {
            return Ok(Json(json!({ "runs": runs, "next": cursor })));
        }
    }
}

pub(crate) fn listing_json(l: &RunListing) -> Value {
    let status = RunSummary::label(l.summary.as_ref());
    let reason = match l.summary.as_ref().map(|s| &s.status) {
        Some(RunStatus::Failed { reason }) => Some(json!(reason)),
        Some(RunStatus::Cancelled { by, reason }) => {
            Some(json!({"code": "cancelled", "message": format!("{reason} (by {by})")}))
        }
        _ => None,
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
pub async fn audit(
    State(t): State<Tollgate>,
    caller: Caller,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
pub async fn start(
    State(t): State<Tollgate>,
    caller: Caller,
    Body(body): Body<StartRun>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
pub async fn cancel(
    State(t): State<Tollgate>,
    caller: Caller,
    Path(run): Path<String>,
    body: Option<Body<CancelBody>>,
) -> Result<Json<Value>, ApiError> {
    let b = body.map(|b| b.0).unwrap_or_default();
    t.cancel_as(&caller, &RunId(run.clone()), b.reason.as_deref().unwrap_or("cancelled via the admin API")).await?;
    Ok(Json(json!({"run": run, "cancelling": true})))
}
