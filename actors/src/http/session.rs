//! Console sessions: a signed cookie naming who signed in and until when, and the CSRF token
//! bound to it. The signing key is derived from the master key and the admin token, so a
//! restart keeps sessions valid and rotating the admin token ends them all; the cookie is
//! `HttpOnly` (no script reads it) and `SameSite=Strict` (no other site sends it), and every
//! state-changing request made with it must also carry the session's CSRF token in a header.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, header};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::system::now_ms;

/// The session cookie's name.
pub const COOKIE: &str = "tollgate_session";
/// The header that carries the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const TTL_MS: u64 = 12 * 60 * 60 * 1000;

/// Who signed in, until when (ms since the epoch), and the session's random id. `local`: the
/// local operator of the loopback-only development mode (no admin token), not a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub sid: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

/// Signs and checks session cookies and CSRF tokens.
#[derive(Clone)]
pub struct SessionKey(Arc<Zeroizing<[u8; 32]>>);

impl SessionKey {
    /// `master` is the master key's MAC key for sessions; the admin token is mixed in so that
    /// changing it invalidates every session signed before.
    pub fn new(master: &[u8; 32], admin_token: &str) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(master).expect("any key length");
        mac.update(b"console-session\0");
        mac.update(&Sha256::digest(admin_token.as_bytes()));
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&mac.finalize().into_bytes());
        Self(Arc::new(key))
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..]).expect("any key length");
        mac.update(label);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// A new session for `user` (the local operator when `local`), and the cookie value that
    /// carries it.
    pub fn issue(&self, user: &str, local: bool) -> (Session, String) {
        let session = Session {
            user: user.to_owned(),
            sid: hex::encode(rand::random::<[u8; 16]>()),
            exp: now_ms() + TTL_MS,
            local,
        };
        let body = serde_json::to_vec(&session).expect("sessions serialise");
        let value = format!("{}.{}", hex::encode(&body), hex::encode(self.mac(b"session\0", &body)));
        (session, value)
    }

    /// The session a cookie value carries, if its signature holds and it has not expired.
    pub fn verify(&self, value: &str) -> Option<Session> {
        let (body, sig) = value.split_once('.')?;
        let body = hex::decode(body).ok()?;
        let sig = hex::decode(sig).ok()?;
        if !bool::from(self.mac(b"session\0", &body).as_slice().ct_eq(&sig)) {
            return None;
        }
        let session: Session = serde_json::from_slice(&body).ok()?;
        (session.exp > now_ms()).then_some(session)
    }

    /// The CSRF token of a session: only a page of this origin can learn it (from
    /// `GET /console/session`), and it is worth nothing with another session.
    pub fn csrf(&self, session: &Session) -> String {
        hex::encode(self.mac(b"csrf\0", session.sid.as_bytes()))
    }

    pub fn csrf_matches(&self, session: &Session, given: Option<&str>) -> bool {
        given.is_some_and(|g| bool::from(self.csrf(session).as_bytes().ct_eq(g.as_bytes())))
    }

    /// The valid session a request's `Cookie` header carries, if any.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Session> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .find_map(|v| self.verify(v))
    }

    /// Whether a request made with `session` may go ahead: reads always, anything that
    /// changes state only with the session's CSRF token.
    pub fn allows(&self, session: &Session, method: &Method, headers: &HeaderMap) -> bool {
        matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            || self.csrf_matches(session, headers.get(CSRF_HEADER).and_then(|h| h.to_str().ok()))
    }
}

/// `Set-Cookie` for a session cookie (an empty value and no lifetime clear it); `Secure` when
/// the page was reached over HTTPS (directly or through a proxy that says so).
pub fn set_cookie(value: &str, max_age_s: u64, headers: &HeaderMap) -> String {
    let https = headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
        || headers.get(header::ORIGIN).is_some_and(|o| o.as_bytes().starts_with(b"https://"));
    let secure = if https { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(cookie: &str, csrf: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        if let Some(c) = csrf {
            h.insert(CSRF_HEADER, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn a_signed_session_round_trips_and_a_tampered_one_does_not() {
        let key = SessionKey::new(&[7; 32], "token");
        let (s, value) = key.issue("alice", false);
        assert_eq!(key.from_headers(&headers(&format!("a=b; {COOKIE}={value}"), None)), Some(s.clone()));
        // Another user's name under the same signature, another key, another admin token.
        let forged = format!(
            "{}.{}",
            hex::encode(serde_json::to_vec(&Session { user: "mallory".into(), ..s.clone() }).unwrap()),
            value.split_once('.').unwrap().1
        );
        assert_eq!(key.verify(&forged), None);
        assert_eq!(SessionKey::new(&[8; 32], "token").verify(&value), None);
        assert_eq!(SessionKey::new(&[7; 32], "rotated").verify(&value), None);
        for bad in ["", ".", "zz.zz", "abc"] {
            assert_eq!(key.verify(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_cookie_is_secure_behind_https() {
        let plain = set_cookie("v", 60, &HeaderMap::new());
        assert_eq!(plain, format!("{COOKIE}=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(set_cookie("v", 60, &h).ends_with("; Secure"));
    }

    #[test]
    fn state_changes_need_the_sessions_csrf_token() {
        let key = SessionKey::new(&[7; 32], "token");
        let (s, value) = key.issue("alice", false);
        let (other, _) = key.issue("alice", false);
        let cookie = format!("{COOKIE}={value}");
        assert!(key.allows(&s, &Method::GET, &headers(&cookie, None)));
        assert!(!key.allows(&s, &Method::POST, &headers(&cookie, None)));
        assert!(!key.allows(&s, &Method::POST, &headers(&cookie, Some(&key.csrf(&other)))));
        assert!(key.allows(&s, &Method::POST, &headers(&cookie, Some(&key.csrf(&s)))));
    }
}
