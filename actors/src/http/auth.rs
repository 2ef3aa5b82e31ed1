//! Who is calling the admin API. Every `/api` request is authenticated ([`require_auth`]):
//!
//! - `Authorization: Bearer tg_…` — a user's API token (`tollgate users add`), checked against
//!   its Argon2id hash ([`UserDirectory::authenticate`]); the request acts as that user
//!   ([`Caller::User`]).
//! - `Authorization: Bearer <admin_token>` — the shared admin token (compared in constant
//!   time) only bootstraps users: it is accepted by `POST /api/users` and nothing else.
//! - no header, only when no `admin_token` is configured — the loopback-only development mode
//!   ([`check_exposure`]): the request acts as the local operator ([`Caller::Local`]).
//! - a console session cookie (`session.rs`; signed in with a user's token through
//!   [`authenticate_token`]) — the request acts as the session's user, and one that changes
//!   state must carry the session's CSRF token (403 without).
//!
//! Anything else is 401. Handlers take a [`Caller`] (403 for the bootstrap token) or an
//! [`Authenticated`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_engine::users::User;

use crate::access::Caller;
use crate::http::error::ApiError;
use crate::http::session::{Session, SessionKey};
use crate::service::Tollgate;

/// Refuse an admin API open to the network without a token: anyone who reaches it could
/// start, decide and cancel runs.
pub fn check_exposure(addr: SocketAddr, admin_token: &str) -> Result<(), String> {
    if admin_token.is_empty() && !addr.ip().to_canonical().is_loopback() {
        return Err(format!(
            "refusing to serve the admin API on {addr} without an admin token: set admin_token \
             (TOLLGATE_ADMIN_TOKEN), or listen on a loopback address (http_addr = \"127.0.0.1:8480\")"
        ));
    }
    Ok(())
}

/// Whether an `Authorization` header carries `expected` as its bearer token. The digests are
/// compared, in constant time, so neither the token's bytes nor its length leak through timing.
pub fn bearer_matches(expected: &str, authorization: Option<&str>) -> bool {
    let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else { return false };
    Sha256::digest(given.as_bytes()).as_slice().ct_eq(Sha256::digest(expected.as_bytes()).as_slice()).into()
}

/// Who a request was authenticated as (a request extension set by [`require_auth`]).
#[derive(Clone, Debug)]
pub enum Authenticated {
    Caller(Caller),
    /// The shared admin token: may only create users.
    Bootstrap,
}

/// The user an API token belongs to, or `None` when it is unknown or wrong — what the
/// console calls to sign a user in with a token (and, per request, to resolve the token its
/// session maps to; see ARCHITECTURE.md, "Sessions").
pub async fn authenticate_token(t: &Tollgate, token: &str) -> Result<Option<User>, ApiError> {
    Ok(t.users.authenticate(token).await?)
}

fn unauthorized(message: &str) -> Response {
    let body = Json(json!({"error": "unauthorized", "message": message}));
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
}

/// Middleware: authenticate the request (see the module doc) or answer 401.
pub async fn require_auth(
    t: Tollgate,
    admin_token: Arc<String>,
    sessions: SessionKey,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(session) = sessions.from_headers(req.headers()) {
        if !sessions.allows(&session, req.method(), req.headers()) {
            let body = Json(
                json!({"error": "csrf", "message": "a console request that changes state needs the session's `X-CSRF-Token` header"}),
            );
            return (StatusCode::FORBIDDEN, body).into_response();
        }
        let caller = match session_caller(&t, &admin_token, &session).await {
            Ok(Some(caller)) => caller,
            Ok(None) => return unauthorized("the session's user no longer exists; sign in again"),
            Err(e) => return e.into_response(),
        };
        req.extensions_mut().insert(Authenticated::Caller(caller));
        return next.run(req).await;
    }
    let given = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).map(str::to_owned);
    let who = match given.as_deref() {
        None if admin_token.is_empty() => Authenticated::Caller(Caller::Local("local".into())),
        None => {
            return unauthorized(
                "this API needs `Authorization: Bearer <token>` (a user's token from `tollgate users add`)",
            );
        }
        Some(h) if !admin_token.is_empty() && bearer_matches(&admin_token, Some(h)) => Authenticated::Bootstrap,
        Some(h) => {
            let Some(token) = h.strip_prefix("Bearer ") else {
                return unauthorized("the Authorization header must be `Bearer <token>`");
            };
            match t.users.authenticate(token).await {
                Ok(Some(user)) => Authenticated::Caller(Caller::User(user)),
                Ok(None) => return unauthorized("unknown or wrong token"),
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// Who a console session acts as: its user, read afresh on every request (so a removed user's
/// sessions stop working, and role or group changes apply at once); in the loopback-only
/// development mode (no admin token), the local operator it was signed in as.
pub async fn session_caller(t: &Tollgate, admin_token: &str, session: &Session) -> Result<Option<Caller>, ApiError> {
    if session.local {
        return Ok(admin_token.is_empty().then(|| Caller::Local(session.user.clone())));
    }
    Ok(t.users.get(&session.user).await?.map(Caller::User))
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(|| ApiError::Request(StatusCode::UNAUTHORIZED, "unauthorized", "not authenticated".into()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Authenticated::from_request_parts(parts, state).await? {
            Authenticated::Caller(c) => Ok(c),
            Authenticated::Bootstrap => Err(ApiError::Request(
                StatusCode::FORBIDDEN,
                "bootstrap_token",
                "the admin token only creates users (POST /api/users, or `tollgate users add`); use a user's token"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_without_a_token_stays_on_loopback() {
        for addr in ["127.0.0.1:8480", "127.0.0.2:1", "[::1]:8480", "[::ffff:127.0.0.1]:80"] {
            assert!(check_exposure(addr.parse().unwrap(), "").is_ok(), "{addr}");
        }
        for addr in ["0.0.0.0:8480", "[::]:8480", "192.168.1.10:8480", "10.0.0.1:80"] {
            let err = check_exposure(addr.parse().unwrap(), "").unwrap_err();
            assert!(err.contains(addr) && err.contains("admin_token"), "{err}");
            assert!(check_exposure(addr.parse().unwrap(), "s3cret").is_ok(), "{addr} with a token");
        }
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches("s3cret", Some("Bearer s3cret")));
        for header in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret "),
            Some("Bearer S3CRET"),
            Some("s3cret"),
            Some("Basic s3cret"),
            Some("Bearer "),
        ] {
            assert!(!bearer_matches("s3cret", header), "{header:?}");
        }
    }
}
