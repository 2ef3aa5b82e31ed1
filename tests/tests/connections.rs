//! Connections and the `connector` step against real servers on 127.0.0.1: an SMTP sink
//! (aiosmtpd), dovecot, and a local HTTP API with an OAuth2 token endpoint that counts the
//! tokens it issues.
//!
//! - a run whose `email.send` attaches an upstream output: the mail arrives at the sink with
//!   the attachment's bytes; the step retried (its check fails the first attempt) mails once;
//!   the handler re-dispatched with a new attempt (an outcome lost) mails once more never;
//! - `email.fetch` returns dovecot's messages (the newest `limit`, parsed, attachments sealed as
//!   blobs that an `email.send` forwards); those blobs expire after `attachment_ttl` on both
//!   backends, and forwarding an expired one fails `attachment_not_found`;
//! - `http.request` with bearer, basic and OAuth2 (a token cached across calls, fetched again
//!   after a 401 and after it expires), and a path that tries to leave the base URL is refused;
//! - OAuth2 `client_secret_post` against a token endpoint that takes only that method (the
//!   secret form-encoded in the body, no `Authorization`); each method refused by the other
//!   endpoint, and a redirect that would carry the secret to another origin refused;
//! - credentials appear nowhere in a raw dump of the store, and `connections test` with a wrong
//!   password says so; on Redis too, every key and value is read raw.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use serde_json::json;
use tollgate_connectors::connections::{ConnectionError, Connections, HttpRequest};
use tollgate_connectors::imap::parse_mail;
use tollgate_connectors::steps::ConnectorHandler;
use tollgate_engine::connections::{Connection, ConnectionKind};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::ids::{OwnerId, RunId, StepId};
use tollgate_engine::spec::parse_yaml;
use tollgate_engine::step::{StepHandler, StepInvocation};
use tollgate_tests::dovecot::{self, Dovecot};
use tollgate_tests::harness::{TestSystem, embedded, embedded_with, wait_for};
use tollgate_tests::smtp_sink::SmtpSink;

const OWNER: &str = "ops";

fn settings(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

async fn add(sys: &TestSystem, name: &str, kind: ConnectionKind, pairs: &[(&str, String)], credential: Option<&str>) {
    let c = Connection::from_settings(name, kind, &settings(pairs)).unwrap_or_else(|e| panic!("{name}: {e}"));
    sys.t().engine.store.put_connection(&OwnerId::from(OWNER), &c, credential).await.unwrap();
}

async fn add_sink(sys: &TestSystem, sink: &SmtpSink) {
    add(
        sys,
        "office_mail",
        ConnectionKind::Smtp,
        &[
            ("host", "127.0.0.1".into()),
            ("port", sink.port.to_string()),
            ("security", "none".into()),
            ("from", "Ops <ops@example.test>".into()),
        ],
        None,
    )
    .await;
}

/// The messages in the sink, parsed.
fn delivered(sink: &SmtpSink) -> Vec<tollgate_connectors::imap::ParsedMail> {
    sink.messages().iter().map(|m| parse_mail(m.as_bytes()).expect("the sink holds a parseable message")).collect()
}

const SEND: &str = r#"
id: send-report
owner: ops
gates: { policy: { actions: { email: allow } } }
parameters:
  to: { type: string, required: true }
steps:
  - { id: make, type: code, script: "return { csv: 'client,fee\\nAcme,1200\\n' }" }
  - id: mail
    type: connector
    needs: [make]
    connection: office_mail
    action: email.send
    retry: { max_attempts: 2, on: [check_failed], backoff: { initial: 10ms, max: 10ms } }
    checks: { on_block: fail, rules: [{ name: sent_before, expr: "output.already_sent" }] }
    with:
      to: "${{ params.to }}"
      cc: [audit@example.test]
      subject: "Fees report"
      body: "The report is attached."
      attachments: [{ filename: fees.csv, content_type: text/csv, content: "${{ steps.make.output.csv }}" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_mails_an_upstream_output_once_even_when_the_send_is_retried() {
    let sink = SmtpSink::start();
    let sys = embedded().await;
    add_sink(&sys, &sink).await;
    let run = sys.start(SEND, json!({ "to": "client@example.test" })).await;
    let v = sys.settle(&run).await;
    assert_eq!(
        v.state.status.label(),
        "succeeded",
        "{:?} {:?}",
        TestSystem::step(&v, "make").error,
        TestSystem::step(&v, "mail").error
    );
    let step = TestSystem::step(&v, "mail");
    // The first attempt sent and failed its check; the retry found the send record.
    assert_eq!(step.attempts.len(), 2, "{:?}", step.attempts);
    let mails = delivered(&sink);
    assert_eq!(mails.len(), 1, "one mail for two attempts");
    let mail = &mails[0];
    assert_eq!(mail.subject.as_deref(), Some("Fees report"));
    assert_eq!(mail.from.as_deref(), Some("ops@example.test"));
    assert_eq!(mail.to, vec!["client@example.test"]);
    assert_eq!(mail.text.as_deref().map(str::trim), Some("The report is attached."));
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(mail.attachments[0].filename.as_deref(), Some("fees.csv"));
    assert_eq!(mail.attachments[0].content_type, "text/csv");
    assert_eq!(mail.attachments[0].bytes, b"client,fee\nAcme,1200\n");
    let out = step.output.as_ref().unwrap();
    assert_eq!(out["already_sent"], true);
    assert_eq!(out["message_id"].as_str().map(|id| id.trim_matches(['<', '>']).to_string()), mail.message_id.clone());

    // The attempt's outcome lost and the step dispatched again (a new attempt, the same
    // idempotency key): the handler returns the recorded send and mails nothing.
    let handler =
        ConnectorHandler::new(Arc::new(Connections::new(sys.t().engine.store.clone(), EgressAllow::default())));
    let spec = parse_yaml(SEND).unwrap();
    let (_, mail_step) = spec.step_by_id(&StepId::new("mail")).unwrap();
    let meta = sys.t().engine.store.run_meta(&run).await.unwrap();
    let input = sys.t().engine.store.step_input(&meta.workflow, &run, &StepId::new("mail"), 1).await.unwrap().unwrap();
    let egress = EgressAllow::default();
    let again = handler
        .run(StepInvocation {
            workflow: &meta.workflow,
            run: &run,
            step: mail_step,
            attempt: 3,
            inputs: &input,
            idempotency_key: format!("{run}.mail"),
            timeout: Duration::from_secs(30),
            egress: &egress,
        })
        .await
        .unwrap();
    assert_eq!(again.output["already_sent"], true);
    assert_eq!(again.output["message_id"], out["message_id"]);
    assert_eq!(delivered(&sink).len(), 1, "a re-dispatched send mails nothing");

    // A send record left `sending` by an attempt that died mid-transaction: the next attempt
    // sends again, with the same Message-ID.
    let other = RunId::new("run-died-mid-send");
    let key = format!("{other}.mail");
    let sending = tollgate_engine::store::EmailSendRecord::Sending { attempt: 1, message_id: "x".into(), at_ms: 0 };
    assert!(sys.t().engine.store.begin_email_send(&meta.workflow, &key, &sending).await.unwrap().is_none());
    let resent = handler
        .run(StepInvocation {
            workflow: &meta.workflow,
            run: &other,
            step: mail_step,
            attempt: 2,
            inputs: &input,
            idempotency_key: key.clone(),
            timeout: Duration::from_secs(30),
            egress: &egress,
        })
        .await
        .unwrap();
    assert_eq!(resent.output["already_sent"], false);
    let expected =
        tollgate_connectors::connections::smtp::message_id_for(&meta.workflow, &key, "Ops <ops@example.test>");
    assert_eq!(resent.output["message_id"], expected);
    assert_eq!(delivered(&sink).len(), 2);
}

fn raw_mail(subject: &str, attachment: Option<(&str, &str)>) -> String {
    let head = format!(
        "From: Lead <lead@example.test>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{}@example.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n",
        dovecot::USER,
        ulid::Ulid::generate()
    );
    match attachment {
        None => format!("{head}Content-Type: text/plain\r\n\r\nAbout {subject}.\r\n"),
        Some((name, b64)) => format!(
            "{head}Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nAbout {subject}.\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b1--\r\n"
        ),
    }
}

const FETCH: &str = r#"
id: read-inbox
owner: ops
gates: { policy: { actions: { email: allow } } }
steps:
  - { id: fetch, type: connector, connection: inbox, action: email.fetch, with: { search: ALL, limit: 2 } }
  - id: forward
    type: connector
    needs: [fetch]
    connection: office_mail
    action: email.send
    with:
      to: [archive@example.test]
      subject: "Fwd: ${{ steps.fetch.output.messages[1].subject }}"
      body: "${{ steps.fetch.output.messages[1].text }}"
      attachments: "${{ steps.fetch.output.messages[1].attachments }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_fetch_reads_dovecot_and_its_attachments_can_be_forwarded() {
    let imap = Dovecot::start();
    let sink = SmtpSink::start();
    imap.deliver_to_maildir(raw_mail("Oldest", None).as_bytes());
    imap.deliver_to_maildir(raw_mail("Middle", None).as_bytes());
    imap.deliver_to_maildir(raw_mail("Newest", Some(("brief.pdf", "JVBERi0xLjQK"))).as_bytes());
    let sys = embedded().await;
    add(
        &sys,
        "inbox",
        ConnectionKind::Imap,
        &[
            ("host", "127.0.0.1".into()),
            ("port", imap.port.to_string()),
            ("tls", "false".into()),
            ("user", dovecot::USER.into()),
        ],
        Some(dovecot::PASSWORD),
    )
    .await;
    add_sink(&sys, &sink).await;
    let run = sys.start(FETCH, json!({})).await;
    let v = sys.settle(&run).await;
    assert_eq!(
        v.state.status.label(),
        "succeeded",
        "{:?} {:?}",
        TestSystem::step(&v, "fetch").error,
        TestSystem::step(&v, "forward").error
    );
    let out = TestSystem::step(&v, "fetch").output.clone().unwrap();
    assert_eq!(out["count"], 2, "{out}");
    let subjects: Vec<&str> =
        out["messages"].as_array().unwrap().iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["Middle", "Newest"], "the newest two, oldest first");
    let attachment = &out["messages"][1]["attachments"][0];
    assert_eq!((attachment["filename"].as_str(), attachment["size"].as_u64()), (Some("brief.pdf"), Some(9)));
    // The attachment went on as a stored blob, bytes intact.
    let mails = delivered(&sink);
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].subject.as_deref(), Some("Fwd: Newest"));
    assert_eq!(mails[0].attachments[0].filename.as_deref(), Some("brief.pdf"));
    assert_eq!(mails[0].attachments[0].bytes, b"%PDF-1.4\n");
    // Read-only: a second fetch of the unseen messages still finds all three.
    let c = Connections::new(sys.t().engine.store.clone(), EgressAllow::default());
    let unseen = c.fetch_emails(&OwnerId::from(OWNER), "inbox", "INBOX", "UNSEEN", 10).await.unwrap();
    assert_eq!(unseen.len(), 3);
}

const FETCH_ONLY: &str = r#"
id: read-attachments
owner: ops
gates: { policy: { actions: { email: allow } } }
steps:
  - { id: fetch, type: connector, connection: inbox, action: email.fetch, with: { search: ALL, limit: 1 } }
"#;

/// Fetch dovecot's one message through `sys` (its `attachment_ttl` set by the caller); the
/// reference of its attachment's blob.
async fn fetch_attachment(sys: &TestSystem, imap: &Dovecot) -> String {
    add(
        sys,
        "inbox",
        ConnectionKind::Imap,
        &[
            ("host", "127.0.0.1".into()),
            ("port", imap.port.to_string()),
            ("tls", "false".into()),
            ("user", dovecot::USER.into()),
        ],
        Some(dovecot::PASSWORD),
    )
    .await;
    let run = sys.start(FETCH_ONLY, json!({})).await;
    let v = sys.settle(&run).await;
    let step = TestSystem::step(&v, "fetch");
    assert_eq!(step.status.label(), "succeeded", "{:?}", step.error);
    let attachment = &step.output.as_ref().unwrap()["messages"][0]["attachments"][0];
    assert_eq!(attachment["filename"], "brief.pdf");
    attachment["blob"].as_str().expect("the attachment's blob reference").to_string()
}

/// Attachments fetched by `email.fetch` are kept for `attachment_ttl`, like an IMAP trigger's:
/// with an hour, the blob is there (on Redis with the key's own expiry); with a second, it is
/// gone once that second has passed — from the backend itself — and forwarding it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_attachments_expire_after_the_attachment_ttl_on_both_backends() {
    let imap = Dovecot::start();
    imap.deliver_to_maildir(raw_mail("With a brief", Some(("brief.pdf", "JVBERi0xLjQK"))).as_bytes());
    let wf = tollgate_engine::ids::WorkflowId::new("read-attachments");
    let hour = |c: &mut tollgate::config::Config| c.attachment_ttl = Duration::from_secs(3600);
    let second = |c: &mut tollgate::config::Config| c.attachment_ttl = Duration::from_secs(1);
    for (kept, gone) in [
        (embedded_with(hour).await, embedded_with(second).await),
        (tollgate_tests::harness::redis_with(hour).await, tollgate_tests::harness::redis_with(second).await),
    ] {
        let blob = fetch_attachment(&kept, &imap).await;
        assert_eq!(kept.t().engine.store.blob(&wf, &blob).await.unwrap().as_deref(), Some(&b"%PDF-1.4\n"[..]));
        if kept.config.backend == tollgate::config::BackendKind::Redis {
            let client = redis::Client::open(tollgate_tests::harness::redis_url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let key = format!("{}:{}", kept.config.namespace, tollgate_engine::store::keys::fire_blob(&wf, &blob));
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
            assert!(pttl > 0 && pttl <= 3_600_000, "{key} expires in {pttl} ms");
        }

        let blob = fetch_attachment(&gone, &imap).await;
        let store = gone.t().engine.store.clone();
        let key = tollgate_engine::store::keys::fire_blob(&wf, &blob);
        wait_for("the attachment's blob to expire", Duration::from_secs(30), || async {
            store.blob(&wf, &blob).await.unwrap().is_none()
        })
        .await;
        assert!(store.backend().get(&key).await.unwrap().is_none(), "gone from the backend itself");
        let forward = format!(
            "id: read-attachments\nowner: ops\nsteps:\n  - {{ id: send, type: connector, connection: office_mail, action: email.send, with: {{ to: [a@example.test], subject: Fwd, body: x, attachments: [{{ filename: brief.pdf, blob: \"{blob}\" }}] }} }}\n"
        );
        add(
            &gone,
            "office_mail",
            ConnectionKind::Smtp,
            &[
                ("host", "127.0.0.1".into()),
                ("port", "25".into()),
                ("security", "none".into()),
                ("from", "ops@example.test".into()),
            ],
            None,
        )
        .await;
        let run = gone.start(&forward, json!({})).await;
        let v = gone.settle(&run).await;
        let error = TestSystem::step(&v, "send").error.clone().unwrap();
        assert_eq!(error.code, "attachment_not_found", "{error}");
        assert!(error.message.contains("expired"), "{error}");
    }
}

/// The API and its token endpoint: tokens `tok-1`, `tok-2`… (each issued counted), valid until
/// revoked; `/v1/...` echoes the request if its `Authorization` is a live token, the bearer
/// `static-token` or basic `svc:pw`.
#[derive(Clone, Default)]
struct Api {
    issued: Arc<AtomicUsize>,
    revoked: Arc<Mutex<Vec<String>>>,
    expires_in: Arc<AtomicUsize>,
    /// Tokens the `client_secret_post` endpoint issued.
    post_issued: Arc<AtomicUsize>,
}

async fn token(State(api): State<Api>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let basic = format!("Basic {}", base64_encode("tollgate:client-secret"));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str())
        || !body.starts_with("grant_type=client_credentials")
    {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "invalid_client" })));
    }
    let n = api.issued.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::OK,
        axum::Json(
            json!({ "access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": api.expires_in.load(Ordering::SeqCst), "scope": body }),
        ),
    )
}

/// The client secret of the `client_secret_post` connection: characters the form encoding must
/// carry intact.
const POST_SECRET: &str = "s3cr&t=+ /ü%";

/// A token endpoint that takes only `client_secret_post` (RFC 6749 §2.3.1): the client's id and
/// secret in the form body, and no `Authorization` header (one method per request).
async fn token_post(
    State(api): State<Api>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> impl IntoResponse {
    let field = |k: &str| form.get(k).map(String::as_str);
    let ok = headers.get("authorization").is_none()
        && field("grant_type") == Some("client_credentials")
        && field("client_id") == Some("tollgate")
        && field("client_secret") == Some(POST_SECRET);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "invalid_client", "error_description": "client_secret_post only" })),
        );
    }
    api.post_issued.fetch_add(1, Ordering::SeqCst);
    let n = api.issued.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::OK,
        axum::Json(json!({ "access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 3600 })),
    )
}

/// A token endpoint that has moved to another origin (`localhost` for `127.0.0.1`), keeping the
/// method and body (307).
async fn token_moved(headers: HeaderMap) -> impl IntoResponse {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().replace("127.0.0.1", "localhost");
    (StatusCode::TEMPORARY_REDIRECT, [("location", format!("http://{host}/oauth/token-post"))])
}

async fn echo(State(api): State<Api>, uri: Uri, headers: HeaderMap, body: String) -> impl IntoResponse {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let live = auth.strip_prefix("Bearer tok-").is_some_and(|_| !api.revoked.lock().unwrap().contains(&auth));
    if !(live || auth == "Bearer static-token" || auth == format!("Basic {}", base64_encode("svc:pw"))) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "unauthorized" })));
    }
    // A label, not the header itself (the gates would redact a token in the output).
    let auth = match auth.strip_prefix("Bearer ") {
        Some(token) => token.to_string(),
        None => "basic".into(),
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("");
    (
        StatusCode::OK,
        axum::Json(
            json!({ "path": uri.path(), "query": uri.query(), "auth": auth, "idempotency_key": key, "body": body }),
        ),
    )
}

fn base64_encode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= chunk.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

async fn api_server(api: Api) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/token-post", post(token_post))
        .route("/oauth/moved", post(token_moved))
        .route("/v1/{*rest}", any(echo))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn add_apis(sys: &TestSystem, addr: std::net::SocketAddr) {
    let base = format!("http://{addr}/v1");
    add(
        sys,
        "crm_bearer",
        ConnectionKind::Http,
        &[("base_url", base.clone()), ("auth", "bearer".into())],
        Some("static-token"),
    )
    .await;
    add(
        sys,
        "crm_basic",
        ConnectionKind::Http,
        &[("base_url", base.clone()), ("auth", "basic".into()), ("user", "svc".into())],
        Some("pw"),
    )
    .await;
    let oauth = [
        ("base_url", base),
        ("auth", "oauth2".into()),
        ("token_url", format!("http://{addr}/oauth/token")),
        ("client_id", "tollgate".into()),
        ("scope", "orders read".into()),
    ];
    add(sys, "crm", ConnectionKind::Http, &oauth, Some("client-secret")).await;
}

const HTTP: &str = r#"
id: call-crm
owner: ops
egress: { allow: ["127.0.0.1"] }
steps:
  - { id: bearer, type: connector, connection: crm_bearer, action: http.request, with: { path: /orders/7 } }
  - { id: basic, type: connector, connection: crm_basic, action: http.request, with: { method: POST, path: orders, json: { n: 1 } } }
  - { id: oauth_a, type: connector, connection: crm, action: http.request, with: { path: /orders, query: { status: open, page: 2 } } }
  - { id: oauth_b, type: connector, connection: crm, needs: [oauth_a], action: http.request, with: { path: /orders/8 } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_authenticates_with_bearer_basic_and_a_cached_oauth2_token() {
    let api = Api::default();
    api.expires_in.store(3600, Ordering::SeqCst);
    let addr = api_server(api.clone()).await;
    let sys = embedded().await;
    add_apis(&sys, addr).await;
    let run = sys.start(HTTP, json!({})).await;
    let v = sys.settle(&run).await;
    for id in ["bearer", "basic", "oauth_a", "oauth_b"] {
        assert_eq!(TestSystem::step(&v, id).status.label(), "succeeded", "{id}: {:?}", TestSystem::step(&v, id).error);
    }
    let body = |id: &str| TestSystem::step(&v, id).output.as_ref().unwrap()["body"].clone();
    assert_eq!(body("bearer")["path"], "/v1/orders/7");
    assert_eq!(body("bearer")["idempotency_key"], format!("{run}.bearer"));
    assert_eq!((&body("basic")["path"], &body("basic")["body"]), (&json!("/v1/orders"), &json!("{\"n\":1}")));
    assert_eq!(body("oauth_a")["query"], "page=2&status=open");
    assert_eq!(body("oauth_a")["auth"], "tok-1");
    assert_eq!(body("oauth_b")["auth"], "tok-1", "the token is cached across steps");
    assert_eq!(api.issued.load(Ordering::SeqCst), 1);

    // Another process (here: another `Connections`) has a cache of its own: one token, then
    // that token for every call while it lives.
    let c = Connections::new(sys.t().engine.store.clone(), EgressAllow::default());
    let (owner, local) = (OwnerId::from(OWNER), EgressAllow::parse(&["127.0.0.1"]).unwrap());
    let get = |path: &'static str| HttpRequest { method: "GET", path, ..Default::default() };
    for _ in 0..3 {
        let out = c.http_request(&owner, "crm", &get("/x"), &local).await.unwrap();
        assert_eq!(out["body"]["auth"], "tok-2");
    }
    assert_eq!(api.issued.load(Ordering::SeqCst), 2, "one token for every call while it lives");
    // Revoked: the API answers 401, one new token is fetched and the request sent again.
    api.revoked.lock().unwrap().push("Bearer tok-2".into());
    let out = c.http_request(&owner, "crm", &get("/x"), &local).await.unwrap();
    assert_eq!((out["body"]["auth"].as_str(), api.issued.load(Ordering::SeqCst)), (Some("tok-3"), 3));
    // A token about to expire is replaced before it is used.
    api.expires_in.store(1, Ordering::SeqCst);
    api.revoked.lock().unwrap().push("Bearer tok-3".into());
    c.http_request(&owner, "crm", &get("/x"), &local).await.unwrap();
    assert_eq!(api.issued.load(Ordering::SeqCst), 4);
    wait_for("the short-lived token to be refreshed", Duration::from_secs(30), || async {
        let out = c.http_request(&owner, "crm", &get("/x"), &local).await.unwrap();
        out["body"]["auth"] == "tok-5"
    })
    .await;
    assert_eq!(api.issued.load(Ordering::SeqCst), 5, "expiry fetched one token, not one per call");

    // The path stays under the base URL; egress still applies.
    let err = c.http_request(&owner, "crm_bearer", &get("//evil.test/x"), &local).await.unwrap_err();
    assert!(matches!(err, ConnectionError::Input(_)), "{err}");
    let err =
        c.http_request(&owner, "crm_bearer", &get("/x"), &EgressAllow::default()).await.unwrap_err().into_step_error();
    assert_eq!(err.code, "egress_denied", "{err}");
    // A wrong client secret: a clear refusal naming the token endpoint and the client.
    add(
        &sys,
        "crm_wrong",
        ConnectionKind::Http,
        &[
            ("base_url", format!("http://{addr}/v1")),
            ("auth", "oauth2".into()),
            ("token_url", format!("http://{addr}/oauth/token")),
            ("client_id", "tollgate".into()),
        ],
        Some("not-it"),
    )
    .await;
    let err = c.http_request(&owner, "crm_wrong", &get("/x"), &local).await.unwrap_err();
    assert!(matches!(err, ConnectionError::Refused(_)), "{err}");
    assert!(err.to_string().contains("answered HTTP 401 Unauthorized: invalid_client (client `tollgate`)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_secret_post_sends_the_client_credentials_in_the_body() {
    let api = Api::default();
    let addr = api_server(api.clone()).await;
    let sys = embedded().await;
    let oauth = |token_path: &str, client_auth: &str| {
        [
            ("base_url", format!("http://{addr}/v1")),
            ("auth", "oauth2".into()),
            ("token_url", format!("http://{addr}{token_path}")),
            ("client_id", "tollgate".into()),
            ("client_auth", client_auth.into()),
        ]
    };
    add(&sys, "crm_post", ConnectionKind::Http, &oauth("/oauth/token-post", "client_secret_post"), Some(POST_SECRET))
        .await;
    // A step through it: the token endpoint took the body's credentials.
    let spec = "id: post-auth\nowner: ops\negress: { allow: [\"127.0.0.1\"] }\nsteps:\n  - { id: get, type: connector, connection: crm_post, action: http.request, with: { path: /orders/9 } }\n";
    let run = sys.start(spec, json!({})).await;
    let v = sys.settle(&run).await;
    let step = TestSystem::step(&v, "get");
    assert_eq!(step.status.label(), "succeeded", "{:?}", step.error);
    assert_eq!(step.output.as_ref().unwrap()["body"]["auth"], "tok-1");
    assert_eq!(api.post_issued.load(Ordering::SeqCst), 1);
    // `connections test` reaches what the service's `[egress] allow` opens.
    let c = Connections::new(sys.t().engine.store.clone(), EgressAllow::parse(&["127.0.0.1"]).unwrap());
    let owner = OwnerId::from(OWNER);
    let said = c.test(&owner, "crm_post").await.unwrap();
    assert!(said.contains(&format!("a token from http://{addr}/oauth/token-post")), "{said}");
    assert_eq!(api.post_issued.load(Ordering::SeqCst), 2, "the test fetched a fresh token the same way");

    // Each endpoint refuses the other method: Basic at the body-only endpoint, body credentials
    // at the Basic-only one.
    let local = EgressAllow::parse(&["127.0.0.1"]).unwrap();
    let get = HttpRequest { method: "GET", path: "/x", ..Default::default() };
    add(
        &sys,
        "basic_at_post",
        ConnectionKind::Http,
        &oauth("/oauth/token-post", "client_secret_basic"),
        Some(POST_SECRET),
    )
    .await;
    add(
        &sys,
        "post_at_basic",
        ConnectionKind::Http,
        &oauth("/oauth/token", "client_secret_post"),
        Some("client-secret"),
    )
    .await;
    for name in ["basic_at_post", "post_at_basic"] {
        let err = c.http_request(&owner, name, &get, &local).await.unwrap_err();
        assert!(matches!(err, ConnectionError::Refused(_)), "{name}: {err}");
        assert!(err.to_string().contains("answered HTTP 401 Unauthorized: invalid_client"), "{name}: {err}");
        assert!(!err.to_string().contains(POST_SECRET), "{name}: {err}");
    }
    assert_eq!(api.post_issued.load(Ordering::SeqCst), 2);

    // A token endpoint redirecting (307) to another origin: the secret in the body is not re-sent.
    add(&sys, "moved", ConnectionKind::Http, &oauth("/oauth/moved", "client_secret_post"), Some(POST_SECRET)).await;
    let both = EgressAllow::parse(&["127.0.0.1", "localhost"]).unwrap();
    let err = c.http_request(&owner, "moved", &get, &both).await.unwrap_err().into_step_error();
    assert_eq!(err.code, "bad_redirect", "{err}");
    assert!(err.message.contains("the credentials in the request body are not sent there"), "{err}");
    assert_eq!(api.post_issued.load(Ordering::SeqCst), 2, "the other origin never saw the secret");
}

const MARKER: &str = "OKAPI-CREDENTIAL-5521";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stay_sealed_and_a_wrong_password_fails_the_test_clearly() {
    let imap = Dovecot::start();
    let mut sys = embedded().await;
    let c = Connections::new(sys.t().engine.store.clone(), EgressAllow::default());
    let owner = OwnerId::from(OWNER);
    let imap_settings = [
        ("host", "127.0.0.1".to_string()),
        ("port", imap.port.to_string()),
        ("tls", "false".into()),
        ("user", dovecot::USER.into()),
    ];
    add(&sys, "inbox", ConnectionKind::Imap, &imap_settings, Some(dovecot::PASSWORD)).await;
    let ok = c.test(&owner, "inbox").await.unwrap();
    assert!(ok.contains("logged in as ops@example.test"), "{ok}");
    add(&sys, "inbox_wrong", ConnectionKind::Imap, &imap_settings, Some(MARKER)).await;
    let err = c.test(&owner, "inbox_wrong").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectionError::Refused(_)), "{text}");
    assert!(
        text.starts_with(&format!(
            "imap 127.0.0.1:{} refused the login of `ops@example.test` for connection `inbox_wrong`",
            imap.port
        )),
        "{text}"
    );
    assert!(!text.contains(MARKER), "the error holds the password: {text}");
    let err = c.test(&owner, "nope").await.unwrap_err().to_string();
    assert_eq!(err, "owner `ops` has no connection `nope` (`tollgate connections add nope --owner ops --kind …`)");
    // A step through the refused connection fails with the same clear error, no secret in it.
    let run = sys
        .start(
            "id: r\nowner: ops\nsteps:\n  - { id: f, type: connector, connection: inbox_wrong, action: email.fetch }\n",
            json!({}),
        )
        .await;
    let v = sys.settle(&run).await;
    let error = TestSystem::step(&v, "f").error.clone().unwrap();
    assert_eq!(error.code, "connection_refused", "{error}");
    assert!(!error.message.contains(MARKER));

    // Every kind's credential, and nothing of it at rest.
    add(
        &sys,
        "mail",
        ConnectionKind::Smtp,
        &[("host", "smtp.example.test".into()), ("user", "ops".into()), ("from", "ops@example.test".into())],
        Some(MARKER),
    )
    .await;
    add(
        &sys,
        "api",
        ConnectionKind::Http,
        &[("base_url", "https://api.example.test".into()), ("auth", "bearer".into())],
        Some(MARKER),
    )
    .await;
    let listed: Vec<BTreeMap<&str, String>> =
        sys.t().engine.store.connections(&owner).await.unwrap().iter().map(Connection::describe).collect();
    assert_eq!(listed.len(), 4);
    assert!(!format!("{listed:?}").contains(MARKER));
    sys.stop().await;
    let mut scanned = 0;
    for entry in std::fs::read_dir(sys.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let Ok(bytes) = std::fs::read(&path) else { continue };
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{} holds a credential in plaintext",
            path.display()
        );
        scanned += bytes.len();
    }
    assert!(scanned > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_connection_credential() {
    let sink = SmtpSink::start();
    let mut sys = tollgate_tests::harness::redis().await;
    add_sink(&sys, &sink).await;
    add(
        &sys,
        "mail",
        ConnectionKind::Smtp,
        &[("host", "smtp.example.test".into()), ("user", "ops".into()), ("from", "ops@example.test".into())],
        Some(MARKER),
    )
    .await;
    add(
        &sys,
        "api",
        ConnectionKind::Http,
        &[
            ("base_url", "https://api.example.test".into()),
            ("auth", "oauth2".into()),
            ("token_url", "https://auth.example.test/t".into()),
            ("client_id", "c".into()),
        ],
        Some(MARKER),
    )
    .await;
    // A send, so the send record is among the keys too.
    let run = sys.start(SEND, json!({ "to": "client@example.test" })).await;
    assert_eq!(sys.settle(&run).await.state.status.label(), "succeeded");
    sys.stop().await;
    let client = redis::Client::open(tollgate_tests::harness::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", sys.config.namespace)).query_async(&mut conn).await.unwrap();
    assert!(
        keys.iter().any(|k| k.contains("conn/ops/mail"))
            && keys.iter().any(|k| k.contains("secret/ops/connection.mail")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.contains("/sent/")), "the send record is stored: {keys:?}");
    for key in &keys {
        let ty: String = redis::cmd("TYPE").arg(key).query_async(&mut conn).await.unwrap();
        let value: redis::Value = match ty.as_str() {
            "string" => redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap(),
            "list" => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query_async(&mut conn).await.unwrap(),
            "hash" => redis::cmd("HGETALL").arg(key).query_async(&mut conn).await.unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(key).query_async(&mut conn).await.unwrap(),
            "zset" => redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(&mut conn).await.unwrap(),
            "stream" => redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(&mut conn).await.unwrap(),
            _ => continue,
        };
        let mut bytes = Vec::new();
        flatten(&value, &mut bytes);
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "{key} holds a credential in plaintext");
    }
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
}

fn flatten(v: &redis::Value, out: &mut Vec<u8>) {
    match v {
        redis::Value::BulkString(b) => out.extend_from_slice(b),
        redis::Value::SimpleString(s) => out.extend_from_slice(s.as_bytes()),
        redis::Value::Array(items) | redis::Value::Set(items) => items.iter().for_each(|i| flatten(i, out)),
        redis::Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        _ => {}
    }
}
