//! Requests through an owner's `http` connection: the step's path joined to the base URL, its
//! query, headers and body, and the connection's authentication — a bearer token, basic auth,
//! or an OAuth2 client-credentials token. Every exchange (the token endpoint's too) goes through
//! `api_call`'s egress guard and redirect handling (`Authorization` is not carried to another
//! origin).
//!
//! OAuth2 clients authenticate to the token endpoint with HTTP Basic (`client_secret_basic`, the
//! default) or with their id and secret in the form body (`client_secret_post`), never both.
//! Tokens are cached in this process ([`TokenCache`]) per connection and client secret,
//! until shortly before they expire (`expires_in` less a tenth of it, at most 30 s; a token
//! without `expires_in` until it is refused); a request refused with 401 fetches a new token
//! and is sent once more. Concurrent requests of one connection share one token fetch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_engine::connections::{ClientAuth, ConnectionKind, ConnectionSettings, HttpAuth, HttpSettings};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::ids::OwnerId;
use zeroize::Zeroizing;

use super::{ConnectionError, Connections, Resolved};
use crate::steps::api_call::{self, Answer, CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, Hop};
use crate::steps::egress::EgressGuard;

/// The most a token endpoint's answer may weigh.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// A token is refreshed this long before it expires, at most.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// One request through a connection (a `connector` step's `http.request`, rendered).
#[derive(Clone, Debug, Default)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a BTreeMap<String, Value>>,
    pub headers: Option<&'a BTreeMap<String, String>>,
    pub json: Option<&'a Value>,
    pub body: Option<&'a str>,
    /// Sent as `Idempotency-Key` (with `Tollgate-Attempt`), as `api_call` does.
    pub idempotency_key: Option<&'a str>,
    pub attempt: u32,
}

/// The HTTP side of connections: the egress guard and the token cache.
pub(crate) struct HttpClient {
    egress: EgressGuard,
    tokens: TokenCache,
}

impl HttpClient {
    pub(crate) fn new(allow: EgressAllow) -> Self {
        Self {
            egress: EgressGuard::new(allow, concat!("tollgate/", env!("CARGO_PKG_VERSION")), CONNECT_TIMEOUT),
            tokens: TokenCache::default(),
        }
    }
}

/// OAuth2 access tokens of this process, per connection (and client secret: a rotated secret
/// starts afresh).
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Token>>>>>,
}

/// An OAuth2 client as it authenticates to the token endpoint.
struct OAuthClient<'a> {
    id: &'a str,
    secret: &'a str,
    auth: ClientAuth,
}

struct Token {
    access: Zeroizing<String>,
    /// When to fetch a new one (`None`: when it is refused).
    refresh_at: Option<Instant>,
}

impl TokenCache {
    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Token>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone()
    }
}

fn http_settings(r: &Resolved) -> &HttpSettings {
    match &r.connection.settings {
        ConnectionSettings::Http(s) => s,
        _ => unreachable!("resolved as an http connection"),
    }
}

fn sensitive(value: String) -> Result<HeaderValue, ConnectionError> {
    let mut v = HeaderValue::from_str(&value)
        .map_err(|_| ConnectionError::Input("the connection's credential is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

impl Connections {
    /// Send `request` through `owner`'s http connection `name`, from a workflow whose
    /// `egress.allow` is `workflow`. The output is `api_call`'s: `{status, headers, body}`;
    /// failures carry `api_call`'s codes (`http_status`, `egress_denied`…).
    pub async fn http_request(
        &self,
        owner: &OwnerId,
        name: &str,
        request: &HttpRequest<'_>,
        workflow: &EgressAllow,
    ) -> Result<Value, ConnectionError> {
        let resolved = self.resolve(owner, name, ConnectionKind::Http).await?;
        let settings = http_settings(&resolved);
        let hop = build(settings, request)?;
        let (auth, fresh) = self.authorization(owner, &resolved, workflow, None).await?;
        let answer = self.send(with_auth(&hop, auth.clone()), workflow).await?;
        if answer.status == StatusCode::UNAUTHORIZED && matches!(settings.auth, HttpAuth::Oauth2 { .. }) && !fresh {
            // The cached token was refused (revoked, or expired early): one new token, one more try.
            let (auth, _) = self.authorization(owner, &resolved, workflow, auth.as_ref()).await?;
            let answer = self.send(with_auth(&hop, auth), workflow).await?;
            return answer.into_output().map_err(ConnectionError::Http);
        }
        answer.into_output().map_err(ConnectionError::Http)
    }

    async fn send(&self, hop: Hop, workflow: &EgressAllow) -> Result<Answer, ConnectionError> {
        api_call::send(&self.http.egress, DEFAULT_MAX_RESPONSE_BYTES, hop, workflow)
            .await
            .map_err(ConnectionError::Http)
    }

    /// The `Authorization` header of a request, and whether an OAuth2 token was just fetched.
    /// `refused`: the header a request was refused with (a new token is fetched unless another
    /// request already replaced it).
    async fn authorization(
        &self,
        owner: &OwnerId,
        r: &Resolved,
        workflow: &EgressAllow,
        refused: Option<&HeaderValue>,
    ) -> Result<(Option<HeaderValue>, bool), ConnectionError> {
        let credential = r.credential.as_ref().map(|c| c.as_str()).unwrap_or_default();
        match &http_settings(r).auth {
            HttpAuth::None => Ok((None, false)),
            HttpAuth::Bearer => Ok((Some(sensitive(format!("Bearer {credential}"))?), false)),
            HttpAuth::Basic { user } => Ok((Some(sensitive(basic(user, credential))?), false)),
            HttpAuth::Oauth2 { token_url, client_id, scope, client_auth } => {
                let secret_digest = hex::encode(Sha256::digest(credential.as_bytes()));
                let key = format!(
                    "{owner}\0{}\0{token_url}\0{client_id}\0{}\0{secret_digest}",
                    r.connection.name,
                    scope.as_deref().unwrap_or("")
                );
                let slot = self.http.tokens.slot(&key);
                let mut cached = slot.lock().await;
                if let Some(t) = cached.as_ref() {
                    let header = sensitive(format!("Bearer {}", t.access.as_str()))?;
                    let expired = t.refresh_at.is_some_and(|at| Instant::now() >= at);
                    if !expired && refused.is_none_or(|r| r != header) {
                        return Ok((Some(header), false));
                    }
                }
                let client = OAuthClient { id: client_id, secret: credential, auth: *client_auth };
                let token =
                    self.fetch_token(&r.connection.name, token_url, &client, scope.as_deref(), workflow).await?;
                let header = sensitive(format!("Bearer {}", token.access.as_str()))?;
                *cached = Some(token);
                Ok((Some(header), true))
            }
        }
    }

    /// A client-credentials token (RFC 6749 §4.4); the client authenticates as its
    /// `client_auth` says (§2.3.1): HTTP Basic, or its id and secret in the form body.
    async fn fetch_token(
        &self,
        name: &str,
        token_url: &str,
        client: &OAuthClient<'_>,
        scope: Option<&str>,
        workflow: &EgressAllow,
    ) -> Result<Token, ConnectionError> {
        let client_id = client.id;
        let url = Url::parse(token_url)
            .map_err(|e| ConnectionError::Input(format!("connection `{name}`: token_url `{token_url}`: {e}")))?;
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut form = Zeroizing::new(String::from("grant_type=client_credentials"));
        if let Some(scope) = scope {
            form.push_str(&format!("&scope={}", enc(scope)));
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        match client.auth {
            ClientAuth::ClientSecretBasic => {
                headers.insert(AUTHORIZATION, sensitive(basic(&enc(client_id), &enc(client.secret)))?);
            }
            ClientAuth::ClientSecretPost => {
                form.push_str(&format!("&client_id={}&client_secret={}", enc(client_id), enc(client.secret)))
            }
        }
        let secret_body = client.auth == ClientAuth::ClientSecretPost;
        let hop = Hop { method: Method::POST, url, headers, body: Some(form.as_bytes().to_vec()), secret_body };
        let answer = api_call::send(&self.http.egress, MAX_TOKEN_RESPONSE, hop, workflow)
            .await
            .map_err(ConnectionError::Http)?;
        let at = format!("the token endpoint {token_url} of connection `{name}`");
        if !answer.status.is_success() {
            let reason = answer
                .json()
                .map(|j| {
                    format!("{} {}", j["error"].as_str().unwrap_or(""), j["error_description"].as_str().unwrap_or(""))
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            let said = format!(
                "{at} answered HTTP {}{}",
                answer.status,
                if reason.is_empty() { String::new() } else { format!(": {reason}") }
            );
            return Err(match answer.status.as_u16() {
                400 | 401 | 403 => ConnectionError::Refused(format!("{said} (client `{client_id}`)")),
                _ => ConnectionError::Failed(said),
            });
        }
        let json = answer
            .json()
            .ok_or_else(|| ConnectionError::Failed(format!("{at} answered with something other than JSON")))?;
        let access = json["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ConnectionError::Failed(format!("{at} answered without an `access_token`")))?;
        if let Some(ty) = json["token_type"].as_str().filter(|t| !t.eq_ignore_ascii_case("bearer")) {
            return Err(ConnectionError::Failed(format!(
                "{at} issued a `{ty}` token; only bearer tokens are supported"
            )));
        }
        let refresh_at = json["expires_in"].as_u64().map(|secs| {
            let life = Duration::from_secs(secs);
            Instant::now() + life - (life / 10).min(REFRESH_MARGIN)
        });
        Ok(Token { access: Zeroizing::new(access.to_string()), refresh_at })
    }
}

fn with_auth(hop: &Hop, auth: Option<HeaderValue>) -> Hop {
    let mut headers = hop.headers.clone();
    if let Some(auth) = auth {
        headers.insert(AUTHORIZATION, auth);
    }
    Hop {
        method: hop.method.clone(),
        url: hop.url.clone(),
        headers,
        body: hop.body.clone(),
        secret_body: hop.secret_body,
    }
}

/// The request without its authentication.
fn build(s: &HttpSettings, r: &HttpRequest<'_>) -> Result<Hop, ConnectionError> {
    let input = |m: String| ConnectionError::Input(m);
    let method = Method::from_bytes(r.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| input(format!("`{}` is not an HTTP method", r.method)))?;
    let mut url =
        Url::parse(&s.url_for(r.path).map_err(input)?).map_err(|e| input(format!("path `{}`: {e}", r.path)))?;
    if let Some(query) = r.query.filter(|q| !q.is_empty()) {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            let values = match v {
                Value::Array(items) => items.clone(),
                Value::Null => Vec::new(),
                other => vec![other.clone()],
            };
            for v in values {
                match v {
                    Value::String(s) => pairs.append_pair(k, &s),
                    Value::Number(_) | Value::Bool(_) => pairs.append_pair(k, &v.to_string()),
                    _ => {
                        return Err(input(format!(
                            "query `{k}`: a value is a string, number or boolean (or a list of them)"
                        )));
                    }
                };
            }
        }
    }
    let mut headers = HeaderMap::new();
    for (name, value) in r.headers.into_iter().flatten() {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| input(format!("bad header name {name:?}")))?;
        if n == AUTHORIZATION {
            continue; // the connection authenticates
        }
        let v = HeaderValue::from_str(value).map_err(|_| input(format!("bad value for header {name}")))?;
        headers.append(n, v);
    }
    if let Some(key) = r.idempotency_key {
        headers.insert(
            HeaderName::from_static("idempotency-key"),
            HeaderValue::from_str(key).map_err(|_| input("the idempotency key is not a header value".into()))?,
        );
        headers.insert(HeaderName::from_static("tollgate-attempt"), HeaderValue::from(r.attempt));
    }
    let body = match (r.json, r.body) {
        (Some(_), Some(_)) => return Err(input("a request has `json` or `body`, not both".into())),
        (Some(json), None) => {
            headers.entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
            Some(serde_json::to_vec(json).expect("JSON values serialise"))
        }
        (None, Some(text)) => {
            headers.entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
            Some(text.as_bytes().to_vec())
        }
        (None, None) => None,
    };
    Ok(Hop { method, url, headers, body, secret_body: false })
}

/// `connections test` for http: a fresh OAuth2 token if the connection uses one, then a GET of
/// the base URL; any answer but 401/403 means the API took the credentials.
pub(super) async fn test(c: &Connections, owner: &OwnerId, name: &str) -> Result<String, ConnectionError> {
    let resolved = c.resolve(owner, name, ConnectionKind::Http).await?;
    let s = http_settings(&resolved);
    let none = EgressAllow::default();
    let hop = build(s, &HttpRequest { method: "GET", ..Default::default() })?;
    let (mut auth, fresh) = c.authorization(owner, &resolved, &none, None).await?;
    if matches!(s.auth, HttpAuth::Oauth2 { .. }) && !fresh {
        // A fresh token: the test says whether the endpoint grants one now.
        auth = c.authorization(owner, &resolved, &none, auth.as_ref()).await?.0;
    }
    let answer = c.send(with_auth(&hop, auth), &none).await?;
    let token = match &s.auth {
        HttpAuth::Oauth2 { token_url, .. } => format!("a token from {token_url}, "),
        _ => String::new(),
    };
    match answer.status.as_u16() {
        401 | 403 => Err(ConnectionError::Refused(format!(
            "GET {} answered HTTP {} to the credentials of connection `{name}` ({} auth)",
            s.base_url,
            answer.status,
            s.auth.name()
        ))),
        _ => Ok(format!("http {}: {token}GET answered HTTP {} ({} auth)", s.base_url, answer.status, s.auth.name())),
    }
}
