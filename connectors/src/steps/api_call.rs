//! `api_call` steps: one HTTP request per attempt, its outcome classified for the retry policy.
//!
//! The request comes from the invocation's `request` (the step's `request` with its templates
//! rendered by the engine): method, http(s) URL, headers, and a body sent as JSON — or as-is
//! when the body is a string and the step sets its own `Content-Type`. The engine's
//! idempotency key goes out as `Idempotency-Key` (overriding one set by the step: the engine's
//! key is the one that is stable across attempts), and the attempt number as `Tollgate-Attempt`
//! (so the receiving side can tell a retry from a duplicate delivery).
//!
//! Output: `{"status": 200, "headers": {<KEPT_HEADERS present, lower-case>}, "body": <JSON when
//! the response says it is JSON and parses, else the text>}`.
//!
//! Error codes: `http_status` (`RetryAfter` for 429/503 with `Retry-After`, `Retryable` for
//! 408, 429, 5xx, `Permanent` with a body excerpt otherwise), `http_unreachable` (`Retryable`:
//! connect or transport failure), `timeout` (`Retryable`: the attempt's `timeout`, which covers
//! the whole exchange including the body), `response_too_large`, `bad_url` (not http/https),
//! `bad_request` (bad method/header/request shape), `bad_spec` (no request), `bad_redirect`
//! (more than 10 hops, or a `Location` that is not http/https), `egress_denied` (`Permanent`:
//! the egress policy refuses the destination of the request or of a redirect hop, see
//! [`crate::steps::egress`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue,
    LOCATION, PROXY_AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::money::Money;
use tollgate_engine::spec::HttpRequestSpec;
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};

use crate::steps::egress::{EgressGuard, Refusal, denial_in};

/// Default bound on a successful response's body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
/// Response headers copied into the output; others (cookies above all) are dropped.
pub const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "link",
    "x-request-id",
    "request-id",
    "ratelimit-remaining",
    "x-ratelimit-remaining",
];
/// How much of an error response is read and quoted: enough to see the server's reason.
const ERROR_BODY_BYTES: usize = 64 * 1024;
const EXCERPT_CHARS: usize = 300;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Runs `api_call` steps; connections go only where the egress policy allows.
#[derive(Debug)]
pub struct ApiCallHandler {
    egress: EgressGuard,
    max_response_bytes: usize,
}

/// One hop of a request: what is sent, re-sent (and adjusted) on a redirect.
pub(crate) struct Hop {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// The body holds credentials (an OAuth2 client secret): a redirect that would re-send it
    /// to another origin is refused, as `Authorization` is dropped there.
    pub secret_body: bool,
}

impl ApiCallHandler {
    /// A handler whose requests may reach, beyond public addresses, what `allow` (the
    /// service's egress allowlist) and each workflow's `egress.allow` open. Clients use
    /// rustls, a `tollgate/<version>` user agent and a 10 s connect timeout.
    pub fn new(allow: EgressAllow) -> Self {
        let egress = EgressGuard::new(allow, concat!("tollgate/", env!("CARGO_PKG_VERSION")), CONNECT_TIMEOUT);
        Self { egress, max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES }
    }

    /// Bound on a successful response's body; beyond it the attempt fails `response_too_large`.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Send the request, following up to [`MAX_REDIRECTS`] redirects, each hop checked by the
    /// egress guard like the first.
    async fn exchange(&self, hop: Hop, workflow: &EgressAllow) -> Result<Value, StepError> {
        send(&self.egress, self.max_response_bytes, hop, workflow).await?.into_output()
    }
}

/// The final answer to a request (after redirects): a success's body read up to the size
/// bound, an error's up to [`ERROR_BODY_BYTES`] (only quoted).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The step output of a success (`{status, headers, body}`), or the error of a failure status.
    pub(crate) fn into_output(self) -> Result<Value, StepError> {
        if self.status.is_success() {
            let headers = kept_headers(&self.headers);
            return Ok(
                json!({ "status": self.status.as_u16(), "headers": headers, "body": decode_body(&self.headers, self.body) }),
            );
        }
        Err(status_error(self.status, &self.headers, &self.body, SystemTime::now()))
    }

    /// The body as JSON, if it parses.
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Send `hop` through clients of `egress`, following up to [`MAX_REDIRECTS`] redirects, each hop
/// checked by the egress guard like the first (what `api_call` and a `connector` step's
/// `http.request` both do).
pub(crate) async fn send(
    egress: &EgressGuard,
    max_response_bytes: usize,
    mut hop: Hop,
    workflow: &EgressAllow,
) -> Result<Answer, StepError> {
    let mut from: Option<Url> = None;
    for _ in 0..=MAX_REDIRECTS {
        let on_hop = |e: StepError| match &from {
            Some(prev) => StepError { message: format!("redirect from {prev} to {}: {}", hop.url, e.message), ..e },
            None => e,
        };
        let client = egress.client_for(&hop.url, workflow).map_err(|r| on_hop(refusal_error(r)))?;
        let mut request = client.request(hop.method.clone(), hop.url.clone()).headers(hop.headers.clone());
        if let Some(body) = &hop.body {
            request = request.body(body.clone());
        }
        let mut response = request.send().await.map_err(|e| on_hop(transport_error(e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(next) = redirect_target(status, &headers, &hop.url)? {
            if hop.secret_body && matches!(status.as_u16(), 307 | 308) && origin(&next) != origin(&hop.url) {
                return Err(StepError::permanent(
                    "bad_redirect",
                    format!(
                        "HTTP {status} from {} to another origin ({next}): the credentials in the request body are not sent there",
                        hop.url
                    ),
                ));
            }
            follow(&mut hop, status, next);
            from = Some(response.url().clone());
            continue;
        }
        let body = if status.is_success() {
            read_body(&mut response, max_response_bytes, false).await?
        } else {
            read_body(&mut response, ERROR_BODY_BYTES, true).await?
        };
        return Ok(Answer { status, headers, body });
    }
    Err(StepError::permanent("bad_redirect", format!("more than {MAX_REDIRECTS} redirects, last to {}", hop.url)))
}

#[async_trait]
impl StepHandler for ApiCallHandler {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError> {
        let spec: HttpRequestSpec = match call.inputs.get("request") {
            Some(request) => serde_json::from_value(request.clone())
                .map_err(|e| StepError::permanent("bad_request", format!("rendered request is malformed: {e}")))?,
            None => return Err(StepError::permanent("bad_spec", "api_call invocation has no `request`")),
        };
        let hop = build(&spec, &call.idempotency_key, call.attempt)?;
        match tokio::time::timeout(call.timeout, self.exchange(hop, call.egress)).await {
            Ok(result) => result.map(|output| StepSuccess::new(output, Money::ZERO)),
            Err(_) => Err(StepError::retryable("timeout", format!("no complete response within {:?}", call.timeout))),
        }
    }
}

fn build(spec: &HttpRequestSpec, idempotency_key: &str, attempt: u32) -> Result<Hop, StepError> {
    let url = Url::parse(&spec.url).map_err(|e| StepError::permanent("bad_url", format!("{:?}: {e}", spec.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StepError::permanent(
            "bad_url",
            format!("only http and https URLs are allowed, not {:?}", url.scheme()),
        ));
    }
    let method = Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| StepError::permanent("bad_request", format!("bad HTTP method {:?}", spec.method)))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &spec.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| StepError::permanent("bad_request", format!("bad header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| StepError::permanent("bad_request", format!("bad value for header {name}")))?;
        headers.append(name, value);
    }
    let key = HeaderValue::from_str(idempotency_key)
        .map_err(|_| StepError::permanent("bad_request", "idempotency key is not a valid header value"))?;
    headers.insert(HeaderName::from_static("idempotency-key"), key);
    headers.insert(HeaderName::from_static("tollgate-attempt"), HeaderValue::from(attempt));
    let body = match &spec.body {
        Some(Value::String(raw)) if headers.contains_key(CONTENT_TYPE) => Some(raw.clone().into_bytes()),
        Some(body) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Some(serde_json::to_vec(body).expect("JSON values serialise"))
        }
        None => None,
    };
    Ok(Hop { method, url, headers, body, secret_body: false })
}

/// Where a redirect response points, if it is one to follow (301, 302, 303, 307, 308 with a
/// `Location`). A redirect elsewhere than http(s) fails `bad_redirect`.
fn redirect_target(status: StatusCode, headers: &HeaderMap, url: &Url) -> Result<Option<Url>, StepError> {
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let Some(location) = headers.get(LOCATION) else { return Ok(None) };
    let bad = |why: String| StepError::permanent("bad_redirect", format!("HTTP {status} from {url}: {why}"));
    let location = location.to_str().map_err(|_| bad("the Location header is not text".into()))?;
    let next = url.join(location).map_err(|e| bad(format!("bad Location {location:?}: {e}")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(bad(format!("redirect to a {:?} URL", next.scheme())));
    }
    Ok(Some(next))
}

/// Turn `hop` into the request a redirect asks for, as browsers and reqwest do: 301/302/303
/// re-send as GET without a body (HEAD stays HEAD), 307/308 re-send as is; credentials are not
/// carried to another origin.
fn follow(hop: &mut Hop, status: StatusCode, next: Url) {
    if matches!(status.as_u16(), 301 | 302 | 303) {
        if hop.method != Method::HEAD {
            hop.method = Method::GET;
        }
        hop.body = None;
        for name in [CONTENT_TYPE, CONTENT_LENGTH, CONTENT_ENCODING] {
            hop.headers.remove(name);
        }
    }
    if origin(&next) != origin(&hop.url) {
        for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE] {
            hop.headers.remove(name);
        }
        hop.headers.remove("cookie2");
    }
    hop.url = next;
}

/// Scheme, host and port: what "another origin" compares.
fn origin(u: &Url) -> (String, Option<String>, Option<u16>) {
    (u.scheme().to_owned(), u.host_str().map(str::to_owned), u.port_or_known_default())
}

fn refusal_error(r: Refusal) -> StepError {
    let code = match r {
        Refusal::Denied(_) => "egress_denied",
        Refusal::Scheme(_) | Refusal::NoHost(_) => "bad_url",
        Refusal::Client(_) => "http_client",
    };
    StepError::permanent(code, r.to_string())
}

/// Reads at most `limit` bytes; past it, either truncates (error bodies, only quoted) or fails.
async fn read_body(response: &mut reqwest::Response, limit: usize, truncate: bool) -> Result<Vec<u8>, StepError> {
    let too_large = || StepError::permanent("response_too_large", format!("response body exceeds {limit} bytes"));
    if !truncate && response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            if truncate {
                body.extend_from_slice(&chunk[..limit - body.len()]);
                break;
            }
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn decode_body(headers: &HeaderMap, body: Vec<u8>) -> Value {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false);
    if is_json && let Ok(value) = serde_json::from_slice(&body) {
        return value;
    }
    Value::String(String::from_utf8_lossy(&body).into_owned())
}

fn kept_headers(headers: &HeaderMap) -> Value {
    let mut kept = Map::new();
    for name in KEPT_HEADERS {
        let values: Vec<String> =
            headers.get_all(*name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        if !values.is_empty() {
            kept.insert((*name).to_owned(), Value::String(values.join(", ")));
        }
    }
    Value::Object(kept)
}

fn status_error(status: StatusCode, headers: &HeaderMap, body: &[u8], now: SystemTime) -> StepError {
    let mut message = format!("HTTP {status}");
    let excerpt: String = String::from_utf8_lossy(body).chars().take(EXCERPT_CHARS).collect();
    if !excerpt.trim().is_empty() {
        message = format!("{message}: {}", excerpt.trim());
    }
    let code = status.as_u16();
    if matches!(code, 429 | 503)
        && let Some(after) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| retry_after(v, now))
    {
        return StepError::retry_after("http_status", after, message);
    }
    if code == 408 || code == 429 || status.is_server_error() {
        StepError::retryable("http_status", message)
    } else {
        StepError::permanent("http_status", message)
    }
}

pub(crate) fn transport_error(e: reqwest::Error) -> StepError {
    if let Some(denied) = denial_in(&e) {
        return StepError::permanent("egress_denied", denied.to_string());
    }
    // reqwest's Display leaves out the cause ("connection refused" etc.), which is the useful part.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    if e.is_builder() {
        StepError::permanent("bad_request", message)
    } else if e.is_redirect() {
        StepError::permanent("bad_redirect", message)
    } else if e.is_timeout() && !e.is_connect() {
        StepError::retryable("timeout", message)
    } else {
        StepError::retryable("http_unreachable", message)
    }
}

/// `Retry-After`: delay-seconds, or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) — the only
/// date form RFC 9110 lets senders generate. A date in the past means "now".
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = UNIX_EPOCH + Duration::from_secs(http_date_secs(value)?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn http_date_secs(value: &str) -> Option<u64> {
    let (_weekday, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::extract::Path;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{any, get};
    use tollgate_engine::ids::{RunId, WorkflowId};
    use tollgate_engine::spec::StepSpec;
    use tollgate_engine::step::ErrorClass;

    use super::*;

    async fn echo(method: Method, headers: AxumHeaders, body: Bytes) -> Response {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: Value =
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        let reply = json!({
            "method": method.as_str(),
            "idempotency_key": header("idempotency-key"),
            "x_custom": header("x-custom"),
            "content_type": header("content-type"),
            "body": body,
        });
        ([("x-request-id", "req-1"), ("set-cookie", "session=secret")], axum::Json(reply)).into_response()
    }

    async fn status(Path(code): Path<u16>) -> Response {
        let status = AxumStatus::from_u16(code).unwrap_or(AxumStatus::IM_A_TEAPOT);
        (status, [("retry-after", "2")], format!("status {code} body")).into_response()
    }

    async fn busy_until_date() -> Response {
        let at = SystemTime::now() + Duration::from_secs(120);
        (AxumStatus::TOO_MANY_REQUESTS, [("retry-after", http_date(at))], "slow down").into_response()
    }

    fn http_date(t: SystemTime) -> String {
        // Formats by search over the parser under test's inverse: good enough for a fixture.
        let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (mut y, mut m, mut d) = (1970i64, 1usize, 1i64);
        let mut left = days as i64;
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        while left >= if leap(y) { 366 } else { 365 } {
            left -= if leap(y) { 366 } else { 365 };
            y += 1;
        }
        let lens = [31, if leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        while left >= lens[m - 1] {
            left -= lens[m - 1];
            m += 1;
        }
        d += left;
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
        format!("{weekday}, {d:02} {} {y} {:02}:{:02}:{:02} GMT", months[m - 1], rem / 3600, rem / 60 % 60, rem % 60)
    }

    async fn server() -> SocketAddr {
        let app = Router::new()
            .route("/echo", any(echo))
            .route("/status/{code}", get(status))
            .route("/busy", get(busy_until_date))
            .route("/text", get(|| async { "plain words" }))
            .route("/big", get(|| async { "x".repeat(2 * 1024 * 1024) }))
            .route(
                "/big-chunked",
                get(|| async {
                    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 32 * 1024])));
                    Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// What the tests' local servers need: the service allowlist opens 127.0.0.1.
    fn local() -> EgressAllow {
        EgressAllow::parse(&["127.0.0.1"]).expect("valid entry")
    }

    async fn call(handler: &ApiCallHandler, request: Value, timeout: Duration) -> Result<Value, StepError> {
        call_from(handler, &EgressAllow::default(), request, timeout).await
    }

    /// A call from a workflow whose `egress.allow` is `egress`.
    async fn call_from(
        handler: &ApiCallHandler,
        egress: &EgressAllow,
        request: Value,
        timeout: Duration,
    ) -> Result<Value, StepError> {
        let step: StepSpec = serde_json::from_value(json!({ "id": "post", "type": "api_call", "request": request }))
            .expect("valid step");
        let (workflow, run) = (WorkflowId::new("wf"), RunId::new("run-1"));
        let inputs = json!({ "inputs": {}, "request": request });
        let invocation = StepInvocation {
            workflow: &workflow,
            run: &run,
            step: &step,
            attempt: 2,
            inputs: &inputs,
            idempotency_key: "run-1/post".into(),
            timeout,
            egress,
        };
        handler.run(invocation).await.map(|s| s.output)
    }

    async fn get_url(url: String) -> Result<Value, StepError> {
        let handler = ApiCallHandler::new(local()).max_response_bytes(1024 * 1024);
        call(&handler, json!({ "url": url }), Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn sends_json_and_the_idempotency_key() {
        let addr = server().await;
        let handler = ApiCallHandler::new(local());
        let request = json!({
            "method": "post",
            "url": format!("http://{addr}/echo"),
            "headers": { "X-Custom": "yes", "Idempotency-Key": "step-chosen" },
            "body": { "invoice": 7, "lines": [1, 2] },
        });
        let out = call(&handler, request, Duration::from_secs(10)).await.expect("2xx");
        assert_eq!(out["status"], json!(200));
        assert_eq!(out["body"]["method"], json!("POST"));
        assert_eq!(out["body"]["idempotency_key"], json!("run-1/post"), "the engine's key wins");
        assert_eq!(out["body"]["x_custom"], json!("yes"));
        assert_eq!(out["body"]["content_type"], json!("application/json"));
        assert_eq!(out["body"]["body"], json!({ "invoice": 7, "lines": [1, 2] }));
        assert_eq!(out["headers"]["x-request-id"], json!("req-1"));
        assert_eq!(out["headers"]["content-type"], json!("application/json"));
        assert!(out["headers"].get("set-cookie").is_none(), "cookies are not copied: {out}");

        let raw = json!({ "method": "PUT", "url": format!("http://{addr}/echo"), "headers": { "content-type": "text/csv" }, "body": "a,b\n1,2" });
        let out = call(&handler, raw, Duration::from_secs(10)).await.expect("raw body");
        assert_eq!((&out["body"]["content_type"], &out["body"]["body"]), (&json!("text/csv"), &json!("a,b\n1,2")));
    }

    #[tokio::test]
    async fn classifies_statuses() {
        let addr = server().await;
        let err = get_url(format!("http://{addr}/status/503")).await.expect_err("503");
        assert_eq!(
            (&err.class, err.code.as_str()),
            (&ErrorClass::RetryAfter { after_ms: 2000 }, "http_status"),
            "{err}"
        );
        let err = get_url(format!("http://{addr}/busy")).await.expect_err("429");
        let ErrorClass::RetryAfter { after_ms } = err.class else { panic!("429 + date: {err:?}") };
        assert!((117_000..=120_000).contains(&after_ms), "{after_ms}");
        for code in [500, 502, 408] {
            let err = get_url(format!("http://{addr}/status/{code}")).await.expect_err("retryable");
            assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Retryable, "http_status"), "{code}: {err}");
        }
        for code in [404, 400, 422] {
            let err = get_url(format!("http://{addr}/status/{code}")).await.expect_err("permanent");
            assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Permanent, "http_status"), "{code}: {err}");
            assert!(err.message.contains(&format!("status {code} body")), "excerpt quoted: {err}");
        }
    }

    #[tokio::test]
    async fn text_bodies_and_size_bound() {
        let addr = server().await;
        let out = get_url(format!("http://{addr}/text")).await.expect("text");
        assert_eq!(out["body"], json!("plain words"));
        for path in ["big", "big-chunked"] {
            let err = get_url(format!("http://{addr}/{path}")).await.expect_err("too large");
            assert_eq!(
                (&err.class, err.code.as_str()),
                (&ErrorClass::Permanent, "response_too_large"),
                "{path}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn unreachable_slow_and_bad_urls() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        }; // dropped: nothing listens there now
        let err = get_url(format!("http://127.0.0.1:{port}/")).await.expect_err("refused");
        assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Retryable, "http_unreachable"), "{err}");

        let addr = server().await;
        let handler = ApiCallHandler::new(local());
        let err = call(&handler, json!({ "url": format!("http://{addr}/slow") }), Duration::from_millis(200))
            .await
            .expect_err("slow");
        assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Retryable, "timeout"), "{err}");

        for url in ["file:///etc/passwd", "ftp://example.com/x", "not a url", "redis://127.0.0.1/"] {
            let err = get_url(url.into()).await.expect_err("bad url");
            assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Permanent, "bad_url"), "{url}: {err}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(http_date_secs(&http_date(UNIX_EPOCH + Duration::from_secs(1_951_234_567))), Some(1_951_234_567));
        assert_eq!(http_date_secs("Thu, 29 Feb 2024 00:00:00 GMT"), Some(1_709_164_800));
    }
}
