//! `llm` overhead benchmark (prints figures; asserts nothing about time): what the engine
//! adds to a model call, against a local server speaking OpenAI Chat Completions that answers
//! at once (so everything measured is ours: HTTP and JSON on both sides, plus the engine).
//!
//! 1. The bare call: the OpenAI adapter alone, N calls → ms per call (p50, p99).
//! 2. Through the engine: one run of N sequential `llm` steps (render the prompt, reserve,
//!    journal, enqueue, claim, call, check the schema-less answer, gate, record, settle) →
//!    ms per step from one step's finish to the next's (p50, p99), and the overhead = that
//!    minus the bare call's p50.
//!
//! `cargo bench -p tollgate --bench llm` (`-- --quick` for N = 50; embedded backend, or
//! `TOLLGATE_BACKEND=redis`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::post;
use serde_json::json;
use tollgate::bootstrap::{self, Role};
use tollgate::config::{BackendKind, Config};
use tollgate_engine::llm::{ChatMessage, ChatRequest, ProviderConfig, Role as ChatRole};
use tollgate_engine::spec::parse_yaml;

const MASTER: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

async fn server(calls: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::Relaxed);
                axum::Json(json!({
                    "id": "c", "object": "chat.completion", "model": "bench",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A short answer."}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 4}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn chain(n: usize) -> String {
    let mut y = String::from("id: bench-llm\nowner: bench\nsteps:\n");
    for i in 0..n {
        let needs = if i == 0 { String::new() } else { format!(", needs: [s{}]", i - 1) };
        y.push_str(&format!("  - {{ id: s{i}, type: llm, prompt: \"Step {i}: summarise {{{{ params.topic }}}}.\", max_tokens: 64{needs} }}\n"));
    }
    y.push_str("parameters:\n  topic: { type: string, default: \"the quarterly report\" }\n");
    y
}

#[tokio::main]
async fn main() {
    let n = if std::env::args().any(|a| a == "--quick") { 50 } else { 200 };
    let calls = Arc::new(AtomicUsize::new(0));
    let base_url = server(calls.clone()).await;
    let provider: ProviderConfig =
        serde_json::from_value(json!({"kind": "openai", "base_url": base_url, "model": "bench"})).unwrap();

    // 1. The bare call.
    let adapter = tollgate_connectors::llm::provider(&provider).unwrap();
    let request = ChatRequest {
        model: "bench".into(),
        messages: vec![ChatMessage::new(ChatRole::User, "Step 0: summarise the quarterly report.")],
        temperature: None,
        max_tokens: 64,
        tools: Vec::new(),
        json: false,
    };
    for _ in 0..20 {
        adapter.complete(&request, None).await.unwrap();
    }
    let mut bare = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        adapter.complete(&request, None).await.unwrap();
        bare.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    bare.sort_by(f64::total_cmp);
    let bare_p50 = percentile(&bare, 0.5);
    println!(
        "bare call (adapter → local server): p50 {:.3} ms, p99 {:.3} ms ({n} calls)",
        bare_p50,
        percentile(&bare, 0.99)
    );

    // 2. Through the engine.
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        master_key: MASTER.into(),
        reconcile_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(20),
        ..Config::default()
    };
    config.apply_env(std::env::vars()).unwrap();
    config.llm.providers.insert("local".into(), provider);
    let label = if config.backend == BackendKind::Redis { "redis" } else { "embedded" };
    if config.backend == BackendKind::Redis {
        config.namespace = format!("bench-llm-{}", ulid::Ulid::generate());
    }
    let sys = bootstrap::start(&config, Role::All).await.unwrap();
    let t = &sys.tollgate;
    let warm = parse_yaml(&chain(3)).unwrap();
    let run = t.start_run(&warm, &Default::default()).await.unwrap();
    t.wait_settled(&run, Duration::from_millis(2)).await.unwrap();

    let spec = parse_yaml(&chain(n)).unwrap();
    let before = calls.load(Ordering::Relaxed);
    let started = Instant::now();
    let run = t.start_run(&spec, &Default::default()).await.unwrap();
    let v = t.wait_settled(&run, Duration::from_millis(2)).await.unwrap();
    let total = started.elapsed();
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    assert_eq!(calls.load(Ordering::Relaxed) - before, n, "one model call per step");
    let finished: Vec<u64> = v.state.steps.iter().map(|s| s.finished_at.unwrap()).collect();
    let mut per_step: Vec<f64> = finished.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    per_step.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&per_step, 0.5), percentile(&per_step, 0.99));
    println!(
        "{label}: {n} sequential llm steps in {:.2} s; per step p50 {p50:.1} ms, p99 {p99:.1} ms (journal times, 1 ms resolution); \
         engine overhead per llm call ≈ p50 {:.1} ms, p99 {:.1} ms; mean {:.2} ms per step",
        total.as_secs_f64(),
        p50 - bare_p50,
        p99 - bare_p50,
        total.as_secs_f64() * 1000.0 / n as f64,
    );
    sys.shutdown().await;
}
