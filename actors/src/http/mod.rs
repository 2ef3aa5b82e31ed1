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
//! - `GET  /api/triggers` (running triggers and their health), `GET /api/triggers/{workflow}/history`
//! - `POST /hooks/{workflow}/{trigger}`: webhook and upload deliveries (no admin token: each
//!   trigger checks its own signature and size limit, see `hooks.rs`)
//!
//! Every `/api` route needs the admin token when one is configured ([`auth`]); request bodies
//! over `http_max_body_bytes` get 413.

mod auth;
mod error;
mod events;
pub mod health;
mod hooks;
mod requests;
mod runs;
mod triggers;

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
        .route("/api/triggers", get(triggers::list))
        .route("/api/triggers/{workflow}/history", get(triggers::history))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(Extension(BodyLimit(options.max_body_bytes)))
        .layer(middleware::from_fn(move |req: Request, next: Next| auth::require_token(token.clone(), req, next)));
    let hooks = Router::new().route("/hooks/{workflow}/{trigger}", post(hooks::deliver_to)).layer(DefaultBodyLimit::disable());
    Router::new().route("/healthz", get(health::healthz)).merge(api).merge(hooks).with_state(t)
}

/// `tollgate serve`: recover unfinished runs, run workers and the triggers of
/// `[triggers] workflows`, serve the admin API and the trigger endpoints until Ctrl-C.
/// Refuses to start when the API would be reachable from the network without a token.
pub async fn serve(config: &Config) -> anyhow::Result<()> {
    serve_workflows(config, &config.triggers.workflows).await
}

/// [`serve`], starting the triggers of the workflow spec files `workflows`.
pub async fn serve_workflows(config: &Config, workflows: &[std::path::PathBuf]) -> anyhow::Result<()> {
    check_exposure(config.http_addr, &config.admin_token).map_err(anyhow::Error::msg)?;
    let specs = crate::triggers::load_workflows(workflows)?;
    let sys = bootstrap::start(config, Role::All).await?;
    let recovered = sys.tollgate.recover_all().await?;
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    let n_triggers: usize = specs.iter().map(|s| s.spec().triggers.iter().filter(|t| t.enabled).count()).sum();
    let triggers = crate::triggers::start_triggers(&sys.tollgate, config.triggers.history_ttl, specs).await?;
    let addr = listener.local_addr()?;
    eprintln!("tollgate serve: admin API on http://{addr} ({recovered} unfinished runs recovered, {n_triggers} triggers)");
    let token = sys.token();
    let app = router_with(sys.tollgate.clone(), ApiOptions::from_config(config));
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        tokio::select! {
            _ = crate::cli::shutdown_signal() => {}
            _ = token.cancelled() => {}
        }
    });
    server.await?;
    // Triggers first (each finishes the fire it is recording), then the engine.
    triggers.shutdown().await;
    sys.shutdown().await;
    Ok(())
}
