//! Paging by webhook against a real local HTTP server that checks every delivery's signature:
//! a new request and its escalation are each POSTed once as JSON — ids, mode, assignees, the
//! card's link, never the request's question or context — signed with HMAC-SHA256 over the
//! timestamp and body; a delivery the server refuses (503) is retried with the same delivery
//! id. A webhook URL the egress policy closes, or one without its secret, stops the start with
//! an error naming the setting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tollgate::config::PagingConfig;
use tollgate::paging::{DELIVERY_HEADER, SIGNATURE_HEADER, Webhook};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::spec::triggers::SignatureScheme;
use tollgate_engine::trigger::signature;
use tollgate_tests::harness::{TestSystem, embedded_with, wait_for};

const SECRET_ENV: &str = "TOLLGATE_TEST_PAGING_SECRET";
const SECRET: &str = "paging-webhook-secret";

const SPEC: &str = r#"
id: kickoff
owner: ops
steps:
  - { id: draft, type: code, script: "return 'plan v1 for ACME-CONFIDENTIAL'" }
  - id: kick
    type: approval
    needs: [draft]
    question: "Kick off the project?"
    assignee: ops
    context: [draft]
    escalate:
      - { after: 1500ms, to: coo }
  - { id: go, type: code, needs: [kick], script: "return 'started'" }
"#;

/// One delivery as the receiver saw it.
#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    /// The signature verified with the shared secret (and failed with another).
    signed: bool,
    body: String,
    answered: StatusCode,
}

#[derive(Clone, Default)]
struct Receiver {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let check = |secret: &str| {
        signature::verify(
            SignatureScheme::Stripe,
            SIGNATURE_HEADER,
            header,
            secret.as_bytes(),
            &body,
            Duration::from_secs(300),
            now,
        )
    };
    let signed = check(SECRET).is_ok() && check("another secret").is_err();
    let id = headers.get(DELIVERY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut all = r.deliveries.lock().unwrap();
    // The first delivery of every page is refused: the pager must retry it.
    let answered =
        if all.iter().any(|d| d.id == id) { StatusCode::NO_CONTENT } else { StatusCode::SERVICE_UNAVAILABLE };
    all.push(Delivery { id, signed, body: String::from_utf8_lossy(&body).into_owned(), answered });
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_escalated_requests_are_posted_signed_retried_and_without_their_context() {
    // SAFETY: set before the system starts; no other test in this binary reads it.
    unsafe { std::env::set_var(SECRET_ENV, SECRET) };
    let receiver = Receiver::default();
    let app = axum::Router::new().route("/pages", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sys = embedded_with(|c| {
        c.paging.webhook_url = format!("http://{addr}/pages");
        c.paging.webhook_secret_env = SECRET_ENV.into();
        c.paging.console_url = "http://console.test/".into();
        c.egress.allow = vec![format!("127.0.0.1:{}", addr.port())];
    })
    .await;
    let run = sys.start(SPEC, json!({})).await;
    let v = sys.settle(&run).await;
    let request = match &TestSystem::step(&v, "kick").status {
        tollgate_engine::run::StepStatus::WaitingHuman { request } => request.to_string(),
        other => panic!("kick should wait for a human: {other:?}"),
    };

    let accepted = |r: &Receiver| r.deliveries.lock().unwrap().iter().filter(|d| d.answered.is_success()).count();
    let rr = &receiver;
    wait_for("the new request's page and the escalation's, each accepted", Duration::from_secs(60), || async move {
        accepted(rr) >= 2
    })
    .await;
    let all = receiver.deliveries.lock().unwrap().clone();
    let (created, escalated) = (format!("{request}.created"), format!("{request}.escalated.coo"));
    let ids: Vec<(&str, bool)> = all.iter().map(|d| (d.id.as_str(), d.answered.is_success())).collect();
    assert_eq!(ids.iter().filter(|d| d.0 == created).count(), 2, "refused once, then delivered again: {ids:?}");
    assert_eq!(ids.iter().filter(|d| d.0 == escalated).count(), 2, "{ids:?}");
    assert!(all.iter().all(|d| d.signed), "every delivery is signed with the secret: {all:?}");

    let body = |id: &str| -> Value { serde_json::from_str(&all.iter().rfind(|d| d.id == id).unwrap().body).unwrap() };
    let link = format!("http://console.test/requests/{request}");
    let new = body(&created);
    assert_eq!(
        new,
        json!({
            "event": "request.created", "request": request, "run": run.to_string(), "workflow": "kickoff", "step": "kick",
            "mode": "approval", "assignees": ["ops"], "link": link, "created_at": new["created_at"],
        })
    );
    assert!(new["created_at"].as_u64().is_some_and(|t| t > 0));
    let up = body(&escalated);
    assert_eq!(
        (&up["event"], &up["assignees"], &up["paged"], &up["link"]),
        (&json!("request.escalated"), &json!(["ops", "coo"]), &json!("coo"), &json!(link))
    );
    for d in &all {
        assert!(
            !d.body.contains("ACME-CONFIDENTIAL") && !d.body.contains("Kick off"),
            "no context or question in a page: {}",
            d.body
        );
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_the_egress_policy_closes_or_without_its_secret_is_refused_at_start() {
    // SAFETY: as above; the same value.
    unsafe { std::env::set_var(SECRET_ENV, SECRET) };
    let config = |url: &str, secret_env: &str| PagingConfig {
        webhook_url: url.into(),
        webhook_secret_env: secret_env.into(),
        ..PagingConfig::default()
    };
    let refused = |c: PagingConfig, allow: &[&str]| {
        Webhook::new(&c, EgressAllow::parse(allow).unwrap()).err().map(|e| e.to_string()).unwrap_or_default()
    };

    let e = refused(config("http://127.0.0.1:9/pages", SECRET_ENV), &[]);
    assert!(e.starts_with("paging.webhook_url `http://127.0.0.1:9/pages`: ") && e.contains("127.0.0.1"), "{e}");
    assert!(
        Webhook::new(&config("http://127.0.0.1:9/pages", SECRET_ENV), EgressAllow::parse(&["127.0.0.1:9"]).unwrap())
            .is_ok(),
        "an allow entry opens it"
    );
    let e = refused(config("ftp://hooks.example.com/pages", SECRET_ENV), &[]);
    assert!(e.contains("only http and https URLs are allowed"), "{e}");
    let e = refused(config("https://hooks.example.com/pages", "TOLLGATE_TEST_PAGING_SECRET_UNSET"), &[]);
    assert_eq!(
        e,
        "paging.webhook_url is set but its signing secret is not: set the environment variable TOLLGATE_TEST_PAGING_SECRET_UNSET (paging.webhook_secret_env)"
    );
}
