//! The egress policy end to end: an `api_call` to a local server fails its step permanently
//! (no retry, whatever `retry` says) with `egress_denied` naming the address, and the server
//! sees nothing; the workflow's `egress.allow` or the service's `[egress] allow` opens it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tollgate_tests::harness::{TestServer, TestSystem, embedded};

fn spec(url: &str, egress: &str) -> String {
    format!(
        r#"
id: egress-e2e
owner: ops
{egress}
steps:
  - id: call
    type: api_call
    request: {{ url: "{url}" }}
    retry: {{ max_attempts: 3, backoff: {{ initial: 50ms }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_fails_its_step_once_and_an_allowlist_opens_it() {
    let server =
        TestServer::start(Arc::new(|_, _| (StatusCode::OK, vec![], r#"{"ok":true}"#.into(), Duration::ZERO))).await;
    let mut sys = embedded().await;

    let run = sys.start(&spec(&server.url("/x"), ""), json!({})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "failed", "{:?}", v.state.status);
    let call = TestSystem::step(&v, "call");
    assert_eq!(call.attempts.len(), 1, "a refusal is permanent: not retried");
    let err = call.error.as_ref().expect("the step's error");
    assert_eq!(err.code, "egress_denied");
    assert_eq!(err.message, "127.0.0.1 is a loopback address; allow it with egress.allow");
    assert!(server.hits().is_empty(), "the server saw no request");

    let run =
        sys.start(&spec(&server.url("/x"), &format!(r#"egress: {{ allow: ["{}"] }}"#, server.addr)), json!({})).await;
    assert_eq!(sys.settle(&run).await.state.status.label(), "succeeded", "opened by the workflow");
    assert_eq!(server.hits().len(), 1);

    sys.config.egress.allow = vec![format!("127.0.0.1:{}", server.addr.port())];
    sys.restart().await;
    let run = sys.start(&spec(&server.url("/x"), ""), json!({})).await;
    assert_eq!(sys.settle(&run).await.state.status.label(), "succeeded", "opened by the service");
    assert_eq!(server.hits().len(), 2);
    sys.stop().await;
}
