//! The web console: its page and assets (plain HTML, CSS and ES modules under `actors/console/`,
//! embedded in the binary, so building it needs no Node toolchain), and its sessions —
//! `POST /console/session` signs in with a user's API token (`tollgate users add`), `GET` tells
//! the page who is signed in and its CSRF token, `DELETE` signs out. The page talks to the JSON
//! API under `/api` with the session cookie, as that user (see `session.rs` and `auth.rs`).
//! Without an admin token (the loopback-only development mode) an empty token signs in as the
//! local operator.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::http::auth::{authenticate_token, bearer_matches, session_caller};
use crate::http::error::{ApiError, Body};
use crate::http::session::{self, Session, SessionKey};
use crate::service::Tollgate;

/// The console's files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("../../console/console.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../../console/api.js")),
    ("live.js", "text/javascript; charset=utf-8", include_str!("../../console/live.js")),
    ("inbox.js", "text/javascript; charset=utf-8", include_str!("../../console/inbox.js")),
    ("notifications.js", "text/javascript; charset=utf-8", include_str!("../../console/notifications.js")),
    ("card.js", "text/javascript; charset=utf-8", include_str!("../../console/card.js")),
    ("runs.js", "text/javascript; charset=utf-8", include_str!("../../console/runs.js")),
    ("timeline.js", "text/javascript; charset=utf-8", include_str!("../../console/timeline.js")),
    ("templates.js", "text/javascript; charset=utf-8", include_str!("../../console/templates.js")),
    ("dag.js", "text/javascript; charset=utf-8", include_str!("../../console/dag.js")),
    ("ui.js", "text/javascript; charset=utf-8", include_str!("../../console/ui.js")),
];
const INDEX: &str = include_str!("../../console/index.html");

/// No inline script or style, nothing from elsewhere, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(Clone)]
struct ConsoleState {
    t: Tollgate,
    sessions: SessionKey,
    admin_token: Arc<String>,
}

pub fn router(t: Tollgate, sessions: SessionKey, admin_token: Arc<String>) -> Router<Tollgate> {
    let state = ConsoleState { t, sessions, admin_token };
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(index))
        .route("/console/assets/{file}", get(asset))
        .route("/console/session", get(whoami).post(sign_in).delete(sign_out))
        // Links in paging mails: `{console_url}/requests/{id}`, with or without `/console`.
        .route("/requests/{request}", get(card_link))
        .route("/console/requests/{request}", get(card_link))
        .with_state(state)
}

fn page_headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

async fn index() -> Response {
    (page_headers("text/html; charset=utf-8"), INDEX).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (page_headers(content_type), *body).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": format!("no console asset {file:?}")})),
        )
            .into_response(),
    }
}

/// A link to a card opens it in the console (whose views live in the URL's fragment).
async fn card_link(Path(request): Path<String>) -> Response {
    if !tollgate_engine::ids::is_valid_id(&request) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "not_found", "message": "no such request"})))
            .into_response();
    }
    Redirect::to(&format!("/console/#/requests/{request}")).into_response()
}

fn session_json(sessions: &SessionKey, s: &Session) -> serde_json::Value {
    json!({"user": s.user, "csrf": sessions.csrf(s), "expires_at": s.exp})
}

fn unauthorised(message: &str) -> ApiError {
    ApiError::Request(StatusCode::UNAUTHORIZED, "unauthorized", message.into())
}

/// `GET /console/session`: who is signed in, and the CSRF token the page sends back.
async fn whoami(State(c): State<ConsoleState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let s = c.sessions.from_headers(&headers).ok_or_else(|| unauthorised("not signed in"))?;
    if session_caller(&c.t, &c.admin_token, &s).await?.is_none() {
        return Err(unauthorised("the session's user no longer exists"));
    }
    Ok(Json(session_json(&c.sessions, &s)))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// A request from another site (its `Origin` is not this host) may not sign in or out: that
/// would let a page elsewhere sign a visitor into a session of its choosing.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let host = host.to_str().unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
    if origin_host != host {
        return Err(ApiError::Request(StatusCode::FORBIDDEN, "cross_origin", format!("sign-in from {origin} refused")));
    }
    Ok(())
}

/// `POST /console/session {token}`: the user the token belongs to gets a session cookie.
async fn sign_in(
    State(c): State<ConsoleState>,
    headers: HeaderMap,
    Body(b): Body<SignIn>,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let (s, value) = if c.admin_token.is_empty() && b.token.is_empty() {
        c.sessions.issue("local", true)
    } else {
        match authenticate_token(&c.t, &b.token).await? {
            Some(user) => c.sessions.issue(&user.name, false),
            None if !c.admin_token.is_empty()
                && bearer_matches(&c.admin_token, Some(&format!("Bearer {}", b.token))) =>
            {
                let msg = "the admin token only creates users; sign in with a user's token (`tollgate users add NAME`)";
                return Err(ApiError::Request(StatusCode::FORBIDDEN, "bootstrap_token", msg.into()));
            }
            None => return Err(unauthorised("that token is not valid")),
        }
    };
    let cookie = session::set_cookie(&value, session::TTL_MS / 1000, &headers);
    Ok(([(header::SET_COOKIE, cookie)], Json(session_json(&c.sessions, &s))).into_response())
}

/// `DELETE /console/session`: clear the cookie (with the session's CSRF token).
async fn sign_out(State(c): State<ConsoleState>, headers: HeaderMap) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    if c.sessions.from_headers(&headers).is_some_and(|s| !c.sessions.allows(&s, &Method::DELETE, &headers)) {
        return Err(ApiError::Request(
            StatusCode::FORBIDDEN,
            "csrf",
            "signing out needs the session's `X-CSRF-Token` header".into(),
        ));
    }
    Ok(([(header::SET_COOKIE, session::set_cookie("", 0, &headers))], Json(json!({"signed_out": true})))
        .into_response())
}
