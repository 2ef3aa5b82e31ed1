//! The egress policy of `api_call`, against real local servers: loopback in all its spellings
//! (literal, IPv6, IPv4-mapped, numeric, a name resolving to it) is refused by default and
//! the server sees nothing; private, link-local and metadata addresses are refused before any
//! connection; allowlist entries (host, host:port, address, network) open exactly what they
//! name; every redirect hop is checked like the first request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use reqwest::Url;
use serde_json::{Value, json};
use tollgate_connectors::steps::ApiCallHandler;
use tollgate_connectors::steps::egress::{EgressGuard, Refusal};
use tollgate_engine::egress::{EgressAllow, Restricted};
use tollgate_engine::ids::{RunId, WorkflowId};
use tollgate_engine::spec::StepSpec;
use tollgate_engine::step::{ErrorClass, StepError, StepHandler, StepInvocation};

/// A local server that counts every request it receives.
struct Counted {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Counted {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn port(&self) -> u16 {
        self.addr.port()
    }
}

#[derive(serde::Deserialize)]
struct RedirectTo {
    to: String,
    #[serde(default)]
    code: Option<u16>,
}

async fn start() -> Counted {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/redirect",
            any(|State(hits): State<Arc<AtomicUsize>>, Query(q): Query<RedirectTo>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let status = StatusCode::from_u16(q.code.unwrap_or(302)).expect("redirect status");
                (status, [("location", q.to)]).into_response()
            }),
        )
        .fallback(any(|State(hits): State<Arc<AtomicUsize>>, method: Method| async move {
            hits.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({ "method": method.as_str() })).into_response()
        }))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Counted { addr, hits }
}

fn allow(entries: &[&str]) -> EgressAllow {
    EgressAllow::parse(entries).unwrap_or_else(|(i, e)| panic!("entry {i}: {e}"))
}

/// One attempt of an `api_call` step of a workflow whose `egress.allow` is `workflow`.
async fn call(handler: &ApiCallHandler, workflow: &EgressAllow, request: Value) -> Result<Value, StepError> {
    let step: StepSpec =
        serde_json::from_value(json!({ "id": "call", "type": "api_call", "request": request })).expect("valid step");
    let (wf, run) = (WorkflowId::new("wf"), RunId::new("run-1"));
    let inputs = json!({ "inputs": {}, "request": request });
    let invocation = StepInvocation {
        workflow: &wf,
        run: &run,
        step: &step,
        attempt: 1,
        inputs: &inputs,
        idempotency_key: "run-1.call".into(),
        timeout: Duration::from_secs(10),
        egress: workflow,
    };
    handler.run(invocation).await.map(|s| s.output)
}

async fn get(handler: &ApiCallHandler, workflow: &EgressAllow, url: String) -> Result<Value, StepError> {
    call(handler, workflow, json!({ "url": url })).await
}

fn assert_denied(result: Result<Value, StepError>, says: &[&str]) {
    let err = result.expect_err("the egress policy refuses this");
    assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Permanent, "egress_denied"), "{err}");
    for s in says {
        assert!(err.message.contains(s), "{s:?} not in: {err}");
    }
    assert!(err.message.contains("allow it with egress.allow"), "the message says what to do: {err}");
}

#[tokio::test]
async fn loopback_in_every_spelling_is_refused_by_default() {
    let server = start().await;
    let port = server.port();
    let handler = ApiCallHandler::new(EgressAllow::default());
    let none = EgressAllow::default();
    for (url, says) in [
        (format!("http://127.0.0.1:{port}/"), "127.0.0.1 is a loopback address"),
        (format!("http://127.1:{port}/"), "127.0.0.1 is a loopback address"),
        (format!("http://2130706433:{port}/"), "127.0.0.1 is a loopback address"),
        (format!("http://0x7f.0.0.1:{port}/"), "127.0.0.1 is a loopback address"),
        (format!("http://[::1]:{port}/"), "::1 is a loopback address"),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "::ffff:127.0.0.1 is a loopback address"),
        (format!("http://0.0.0.0:{port}/"), "0.0.0.0 is an unspecified address"),
        (format!("http://localhost:{port}/"), "localhost resolves to"),
        (format!("http://LOCALHOST:{port}/"), "localhost resolves to"),
    ] {
        assert_denied(get(&handler, &none, url.clone()).await, &[says]);
    }
    assert_eq!(server.hits(), 0, "no refused request reached the server");
}

#[test]
fn private_link_local_and_metadata_addresses_are_refused_before_connecting() {
    // Checked by the guard before any client exists: no packet leaves for these addresses.
    let guard = EgressGuard::new(EgressAllow::default(), "test", Duration::from_secs(1));
    for (url, why) in [
        ("http://169.254.169.254/latest/meta-data/", Restricted::Metadata),
        ("http://[fd00:ec2::254]/", Restricted::Metadata),
        ("http://[::ffff:169.254.169.254]/", Restricted::Metadata),
        ("http://169.254.10.1/", Restricted::LinkLocal),
        ("http://[fe80::1]:8080/", Restricted::LinkLocal),
        ("http://10.0.0.1/", Restricted::Private),
        ("https://172.16.5.4/", Restricted::Private),
        ("http://192.168.1.1:8443/", Restricted::Private),
        ("http://[fc00::1]/", Restricted::Private),
        ("http://[::ffff:10.0.0.1]/", Restricted::Private),
        ("http://100.64.0.1/", Restricted::SharedCgnat),
        ("http://224.0.0.1/", Restricted::Multicast),
        ("http://[ff02::1]/", Restricted::Multicast),
        ("http://255.255.255.255/", Restricted::Broadcast),
        ("http://[::]/", Restricted::Unspecified),
    ] {
        let url = Url::parse(url).expect("valid URL");
        match guard.client_for(&url, &EgressAllow::default()) {
            Err(Refusal::Denied(d)) => {
                assert_eq!(d.why, why, "{url}");
                assert!(d.to_string().contains(why.describe()), "{d}");
            }
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }
    let metadata = Url::parse("http://169.254.169.254/").unwrap();
    let err = guard.client_for(&metadata, &EgressAllow::default()).unwrap_err();
    assert_eq!(err.to_string(), "169.254.169.254 is a link-local cloud metadata address; allow it with egress.allow");
    assert!(guard.client_for(&metadata, &allow(&["169.254.169.254:80"])).is_ok(), "an entry opens it");
    assert!(guard.client_for(&Url::parse("http://10.1.2.3/").unwrap(), &allow(&["10.0.0.0/8"])).is_ok());
}

#[tokio::test]
async fn allowlist_entries_open_exactly_what_they_name() {
    let server = start().await;
    let port = server.port();
    let none = EgressAllow::default();
    // From the service's allowlist.
    let handler = ApiCallHandler::new(allow(&[&format!("127.0.0.1:{port}")]));
    let out =
        get(&handler, &none, format!("http://127.0.0.1:{port}/x")).await.expect("opened by the service allowlist");
    assert_eq!(out["status"], json!(200));
    // From the workflow's allowlist, for that workflow only.
    let handler = ApiCallHandler::new(EgressAllow::default());
    assert_denied(get(&handler, &none, format!("http://127.0.0.1:{port}/x")).await, &["loopback"]);
    for entries in [
        vec!["127.0.0.1".to_string()],
        vec![format!("127.0.0.1:{port}")],
        vec!["127.0.0.0/8".into()],
        vec!["::ffff:127.0.0.1".into()],
    ] {
        let workflow = allow(&entries.iter().map(String::as_str).collect::<Vec<_>>());
        get(&handler, &workflow, format!("http://127.0.0.1:{port}/x"))
            .await
            .unwrap_or_else(|e| panic!("{entries:?}: {e}"));
    }
    // A host entry opens the name, whatever it resolves to.
    let out =
        get(&handler, &allow(&["localhost"]), format!("http://localhost:{port}/x")).await.expect("opened by name");
    assert_eq!(out["status"], json!(200));
    assert_denied(
        get(&handler, &allow(&["localhost"]), format!("http://127.0.0.1:{port}/x")).await,
        &["127.0.0.1 is a loopback"],
    );
    // A port in an entry is for that port only.
    let other = port.wrapping_add(1).max(1);
    assert_denied(
        get(&handler, &allow(&[&format!("127.0.0.1:{other}")]), format!("http://127.0.0.1:{port}/x")).await,
        &["loopback"],
    );
    assert_denied(
        get(&handler, &allow(&[&format!("localhost:{other}")]), format!("http://localhost:{port}/x")).await,
        &["localhost resolves to"],
    );
    assert_eq!(server.hits(), 6, "exactly the opened requests reached the server");
}

#[tokio::test]
async fn every_redirect_hop_is_checked() {
    let (a, b) = (start().await, start().await);
    let handler = ApiCallHandler::new(EgressAllow::default());
    let only_a = allow(&[&format!("127.0.0.1:{}", a.port())]);
    let via_a = |to: String, code: u16| {
        let mut url = Url::parse(&format!("http://127.0.0.1:{}/redirect", a.port())).unwrap();
        url.query_pairs_mut().append_pair("to", &to).append_pair("code", &code.to_string());
        url.to_string()
    };
    // From an allowed host to a refused one: refused, naming the hop.
    for to in [format!("http://127.0.0.1:{}/b", b.port()), format!("http://localhost:{}/b", b.port())] {
        let err = get(&handler, &only_a, via_a(to.clone(), 302)).await.expect_err("refused hop");
        assert_eq!(err.code, "egress_denied", "{err}");
        assert!(err.message.starts_with(&format!("redirect from http://127.0.0.1:{}/redirect", a.port())), "{err}");
        assert!(err.message.contains(&format!("to {to}")) && err.message.contains("loopback"), "{err}");
    }
    let err =
        get(&handler, &only_a, via_a("http://169.254.169.254/latest/".into(), 307)).await.expect_err("metadata hop");
    assert!(err.message.contains("169.254.169.254 is a link-local cloud metadata address"), "{err}");
    assert_eq!(b.hits(), 0, "the refused host saw nothing");
    // A hop to a non-HTTP scheme.
    let err = get(&handler, &only_a, via_a("file:///etc/passwd".into(), 302)).await.expect_err("file hop");
    assert_eq!(err.code, "bad_redirect", "{err}");
    // A redirect loop ends.
    let mut url = format!("http://127.0.0.1:{}/end", a.port());
    for _ in 0..11 {
        url = via_a(url, 302);
    }
    let err = get(&handler, &only_a, url).await.expect_err("too many hops");
    assert_eq!(err.code, "bad_redirect", "{err}");
    // Both allowed: followed; a 303 turns a POST into a GET, a 307 keeps the method.
    let both = allow(&[&format!("127.0.0.1:{}", a.port()), &format!("localhost:{}", b.port())]);
    let out = call(
        &handler,
        &both,
        json!({ "method": "POST", "url": via_a(format!("http://localhost:{}/b", b.port()), 303), "body": {"x": 1} }),
    )
    .await
    .expect("followed");
    assert_eq!(out["body"]["method"], json!("GET"));
    let out = call(
        &handler,
        &both,
        json!({ "method": "POST", "url": via_a(format!("http://localhost:{}/b", b.port()), 307), "body": {"x": 1} }),
    )
    .await
    .expect("followed");
    assert_eq!(out["body"]["method"], json!("POST"));
    assert_eq!(b.hits(), 2);
}
