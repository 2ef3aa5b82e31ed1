//! `http.request`: one request through an http connection — an `api_call` whose URL is the
//! connection's base URL plus `path`, authenticated as the connection says, under the same
//! egress policy (the workflow's `egress.allow` included) and redirect handling. The step's
//! idempotency key goes out as `Idempotency-Key`.
//!
//! Output and error codes are `api_call`'s: `{status, headers, body}`; `http_status`,
//! `http_unreachable`, `egress_denied`…; plus `connection_refused` when the OAuth2 token
//! endpoint refuses the client.

use serde_json::Value;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::steps::{ConnectorAction, HttpRequestWith};
use tollgate_engine::step::{StepError, StepInvocation};

use crate::connections::{Connections, HttpRequest};

pub(super) async fn run(
    c: &Connections,
    call: &StepInvocation<'_>,
    owner: &OwnerId,
    connection: &str,
) -> Result<Value, StepError> {
    let with: HttpRequestWith = super::fields(call, ConnectorAction::HttpRequest, HttpRequestWith::problem)?;
    let request = HttpRequest {
        method: &with.method,
        path: &with.path,
        query: Some(&with.query),
        headers: Some(&with.headers),
        json: with.json.as_ref(),
        body: with.body.as_deref(),
        idempotency_key: Some(&call.idempotency_key),
        attempt: call.attempt,
    };
    match tokio::time::timeout(call.timeout, c.http_request(owner, connection, &request, call.egress)).await {
        Ok(result) => result.map_err(|e| e.into_step_error()),
        Err(_) => Err(StepError::retryable("timeout", format!("no complete response within {:?}", call.timeout))),
    }
}
