//! Run receipts end to end: a run started and approved by real users over the admin API, with
//! an `api_call` step against a real local server whose answer the gate mesh redacts, exported
//! as a receipt over `GET /api/runs/{run}/receipt` and checked against the service key from
//! `GET /api/receipt/key`. Tampering with the receipt (any value of an entry, a removed or
//! moved entry, another key) fails naming the entry; tampering with the journal at rest is
//! found when it is read; values planted in parameters, outputs and comments appear in the
//! receipt only as placeholders.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate_engine::ids::RunId;
use tollgate_engine::receipt::{Receipt, ReceiptEntry, ReceiptKey, ReceiptSigner, verify};
use tollgate_engine::store::keys;
use tollgate_tests::harness::{Script, TestServer, TestSystem, embedded, redis, wait_for};

const ADMIN: &str = "admin-s3cret";

// Planted values: an email, an IBAN, a card number and an API-key-shaped secret.
const EMAIL: &str = "dana.whitlock@example.org";
const IBAN: &str = "DE89370400440532013000";
const CARD: &str = "4111111111111111";
const API_KEY: &str = "sk_live_Q3vT8mKp2XrL9wZc4NbY7hJd";
const OUTPUT_EMAIL: &str = "billing.contact@northwind-traders.com";

fn spec(server: &TestServer) -> String {
    format!(
        r#"
id: receipt-intake
owner: ops
parameters:
  client_email: {{ type: string, required: true }}
  iban: {{ type: string, required: true }}
  api_key: {{ type: string, required: true }}
egress: {{ allow: ["127.0.0.1"] }}
gates:
  policy:
    # The workflow lets email addresses through: its journal holds them in clear.
    actions: {{ email: allow }}
steps:
  - id: lookup
    type: api_call
    request: {{ url: "{}" }}
  - id: summarise
    type: code
    needs: [lookup]
    inputs: {{ who: "${{{{ params.client_email }}}}", iban: "${{{{ params.iban }}}}", key: "${{{{ params.api_key }}}}" }}
    script: "return {{ line: 'Pay ' + input.iban + ' for ' + input.who, auth: 'token ' + input.key }}"
  - id: review
    type: approval
    needs: [summarise]
    question: "Send the payment summary?"
    assignee: ann
  - id: done
    type: code
    needs: [review]
    script: "return 'sent'"
"#,
        server.url("/customer")
    )
}

async fn customer_server() -> TestServer {
    let body = json!({"contact": format!("write to {OUTPUT_EMAIL}"), "card": format!("card {CARD}"), "note": format!("STRIPE_KEY={API_KEY}")}).to_string();
    let script: Script = Arc::new(move |_, _| {
        (StatusCode::OK, vec![("content-type", "application/json".into())], body.clone(), Duration::ZERO)
    });
    TestServer::start(script).await
}

async fn listen(sys: &TestSystem) -> String {
    let app = tollgate::http::router(sys.t().clone(), ADMIN.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn add_user(http: &reqwest::Client, base: &str, name: &str) -> String {
    let res = http
        .post(format!("{base}/api/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": name, "groups": ["ops"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// A finished run started by bob and approved by ann; its receipt, the service key, the base URL.
async fn approved_run(sys: &TestSystem, server: &TestServer) -> (RunId, Value, ReceiptKey, String, String) {
    let base = listen(sys).await;
    let http = reqwest::Client::new();
    let bob = add_user(&http, &base, "bob").await;
    let ann = add_user(&http, &base, "ann").await;
    let started = http
        .post(format!("{base}/api/runs"))
        .bearer_auth(&bob)
        .json(&json!({"spec": spec(server), "params": {"client_email": EMAIL, "iban": IBAN, "api_key": API_KEY}}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let run = started.json::<Value>().await.unwrap()["run"].as_str().unwrap().to_string();
    let pending = |http: reqwest::Client, base: String, ann: String, run: String| async move {
        let list: Value =
            http.get(format!("{base}/api/requests")).bearer_auth(&ann).send().await.unwrap().json().await.unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["run"] == run.as_str())
            .map(|r| r["request"]["id"].as_str().unwrap().to_string())
    };
    wait_for("ann's approval request", Duration::from_secs(60), || {
        let f = pending(http.clone(), base.clone(), ann.clone(), run.clone());
        async move { f.await.is_some() }
    })
    .await;
    let request = pending(http.clone(), base.clone(), ann.clone(), run.clone()).await.unwrap();
    let decided = http
        .post(format!("{base}/api/requests/{request}/decision"))
        .bearer_auth(&ann)
        .json(&json!({"decision": "approve", "comment": format!("checked with {EMAIL}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200, "{}", decided.text().await.unwrap());
    let run = RunId(run);
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);

    let res = http.get(format!("{base}/api/runs/{run}/receipt")).bearer_auth(&ann).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"receipt-"));
    let receipt: Value = res.json().await.unwrap();
    let key: Value =
        http.get(format!("{base}/api/receipt/key")).bearer_auth(&ann).send().await.unwrap().json().await.unwrap();
    assert_eq!(key["algorithm"], "ed25519");
    let key: ReceiptKey = key["key"].as_str().unwrap().parse().unwrap();
    (run, receipt, key, base, ann)
}

fn record<'r>(receipt: &'r Value, kind: &str) -> Vec<&'r Value> {
    receipt["entries"].as_array().unwrap().iter().map(|e| &e["record"]).filter(|r| r["kind"] == kind).collect()
}

async fn a_receipt_of_a_real_run_verifies_and_names_every_alteration(sys: TestSystem) {
    let server = customer_server().await;
    let (run, receipt, key, base, ann) = approved_run(&sys, &server).await;
    assert_eq!(server.hits().len(), 1);

    let ok = verify(&receipt, Some(&key)).unwrap_or_else(|e| panic!("the receipt verifies: {e}"));
    assert_eq!(ok.run, run.as_str());
    let text = serde_json::to_string_pretty(&receipt).unwrap();
    verify(&serde_json::from_str(&text).unwrap(), Some(&key)).expect("as written to a file, it still verifies");

    // What the receipt records: the spec, who started and who decided, every attempt with its
    // timings, cost and gate verdict, and the journal's chain.
    let h = &receipt["header"];
    assert_eq!(
        (h["workflow"].as_str(), h["started_by"].as_str(), h["status"].as_str()),
        (Some("receipt-intake"), Some("bob"), Some("succeeded"))
    );
    assert_eq!(h["spec_digest"].as_str().unwrap().len(), 32);
    assert_eq!(h["entries"].as_u64().unwrap() as usize, receipt["entries"].as_array().unwrap().len());
    let approved = record(&receipt, "request.approved");
    assert_eq!((approved.len(), approved[0]["by"].as_str()), (1, Some("ann")));
    let succeeded = record(&receipt, "step.succeeded");
    assert_eq!(
        succeeded.iter().map(|r| r["step"].as_str().unwrap()).collect::<Vec<_>>(),
        ["lookup", "summarise", "done"]
    );
    let lookup = succeeded[0];
    assert!(lookup["started_at"].as_u64().unwrap() <= lookup["at"].as_u64().unwrap());
    assert!(lookup["cost"].is_string());
    assert_eq!(lookup["gate"]["action"], "redact", "{lookup}");
    let rules: Vec<&str> = lookup["gate"]["rules"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(
        rules.contains(&"pii.card") && rules.contains(&"secret.stripe_key") && rules.contains(&"pii.email"),
        "{rules:?}"
    );

    // No planted value is in the file, only placeholders.
    for planted in [EMAIL, IBAN, CARD, API_KEY, OUTPUT_EMAIL, "DE89 3704", "4111 1111", "Q3vT8mKp2XrL9wZc4NbY7hJd"] {
        assert!(!text.contains(planted), "the receipt holds {planted}");
    }
    assert!(text.contains("[EMAIL_"), "placeholders stand in for the values");

    // Any value of any entry changed: that entry is named.
    let entries = receipt["entries"].as_array().unwrap().len();
    for i in 0..entries {
        for field in ["index", "kind", "at", "prev", "digest", "link", "signature"] {
            let mut bad = receipt.clone();
            bad["entries"][i][field] = alter(&bad["entries"][i][field]);
            let err = verify(&bad, Some(&key)).unwrap_err();
            assert_eq!(err.entry().map(|e| e.0), Some(i), "{field} of entry {i}: {err}");
        }
        let mut bad = receipt.clone();
        bad["entries"][i]["record"]["at"] = json!(1);
        assert_eq!(verify(&bad, Some(&key)).unwrap_err().entry().map(|e| e.0), Some(i));
    }
    // One byte of the file: a letter of the decider's name, inside the approved entry.
    let approved_at =
        receipt["entries"].as_array().unwrap().iter().position(|e| e["record"]["kind"] == "request.approved").unwrap();
    let needle = "\"by\": \"ann\"";
    let at = text.find(needle).unwrap();
    let mut bytes = text.clone().into_bytes();
    bytes[at + needle.len() - 2] = b'm'; // "ann" → "amn"
    let err = verify(&serde_json::from_slice(&bytes).unwrap(), Some(&key)).unwrap_err();
    assert_eq!(err.entry(), Some((approved_at, "human_decided")), "{err}");

    // Removed, reordered.
    let mut removed = receipt.clone();
    removed["entries"].as_array_mut().unwrap().remove(2);
    let err = verify(&removed, Some(&key)).unwrap_err();
    assert_eq!(err.entry().map(|e| e.0), Some(2), "{err}");
    assert!(err.to_string().contains("removed"), "{err}");
    let mut reordered = receipt.clone();
    reordered["entries"].as_array_mut().unwrap().swap(1, 3);
    assert_eq!(verify(&reordered, Some(&key)).unwrap_err().entry().map(|e| e.0), Some(1));

    // Altered and re-signed with another key: the entry is named; a receipt re-signed
    // throughout (naming the other key) fails against the service key.
    let other = ReceiptSigner::from_seed(&[42; 32]);
    let resign = |doc: &mut Value, i: usize| {
        let e = &doc["entries"][i];
        let bytes = ReceiptEntry::signed_bytes(
            run.as_str(),
            i as u64,
            e["kind"].as_str().unwrap(),
            e["at"].as_u64().unwrap(),
            e["link"].as_str().unwrap(),
            &e["record"],
        );
        doc["entries"][i]["signature"] = json!(other.sign(&bytes));
    };
    let mut forged = receipt.clone();
    forged["entries"][approved_at]["record"]["by"] = json!("mallory");
    resign(&mut forged, approved_at);
    let err = verify(&forged, Some(&key)).unwrap_err();
    assert_eq!(err.entry(), Some((approved_at, "human_decided")), "{err}");
    for i in 0..entries {
        resign(&mut forged, i);
    }
    forged["key"] = json!(other.public().to_string());
    forged["signature"] = json!(other.sign(&Receipt::signed_header(&forged["header"], &other.public().to_string())));
    verify(&forged, Some(&other.public())).expect("consistent under the other key");
    let err = verify(&forged, Some(&key)).unwrap_err();
    assert!(err.to_string().contains("not the service key"), "{err}");
    assert_eq!(err.entry().map(|e| e.0), Some(0));

    // Another user of another group does not get the receipt (404, as for the run).
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/api/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "eve", "groups": ["legal"]}))
        .send()
        .await
        .unwrap();
    let eve = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    assert_eq!(
        http.get(format!("{base}/api/runs/{run}/receipt")).bearer_auth(&eve).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        http.get(format!("{base}/api/runs/{run}/receipt")).bearer_auth(&ann).send().await.unwrap().status(),
        200
    );

    tamper_at_rest(&sys, &run, &receipt).await;
    assert_eq!(
        http.get(format!("{base}/api/runs/{run}/receipt")).bearer_auth(&ann).send().await.unwrap().status(),
        500,
        "a tampered journal gives no receipt"
    );
}

/// Re-seal journal entries (as someone holding the key could) and check every read finds it.
async fn tamper_at_rest(sys: &TestSystem, run: &RunId, receipt: &Value) {
    let store = &sys.t().engine.store;
    let wf = store.run_workflow(run).await.unwrap();
    let k = store.workflow_key(&wf).await.unwrap();
    let log = keys::run_journal(run);
    let original = store.backend().read_log(&log, 0).await.unwrap();
    let rewrite = |i: usize, change: &dyn Fn(&mut Value)| {
        let aad = format!("{log}/{i}");
        let plain = k.open(aad.as_bytes(), &original[i]).unwrap();
        let mut event: Value = serde_json::from_slice(&plain[33..]).unwrap();
        change(&mut event);
        let mut forged = plain[..33].to_vec();
        forged.extend_from_slice(&serde_json::to_vec(&event).unwrap());
        let mut entries = original.clone();
        entries[i] = k.seal(aad.as_bytes(), &forged);
        entries
    };
    let backend = store.backend().clone();
    let replace = |entries: Vec<Vec<u8>>| {
        let (backend, log) = (backend.clone(), log.clone());
        async move {
            backend.delete(&log).await.unwrap();
            backend.append(&log, 0, &entries).await.unwrap();
        }
    };
    // A middle entry (the lookup's output) altered: the next entry no longer follows it.
    replace(rewrite(1, &|e| e["output"] = json!({"status": 200, "json": {"note": "all fine"}}))).await;
    let err = store.read_journal(&wf, run).await.unwrap_err().to_string();
    assert!(err.contains("entry 1 (step_succeeded) was altered at rest"), "{err}");
    // The last entry altered: the head recorded when the run closed no longer matches.
    let last = original.len() - 1;
    let kind = receipt["entries"][last]["kind"].as_str().unwrap().to_string();
    replace(rewrite(last, &|e| e["at"] = json!(1))).await;
    store.read_journal(&wf, run).await.expect("the chain alone cannot see its last entry change");
    let (events, chained) = store.read_chained_journal(&wf, run).await.unwrap();
    let err = store.check_closed_journal(&wf, run, &events, &chained).await.unwrap_err().to_string();
    assert!(err.contains(&format!("entry {last} ({kind}) was altered at rest")), "{err}");
    // Entries cut off the end.
    replace(original[..last].to_vec()).await;
    let (events, chained) = store.read_chained_journal(&wf, run).await.unwrap();
    let err = store.check_closed_journal(&wf, run, &events, &chained).await.unwrap_err().to_string();
    assert!(err.contains("entries were removed"), "{err}");
    // Left tampered (the middle entry): the receipt route must refuse.
    replace(rewrite(1, &|e| e["cost"] = json!("0.5"))).await;
}

fn alter(v: &Value) -> Value {
    match v {
        Value::String(s) => {
            let mut c: Vec<char> = s.chars().collect();
            c[0] = if c[0] == '0' { '1' } else { '0' };
            Value::String(c.into_iter().collect())
        }
        Value::Number(n) => json!(n.as_u64().unwrap() + 1),
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_embedded() {
    a_receipt_of_a_real_run_verifies_and_names_every_alteration(embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_redis() {
    a_receipt_of_a_real_run_verifies_and_names_every_alteration(redis().await).await;
}

const HOOKED: &str = r#"
id: receipt-hooked
owner: ops
parameters:
  client: { type: string, required: true }
steps:
  - { id: greet, type: code, script: "return { hello: input.c }", inputs: { c: "${{ params.client }}" } }
triggers:
  - id: intake
    webhook: {}
    params: { client: "${{ payload.body.client }}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_names_the_trigger_fire_that_started_the_run() {
    let h = tollgate_tests::triggers::Hooked::start(embedded().await, HOOKED).await;
    let body = serde_json::to_vec(&json!({"client": EMAIL})).unwrap();
    let sig = tollgate_engine::trigger::signature::sign_hex(&h.secret("intake").await, &body);
    let res = reqwest::Client::new()
        .post(h.url("intake"))
        .header("content-type", "application/json")
        .header("X-Signature-256", sig)
        .header("Idempotency-Key", "delivery-7")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let fire = h.history().await.into_iter().find(|f| f.outcome.label() == "started").expect("the fire is recorded");
    let runs = h.sys.t().engine.store.list_runs().await.unwrap();
    assert_eq!(h.sys.settle(&runs[0]).await.state.status.label(), "succeeded");

    let receipt = serde_json::to_value(tollgate::receipt::build(&h.sys.t().engine, &runs[0]).await.unwrap()).unwrap();
    let key = h.sys.t().engine.store.receipt_signer().await.unwrap().public();
    verify(&receipt, Some(&key)).expect("the receipt verifies");
    let t = &receipt["header"]["trigger"];
    assert_eq!(
        (t["trigger"].as_str(), t["fire"].as_str(), t["kind"].as_str(), t["at"].as_u64()),
        (Some("intake"), Some(fire.fire.as_str()), Some("webhook"), Some(fire.at))
    );
    assert_eq!(t["source"], "delivery delivery-7", "the fire's source, as its history shows it");
    let text = receipt.to_string();
    assert!(!text.contains(EMAIL), "{text}");
    assert_eq!(receipt["header"]["params"]["client"], "[EMAIL_1]");
}
