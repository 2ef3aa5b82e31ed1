//! The admin HTTP API (axum), one file per route group. Status mapping lives only here
//! ([`error`]): 4xx for what the caller can fix, 5xx hides details from the client and logs them.
//!
//! - `GET  /healthz` (200 healthy / 503 not, see `health.rs`)
//! - `GET  /api/runs?limit=&after=` (a page, newest first, with the `next` cursor),
//!   `GET /api/runs/{run}`, `POST /api/runs` `{spec: "<yaml>", params: {…}}`
//! - `POST /api/runs/{run}/cancel` `{reason}`
//! - `GET  /api/requests` (pending human requests)
//! - `POST /api/events` `{name, payload?, dedup?}` (publish on the internal event bus)
//! - `POST /api/requests/{request}/decision` `{decision: approve|reject|extend|modify|abort, amount?, value?, comment?, by}`
//!
//! Every `/api` route needs the admin token when one is configured ([`auth`]); request bodies
//! over `http_max_body_bytes` get 413.

mod auth;
mod error;
mod events;
pub mod health;
mod requests;
mod runs;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::routing::{get, post};
use axum::{Extension, Router};

pub use auth::{bearer_matches, check_exposure};
pub use runs::{DEFAULT_PAGE, MAX_PAGE};

use crate::bootstrap::{self, Role};
use crate::config::Config;
use crate::http::error::BodyLimit;
use crate::service::Tollgate;

/// How the API is served.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Bearer token every `/api` route needs; empty: none (loopback only, see [`check_exposure`]).
    pub admin_token: String,
    /// Largest request body read, in bytes.
    pub max_body_bytes: usize,
}

impl ApiOptions {
    pub fn from_config(config: &Config) -> Self {
        Self { admin_token: config.admin_token.clone(), max_body_bytes: config.http_max_body_bytes }
    }
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

/// The API with the default body limit and `admin_token`.
pub fn router(t: Tollgate, admin_token: String) -> Router {
    router_with(t, ApiOptions { admin_token, ..ApiOptions::default() })
}

pub fn router_with(t: Tollgate, options: ApiOptions) -> Router {
    let token = Arc::new(options.admin_token);
    let api = Router::new()
        .route("/api/runs", get(runs::list).post(runs::start))
        .route("/api/runs/{run}", get(runs::show))
        .route("/api/runs/{run}/cancel", post(runs::cancel))
        .route("/api/requests", get(requests::pending))
        .route("/api/events", post(events::publish))
        .route("/api/requests/{request}/decision", post(requests::decide))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(Extension(BodyLimit(options.max_body_bytes)))
        .layer(middleware::from_fn(move |req: Request, next: Next| auth::require_token(token.clone(), req, next)));
    Router::new().route("/healthz", get(health::healthz)).merge(api).with_state(t)
}

/// `tollgate serve`: recover unfinished runs, run workers, serve the admin API until Ctrl-C.
/// Refuses to start when the API would be reachable from the network without a token.
pub async fn serve(config: &Config) -> anyhow::Result<()> {
    check_exposure(config.http_addr, &config.admin_token).map_err(anyhow::Error::msg)?;
    let sys = bootstrap::start(config, Role::All).await?;
    let recovered = sys.tollgate.recover_all().await?;
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    eprintln!("tollgate serve: admin API on http://{} ({} unfinished runs recovered)", listener.local_addr()?, recovered);
    let token = sys.token();
    let app = router_with(sys.tollgate.clone(), ApiOptions::from_config(config));
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
