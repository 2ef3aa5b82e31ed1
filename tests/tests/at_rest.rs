//! Nothing readable at rest: a marker string that passes through a run's parameters, inputs,
//! outputs, events, a model's prompt and answer (the step's turn journal too), a provider's API key in the secret store, human
//! request and decision — through an ingested document, its full-text index and the `research`
//! step that finds it, a memory note (its key and text), a notification — and through triggers: a webhook's body and delivery id (fire history,
//! dedup claim, trigger state) and an uploaded file — appears nowhere in a raw dump of the
//! SQLite files or of every Redis key and value the deployment wrote.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tollgate::config::Config;
use tollgate_connectors::docs::{DocStore, Format, SourceDoc};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::llm::ProviderConfig;
use tollgate_engine::run::{Decision, StepStatus};
use tollgate_engine::trigger::signature::sign_hex;
use tollgate_tests::harness::{TestServer, TestSystem, embedded, embedded_with, redis_url, redis_with};
use tollgate_tests::triggers::Hooked;

const MARKER: &str = "ZEBRA-MARKER-7731";

const SPEC: &str = r#"
id: marker-flow
owner: ops
parameters:
  secret: { type: string, required: true }
steps:
  - { id: echo, type: code, script: "return { again: input.s + '!', list: [input.s] }", inputs: { s: "${{ params.secret }}" } }
  - { id: ask, type: llm, needs: [echo], prompt: "Repeat {{ params.secret }} back." }
  - { id: tell, type: event, needs: [echo], emit: { name: marker.seen, payload: { s: "${{ params.secret }}" } } }
  - { id: hear, type: event, needs: [tell], wait: { name: marker.seen, timeout: 1m, correlate: "event.payload.s == params.secret" } }
  - { id: ok, type: approval, needs: [ask, hear], question: "Release ${{ steps.echo.output.again }}?" }
  - { id: find, type: research, collection: kb, query: "${{ params.secret }}", top_k: 1 }
  - { id: remember, type: platform, needs: [echo], action: memory.write, with: { key: "${{ params.secret }}", text: "note ${{ params.secret }}", tags: [vault] } }
  - { id: recall, type: platform, needs: [remember], action: memory.list, with: { tag: vault } }
  - { id: shout, type: platform, needs: [echo], action: notify, with: { to: ann, subject: "about ${{ params.secret }}", message: "${{ steps.echo.output.again }}" } }
"#;

/// A model server that answers with the prompt it was sent (so the marker is in the answer).
async fn echo_model() -> TestServer {
    TestServer::start(Arc::new(|_, hit| {
        let sent: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
        let text = sent["messages"][0]["content"].clone();
        let reply = json!({"model": "m", "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 5}});
        (StatusCode::OK, vec![], reply.to_string(), Duration::ZERO)
    }))
    .await
}

fn with_model(c: &mut Config, model: &TestServer) {
    let p: ProviderConfig = serde_json::from_value(
        json!({"kind": "openai", "base_url": model.url("/v1"), "model": "m", "api_key_secret": "key"}),
    )
    .unwrap();
    c.llm.providers.insert("local".into(), p);
}

/// Drives the marker through a run, and creates a user whose email holds it; returns the
/// user's API token (which must not be at rest either).
async fn drive_marker_run(sys: &TestSystem) -> String {
    let user = sys
        .t()
        .users
        .add("ann", tollgate_engine::users::Role::Operator, vec!["ops".into()], Some(format!("{MARKER}@example.com")))
        .await
        .unwrap();
    sys.t().engine.store.put_secret(&OwnerId::from("ops"), "key", &format!("sk-{MARKER}")).await.unwrap();
    let docs = DocStore::new(sys.t().engine.store.clone());
    let note = format!("# Vault\n\nThe vault code word is {MARKER}; keep it private.\n");
    docs.ingest(
        &OwnerId::from("ops"),
        "kb",
        vec![SourceDoc { source: "kb-note.md".into(), format: Format::Markdown, bytes: note.into_bytes() }],
    )
    .await
    .unwrap();
    let run = sys.start(SPEC, json!({ "secret": MARKER })).await;
    let v = sys.settle(&run).await;
    let StepStatus::WaitingHuman { request } = TestSystem::step(&v, "ok").status.clone() else { panic!("not waiting") };
    sys.t().decide(&request, Decision::Approve, "ann", Some(format!("fine, {MARKER}"))).await.unwrap();
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded");
    // The marker really went through the run (so its absence at rest means something).
    assert_eq!(TestSystem::step(&v, "echo").output.as_ref().unwrap()["again"], format!("{MARKER}!"));
    assert_eq!(TestSystem::step(&v, "ask").output.as_ref().unwrap()["text"], format!("Repeat {MARKER} back."));
    let found = TestSystem::step(&v, "find").output.as_ref().unwrap();
    assert_eq!(found["hits"][0]["source"], "kb-note.md", "{found}");
    assert!(found["hits"][0]["text"].as_str().unwrap().contains(MARKER), "{found}");
    assert_eq!(
        TestSystem::step(&v, "hear").output.as_ref().unwrap()["payload"]["s"],
        MARKER,
        "the event carried the marker"
    );
    assert_eq!(
        TestSystem::step(&v, "recall").output.as_ref().unwrap()["notes"][0]["text"],
        format!("note {MARKER}"),
        "the memory note held the marker"
    );
    let told = sys.t().engine.store.notifications("ann", 5).await.unwrap();
    assert_eq!(told[0].subject, format!("about {MARKER}"), "the notification held the marker");
    user.token.to_string()
}

const HOOKED: &str = r#"
id: marker-hooks
owner: ops
parameters:
  secret: { type: string, required: true }
steps:
  - { id: echo, type: code, script: "return { again: input.s + '!' }", inputs: { s: "${{ params.secret }}" } }
triggers:
  - { id: hook, webhook: {}, params: { secret: "${{ payload.body.secret }}" } }
  - { id: files, upload: {}, params: { secret: "${{ payload.file.text }}" } }
"#;

/// The marker through a webhook (body and delivery id, twice: a started and a duplicate
/// fire) and an upload (file content and name); then the triggers stop, saving their state.
async fn drive_marker_fires(sys: TestSystem) -> TestSystem {
    let mut h = Hooked::start(sys, HOOKED).await;
    let body = serde_json::to_vec(&json!({ "secret": MARKER })).unwrap();
    let sig = sign_hex(&h.secret("hook").await, &body);
    let client = reqwest::Client::new();
    for expected in [202, 200] {
        let resp = client
            .post(h.url("hook"))
            .header("X-Signature-256", &sig)
            .header("Idempotency-Key", format!("id-{MARKER}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), expected);
    }
    let boundary = "b0undary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{MARKER}.txt\"\r\n\r\n{MARKER} in a file\r\n--{boundary}--\r\n"
    );
    let resp = client
        .post(h.url("files"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    for run in h.sys.t().engine.store.list_runs().await.unwrap() {
        let v = h.sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded");
    }
    let history = h.history().await;
    assert_eq!(history.len(), 3);
    // The marker really went through the fires (so its absence at rest means something).
    assert!(history.iter().any(|f| f.key.contains(MARKER)));
    h.stop_triggers().await;
    std::mem::replace(&mut h.sys, embedded().await)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_files_hold_no_plaintext() {
    let model = echo_model().await;
    let mut sys = drive_marker_fires(embedded_with(|c| with_model(c, &model)).await).await;
    let token = drive_marker_run(&sys).await;
    assert!(
        model.hits()[0].headers["authorization"].to_str().unwrap().contains(MARKER),
        "the key went through the secret store"
    );
    sys.stop().await; // flush and close the SQLite files
    // SQLite may still be removing its -wal/-shm files as the last connection closes: read
    // until one pass sees every listed file.
    let files = loop {
        let mut files = Vec::new();
        let mut vanished = false;
        for entry in std::fs::read_dir(sys.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            match std::fs::read(&path) {
                Ok(bytes) => files.push((path, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => vanished = true,
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
        if !vanished {
            break files;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut all = Vec::new();
    for (path, bytes) in files {
        assert!(!contains(&bytes, MARKER.as_bytes()), "{} holds the marker in plaintext", path.display());
        assert!(!contains(&bytes, token.as_bytes()), "{} holds an API token", path.display());
        all.extend(bytes);
    }
    // The scan does see plaintext where there is some: ids are stored in the clear by design.
    assert!(contains(&all, b"marker-flow"), "the raw scan found not even the workflow id");
    assert!(contains(&all, b"marker-hooks"), "the raw scan found not even the triggered workflow's id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_plaintext() {
    let model = echo_model().await;
    let mut sys = drive_marker_fires(redis_with(|c| with_model(c, &model)).await).await;
    let token = drive_marker_run(&sys).await;
    sys.stop().await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("{}*", sys.config.namespace);
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap();
    assert!(keys.len() > 5, "expected the deployment's keys under {pattern}, got {keys:?}");
    let mut all = Vec::new();
    for key in &keys {
        assert!(!key.contains(MARKER), "key {key} holds the marker");
        // Read each value whole by its type (DUMP would compress, hiding plaintext from the scan).
        let ty: String = redis::cmd("TYPE").arg(key).query_async(&mut conn).await.unwrap();
        let cmd = match ty.as_str() {
            "string" => redis::cmd("GET").arg(key).clone(),
            "list" => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).clone(),
            "hash" => redis::cmd("HGETALL").arg(key).clone(),
            "set" => redis::cmd("SMEMBERS").arg(key).clone(),
            "zset" => redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).clone(),
            "stream" => redis::cmd("XRANGE").arg(key).arg("-").arg("+").clone(),
            "none" => continue, // expired meanwhile
            other => panic!("key {key} has unexpected type {other}"),
        };
        let value: redis::Value = cmd.query_async(&mut conn).await.unwrap();
        let mut bytes = Vec::new();
        flatten(&value, &mut bytes);
        assert!(!contains(&bytes, MARKER.as_bytes()), "value of {key} ({ty}) holds the marker in plaintext");
        assert!(!contains(&bytes, token.as_bytes()), "value of {key} ({ty}) holds an API token");
        all.extend(bytes);
    }
    assert!(contains(&all, b"marker-flow"), "the raw scan found not even the workflow id");
    assert!(keys.iter().any(|k| k.contains("trig/marker-hooks/fire/")), "the fire history is among the keys");
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
