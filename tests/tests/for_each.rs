//! `for_each` end to end on both backends: an `llm` step that classifies each document of a
//! batch through a real local server speaking the OpenAI protocol, an `api_call` fan-out
//! whose failing item is retried on its own under its own idempotency key, the journaled
//! length, an item held for guidance on its own across a restart, and the configured bound on
//! a list's length.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::llm::{ModelPrice, ProviderConfig};
use tollgate_engine::money::Money;
use tollgate_engine::run::{Decision, Event, StepStatus};
use tollgate_tests::harness::{Script, TestServer, TestSystem, embedded_with, redis_with};

/// A model stand-in: classifies the document named in the prompt by its file extension.
fn classifier() -> Script {
    Arc::new(|_, hit| {
        let sent: Value = serde_json::from_slice(&hit.body).expect("JSON request");
        let prompt = sent["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string();
        let label = if prompt.contains(".pdf") {
            "contract"
        } else if prompt.contains(".csv") {
            "invoice"
        } else {
            "letter"
        };
        let body = json!({
            "id": "c", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": json!({"label": label}).to_string()}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
        });
        (StatusCode::OK, vec![], body.to_string(), Duration::ZERO)
    })
}

fn with_model(server: &TestServer) -> impl Fn(&mut tollgate::config::Config) + Clone {
    let p: ProviderConfig = serde_json::from_value(json!({
        "kind": "openai", "base_url": server.url("/v1"), "model": "gpt-test", "max_tokens": 50, "api_key_secret": "openai"
    }))
    .unwrap();
    move |c: &mut tollgate::config::Config| {
        c.llm.providers.insert("local".into(), p.clone());
        c.llm.prices.0.insert(
            "gpt-test".into(),
            ModelPrice {
                input_per_million: Money::parse("10").unwrap(),
                output_per_million: Money::parse("100").unwrap(),
            },
        );
    }
}

async fn both<F, Fut>(change: impl Fn(&mut tollgate::config::Config) + Clone, test: F)
where
    F: Fn(TestSystem) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let c = change.clone();
    test(embedded_with(move |cfg| c(cfg)).await).await;
    test(redis_with(move |cfg| change(cfg)).await).await;
}

const CLASSIFY: &str = r#"
id: classify-batch
owner: firm
parameters:
  files: { type: array, required: true }
steps:
  - id: batch
    type: code
    inputs: { files: "${{ params.files }}" }
    script: "return { documents: input.files.map(f => ({ name: f })) }"
  - id: classify
    type: llm
    needs: [batch]
    for_each: "${{ steps.batch.output.documents }}"
    system: "Classify the document. Answer JSON {\"label\": contract|invoice|letter}."
    prompt: "Document {{ item_index }}: {{ item.name }}"
    schema: { type: object, required: [label], properties: { label: { type: string } } }
  - id: summary
    type: code
    needs: [classify]
    inputs: { labels: "${{ steps.classify.output }}" }
    script: "return input.labels.map(l => l.json.label)"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_step_classifies_each_document_of_a_batch_and_outputs_the_labels_in_order() {
    let server = TestServer::start(classifier()).await;
    let server = &server;
    both(with_model(server), |sys| async move {
        sys.t().engine.store.put_secret(&OwnerId::from("firm"), "openai", "sk-test").await.unwrap();
        let before = server.hits().len();
        let files = ["scan.pdf", "march.csv", "note.txt", "lease.pdf"];
        let run = sys.start(CLASSIFY, json!({ "files": files })).await;
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(TestSystem::step(&v, "summary").output, Some(json!(["contract", "invoice", "letter", "contract"])));
        let classify = TestSystem::step(&v, "classify");
        assert_eq!(classify.items.len(), 4);
        for (k, item) in classify.items.iter().enumerate() {
            assert_eq!(item.item, Some(json!({ "name": files[k] })));
            assert_eq!(item.attempts.len(), 1, "item {k}");
            // 100 × 10/1M + 10 × 100/1M = 0.001 + 0.001
            assert_eq!(item.cost, Money::parse("0.002").unwrap(), "item {k}");
        }
        assert_eq!(classify.cost, Money::parse("0.008").unwrap(), "the step's cost is its items'");
        // One model call per document, each with its own rendered prompt.
        let mut prompts: Vec<String> = server.hits()[before..]
            .iter()
            .map(|h| {
                serde_json::from_slice::<Value>(&h.body).unwrap()["messages"][1]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        prompts.sort();
        assert_eq!(
            prompts,
            ["Document 0: scan.pdf", "Document 1: march.csv", "Document 2: note.txt", "Document 3: lease.pdf"]
        );
        // The fan-out's length and bound are in the journal.
        let journal = sys.t().engine.store.read_journal(&v.meta.workflow, &run).await.unwrap();
        let resolved: Vec<&Event> = journal.iter().filter(|e| matches!(e, Event::ItemsResolved { .. })).collect();
        assert!(matches!(resolved[..], [Event::ItemsResolved { items: 4, limit: 1000, .. }]), "{resolved:?}");
    })
    .await;
}

const CALLS: &str = r#"
id: notify-each
owner: ops
egress: { allow: ["127.0.0.1"] }
parameters:
  url: { type: string, required: true }
  ids: { type: array, required: true }
steps:
  - id: call
    type: api_call
    for_each: "${{ params.ids }}"
    request: { method: POST, url: "${{ params.url }}", body: { id: "${{ item }}", position: "${{ item_index }}" } }
    retry: { max_attempts: 3, backoff: { initial: 100ms } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_item_is_retried_on_its_own_under_its_own_idempotency_key() {
    // The first request for id "b" fails with a 503; everything else succeeds.
    let failed_b = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = failed_b.clone();
    let server = TestServer::start(Arc::new(move |_, hit| {
        let sent: Value = serde_json::from_slice(&hit.body).unwrap();
        if sent["id"] == "b" && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, vec![], "{}".into(), Duration::ZERO);
        }
        (StatusCode::OK, vec![], json!({ "done": sent["id"] }).to_string(), Duration::ZERO)
    }))
    .await;
    let (server, failed_b) = (&server, &failed_b);
    both(
        |_| {},
        |sys| async move {
            failed_b.store(false, std::sync::atomic::Ordering::SeqCst);
            let before = server.hits().len();
            let run = sys.start(CALLS, json!({ "url": server.url("/notify"), "ids": ["a", "b", "c"] })).await;
            let v = sys.settle(&run).await;
            assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
            let call = TestSystem::step(&v, "call");
            let done: Vec<Value> =
                call.output.as_ref().unwrap().as_array().unwrap().iter().map(|o| o["body"]["done"].clone()).collect();
            assert_eq!(done, [json!("a"), json!("b"), json!("c")], "outputs in list order");
            let attempts: Vec<usize> = call.items.iter().map(|i| i.attempts.len()).collect();
            assert_eq!(attempts, [1, 2, 1], "only the failing item was tried again");
            assert_eq!(call.items[1].attempts[0].error.as_ref().unwrap().code, "http_status");
            // Each item has one idempotency key across its attempts, and no two items share one.
            let hits = &server.hits()[before..];
            assert_eq!(hits.len(), 4);
            let key_of = |id: &str| -> Vec<String> {
                hits.iter()
                    .filter(|h| serde_json::from_slice::<Value>(&h.body).unwrap()["id"] == id)
                    .map(|h| h.headers["idempotency-key"].to_str().unwrap().to_string())
                    .collect()
            };
            let (a, b, c) = (key_of("a"), key_of("b"), key_of("c"));
            assert_eq!(b.len(), 2);
            assert_eq!(b[0], b[1], "a retried item keeps its key");
            assert!(a[0] != b[0] && b[0] != c[0] && a[0] != c[0], "items have keys of their own: {a:?} {b:?} {c:?}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_item_waits_for_guidance_on_its_own_across_a_restart_and_finished_items_run_once() {
    // The answer for "secret" holds a codename the workflow's gate rule blocks.
    let server = TestServer::start(Arc::new(|_, hit| {
        let sent: Value = serde_json::from_slice(&hit.body).unwrap();
        let memo = if sent["id"] == "secret" { "launch of PROJECT-LYNX moves" } else { "nothing to see" };
        (StatusCode::OK, vec![], json!({ "done": sent["id"], "memo": memo }).to_string(), Duration::ZERO)
    }))
    .await;
    let yaml = CALLS.replace(
        "egress: { allow: [\"127.0.0.1\"] }",
        "egress: { allow: [\"127.0.0.1\"] }\ngates:\n  rules:\n    - { id: codename, category: codename, action: block, pattern: \"\\\\bPROJECT-[A-Z]{4}\\\\b\", positive: [\"PROJECT-ABCD\"], negative: [\"project abcd\"] }\n  on_block: guidance",
    );
    let mut sys = embedded_with(|_| {}).await;
    let run = sys.start(&yaml, json!({ "url": server.url("/notify"), "ids": ["x", "secret", "y"] })).await;
    let v = sys.settle(&run).await;
    let call = TestSystem::step(&v, "call");
    let statuses: Vec<&str> = call.items.iter().map(|i| i.status.label()).collect();
    assert_eq!(statuses, ["succeeded", "waiting_human", "succeeded"], "only the blocked item waits");
    assert!(v.state.is_waiting());
    let StepStatus::WaitingHuman { request } = call.items[1].status.clone() else { unreachable!() };
    assert!(request.as_str().contains(".call.1."), "the request names the item: {request}");
    let asked = sys.t().pending().await.unwrap();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].request.step.as_ref().map(|s| s.as_str()), Some("call.1"));
    assert!(asked[0].request.question.contains("item 1 of step `call`"), "{}", asked[0].request.question);

    // The engine restarts while the run waits; the decision releases the held output.
    sys.restart().await;
    sys.t().decide(&request, Decision::Approve, "ann", None).await.unwrap();
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let call = TestSystem::step(&v, "call");
    let done: Vec<Value> =
        call.output.as_ref().unwrap().as_array().unwrap().iter().map(|o| o["body"]["done"].clone()).collect();
    assert_eq!(done, [json!("x"), json!("secret"), json!("y")]);
    assert_eq!(call.items[1].decision.as_ref().map(|d| d.by.as_str()), Some("ann"));
    let hits_for = |id: &str| {
        server.hits().iter().filter(|h| serde_json::from_slice::<Value>(&h.body).unwrap()["id"] == id).count()
    };
    assert_eq!((hits_for("x"), hits_for("secret"), hits_for("y")), (1, 1, 1), "no item ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_longer_than_the_configured_bound_fails_the_step_naming_both_numbers() {
    let server = TestServer::start(Arc::new(|_, _| (StatusCode::OK, vec![], "{}".into(), Duration::ZERO))).await;
    let server = &server;
    both(
        |c| c.for_each_max_items = 2,
        |sys| async move {
            let before = server.hits().len();
            let run = sys.start(CALLS, json!({ "url": server.url("/notify"), "ids": ["a", "b", "c"] })).await;
            let v = sys.settle(&run).await;
            assert_eq!(v.state.status.label(), "failed");
            let call = TestSystem::step(&v, "call");
            let error = call.error.as_ref().unwrap();
            assert_eq!(error.code, "for_each_error");
            assert!(error.message.contains("gave 3 items") && error.message.contains("at most 2"), "{}", error.message);
            assert_eq!(server.hits().len(), before, "no item ran");
        },
    )
    .await;
}
