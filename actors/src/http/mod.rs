//! The admin HTTP API (axum). Status mapping lives only here: 4xx for what the caller can
//! fix, 5xx hides details from the client and logs them.
//!
//! - `GET  /healthz`
//! - `GET  /api/runs`, `GET /api/runs/{run}`, `POST /api/runs` `{spec: "<yaml>", params: {…}}`
//! - `POST /api/runs/{run}/cancel` `{reason}`
//! - `GET  /api/requests` (pending human requests)
//! - `POST /api/requests/{request}/decision` `{decision: approve|reject|extend|modify|abort, amount?, value?, comment?, by}`

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_engine::ids::{RequestId, RunId};
use tollgate_engine::money::Money;
use tollgate_engine::run::Decision;
use tollgate_engine::spec::parse_yaml;
use tollgate_engine::store::StoreError;

use crate::bootstrap::{self, Role};
use crate::config::Config;
use crate::service::{ServiceError, Tollgate};

struct ApiError(ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            ServiceError::Spec(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"),
            ServiceError::NotFound(_) | ServiceError::Store(StoreError::NotFound(_)) => (StatusCode::NOT_FOUND, "not_found"),
            ServiceError::AlreadyDecided(_) => (StatusCode::CONFLICT, "already_decided"),
            ServiceError::DecisionNotAllowed { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "decision_not_allowed"),
            ServiceError::Store(StoreError::Forbidden(_)) => (StatusCode::FORBIDDEN, "forbidden"),
            _ => {
                tracing::error!("admin API internal error: {}", self.0);
                return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "internal", "message": "internal error"}))).into_response();
            }
        };
        (status, Json(json!({"error": code, "message": self.0.to_string()}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

pub fn router(t: Tollgate, admin_token: String) -> Router {
    let token = Arc::new(admin_token);
    let api = Router::new()
        .route("/api/runs", get(list_runs).post(start_run))
        .route("/api/runs/{run}", get(show_run))
        .route("/api/runs/{run}/cancel", post(cancel_run))
        .route("/api/requests", get(pending))
        .route("/api/requests/{request}/decision", post(decide))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                if !token.is_empty() {
                    let ok = req
                        .headers()
                        .get("authorization")
                        .and_then(|h| h.to_str().ok())
                        .is_some_and(|h| h.strip_prefix("Bearer ") == Some(token.as_str()));
                    if !ok {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "unauthorized"}))).into_response();
                    }
                }
                next.run(req).await
            }
        }));
    Router::new().route("/healthz", get(|| async { "ok" })).merge(api).with_state(t)
}

async fn list_runs(State(t): State<Tollgate>) -> ApiResult {
    let mut out = Vec::new();
    for run in t.engine.store.list_runs().await.map_err(ServiceError::from)?.into_iter().rev() {
        if let Ok(v) = t.view(&run).await {
            out.push(crate::cli::summary_json(&v));
        }
    }
    Ok(Json(Value::Array(out)))
}

async fn show_run(State(t): State<Tollgate>, Path(run): Path<String>) -> ApiResult {
    Ok(Json(crate::cli::summary_json(&t.view(&RunId(run)).await?)))
}

#[derive(Deserialize)]
struct StartRun {
    spec: String,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
}

async fn start_run(State(t): State<Tollgate>, Json(body): Json<StartRun>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = parse_yaml(&body.spec).map_err(ServiceError::from)?;
    let run = t.start_run(&spec, &body.params).await?;
    Ok((StatusCode::CREATED, Json(json!({"run": run}))))
}

#[derive(Deserialize)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

async fn cancel_run(State(t): State<Tollgate>, Path(run): Path<String>, body: Option<Json<CancelBody>>) -> ApiResult {
    let b = body.map(|b| b.0).unwrap_or(CancelBody { reason: None, by: None });
    t.cancel(&RunId(run.clone()), b.by.as_deref().unwrap_or("admin-api"), b.reason.as_deref().unwrap_or("cancelled via the admin API")).await?;
    Ok(Json(json!({"run": run, "cancelling": true})))
}

async fn pending(State(t): State<Tollgate>) -> ApiResult {
    Ok(Json(serde_json::to_value(t.pending().await?).unwrap_or_default()))
}

#[derive(Deserialize)]
struct DecisionBody {
    decision: String,
    /// An exact decimal: a JSON string (`"0.50"`) or number.
    #[serde(default)]
    amount: Option<Money>,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    comment: Option<String>,
    by: String,
}

async fn decide(State(t): State<Tollgate>, Path(request): Path<String>, Json(b): Json<DecisionBody>) -> Result<Response, ApiError> {
    let decision = match (b.decision.as_str(), b.amount, b.value) {
        ("approve", _, _) => Decision::Approve,
        ("reject", _, _) => Decision::Reject,
        ("abort", _, _) => Decision::Abort,
        ("extend", Some(a), _) if !a.is_zero() => Decision::Extend { amount: a },
        ("modify", _, Some(v)) => Decision::Modify { value: v },
        (d, _, _) => {
            let msg = format!("decision `{d}` is unknown or lacks its argument (extend needs amount > 0, modify needs value)");
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "bad_decision", "message": msg}))).into_response());
        }
    };
    let record = t.decide(&RequestId(request), decision, &b.by, b.comment).await?;
    Ok(Json(json!({"request": record.request.id, "run": record.run, "recorded": true})).into_response())
}

/// `tollgate serve`: recover unfinished runs, run workers, serve the admin API until Ctrl-C.
pub async fn serve(config: &Config) -> anyhow::Result<()> {
    let sys = bootstrap::start(config, Role::All).await?;
    let recovered = sys.tollgate.recover_all().await?;
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    eprintln!("tollgate serve: admin API on http://{} ({} unfinished runs recovered)", listener.local_addr()?, recovered);
    let token = sys.token();
    let app = router(sys.tollgate.clone(), config.admin_token.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        tokio::select! {
            _ = crate::cli::shutdown_signal() => {}
            _ = token.cancelled() => {}
        }
    });
    server.await?;
    sys.shutdown().await;
    Ok(())
}
