//! Who may use the admin API: a bearer token compared in constant time, and `serve`'s rule
//! that an API without a token listens on loopback only.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::session::SessionKey;

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

/// Middleware: a console session (its CSRF token on anything that changes state) or, when an
/// admin token is set, that token as a bearer; 401 otherwise, 403 for a missing CSRF token.
/// A session is handed to the handlers as a request extension (it names the decider).
pub async fn require_token(token: std::sync::Arc<String>, sessions: SessionKey, mut req: Request, next: Next) -> Response {
    if let Some(session) = sessions.from_headers(req.headers()) {
        if !sessions.allows(&session, req.method(), req.headers()) {
            let body = Json(json!({"error": "csrf", "message": "a console request that changes state needs the session's `X-CSRF-Token` header"}));
            return (StatusCode::FORBIDDEN, body).into_response();
        }
        req.extensions_mut().insert(session);
    } else if !token.is_empty() {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
        if !bearer_matches(&token, given) {
            let body = Json(json!({"error": "unauthorized", "message": "this API needs `Authorization: Bearer <admin token>`"}));
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
    }
    next.run(req).await
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
        for header in [None, Some("Bearer s3cre"), Some("Bearer s3cret "), Some("Bearer S3CRET"), Some("s3cret"), Some("Basic s3cret"), Some("Bearer ")] {
            assert!(!bearer_matches("s3cret", header), "{header:?}");
        }
    }
}
