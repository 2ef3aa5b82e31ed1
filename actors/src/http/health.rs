//! `GET /healthz`: `200` with the process's health report as JSON while it is healthy, `503`
//! with the same body while it is not (e.g. its queue worker is gone while Redis is away):
//!
//! ```json
//! {"healthy": true, "checks": {"step_workers": {"running": true, "worker": "tollgate-…",
//!   "restarts": 1, "last_error": "worker stopped: Failed to poll backend: …"}}}
//! ```
//!
//! `tollgate serve` answers it on the admin API's address (no token needed); `tollgate worker`
//! has no admin API, so it answers on `health_addr` when one is configured ([`serve`]).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::service::Tollgate;

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, body = crate::http::openapi::HealthDoc), (status = 503, body = crate::http::openapi::HealthDoc)))]
/// The admin API's handler.
pub async fn healthz(State(t): State<Tollgate>) -> Response {
    respond(&t.engine.health)
}

fn respond(health: &Health) -> Response {
    let report = health.report();
    let status = if report.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report)).into_response()
}

/// Serves `GET /healthz` alone on `addr` until `shutdown` fires; returns the bound address
/// (port 0 picks a free one) and the server's task.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route("/healthz", get(move || async move { respond(&health) }));
    let server = tokio::spawn(async move {
        let graceful = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = graceful.await {
            tracing::warn!(error = %e, "health listener stopped");
        }
    });
    Ok((bound, server))
}
