//! Event benchmark (prints figures; asserts nothing about time), on the embedded backend and on
//! Redis (TOLLGATE_BENCH_REDIS_URL, default 127.0.0.1:6379):
//! - event fire → first step started: an event is published on the bus and an `event`
//!   trigger's fire starts a run whose first step (a `code` step) is claimed by a worker;
//!   p50/p99 over sequential events (target p99 ≤ 20 ms), measured from just before the
//!   publish to the worker's claim (both on this machine's wall clock, in ms);
//! - event → waiting run resumed: a run waits in an `event` step's `wait`; from just before
//!   the matching event is published to the claim of the step after the wait.
//!
//! `cargo bench -p tollgate --bench events` (`-- --quick` for fewer events).

use std::time::Duration;

use serde_json::json;
use tollgate::bootstrap::{self, Role};
use tollgate::config::{BackendKind, Config};
use tollgate::service::Tollgate;
use tollgate::triggers::start_triggers;
use tollgate_engine::ids::RunId;
use tollgate_engine::spec::parse_yaml;

const MASTER: &str = "6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c";

const TRIGGERED: &str = r#"
id: bench-events
owner: bench
parameters:
  n: { type: integer }
steps:
  - { id: first, type: code, script: "return input.n", inputs: { n: "${{ params.n }}" } }
triggers:
  - { id: on-ping, event: { name: bench.ping }, params: { n: "${{ payload.n }}" } }
"#;

const WAITING: &str = r#"
id: bench-wait
owner: bench
parameters:
  n: { type: integer }
steps:
  - id: wait
    type: event
    wait: { name: bench.pong, correlate: "event.payload.n == params.n", timeout: 10m }
  - { id: next, type: code, needs: [wait], script: "return 1" }
"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn report(label: &str, what: &str, mut latencies: Vec<u64>) {
    latencies.sort_unstable();
    println!(
        "{label}: {what}: p50 {} ms, p99 {} ms, max {} ms ({} events)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        latencies.len()
    );
}

/// The run the trigger started for the `n`-th event (a new one in the run list).
async fn new_run(t: &Tollgate, known: &mut std::collections::HashSet<RunId>) -> RunId {
    loop {
        if let Some(r) = t.engine.store.list_runs().await.unwrap().into_iter().find(|r| !known.contains(r)) {
            known.insert(r.clone());
            return r;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn bench(label: &str, config: Config, samples: usize) {
    let sys = bootstrap::start(&config, Role::All).await.unwrap_or_else(|e| panic!("{label}: cannot start: {e:#}"));
    let t = sys.tollgate.clone();
    let triggers = start_triggers(&t, config.triggers.history_ttl, vec![parse_yaml(TRIGGERED).unwrap()]).await.unwrap();
    while !triggers.board.list().iter().all(|h| h.health.connected) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut known = std::collections::HashSet::new();
    let fire = |n: usize, sent: &mut u64| {
        *sent = now_ms();
        let t = t.clone();
        async move { t.emit_event("bench", "bench.ping", &json!({ "n": n }), None).await }
    };
    for i in 0..5 {
        let mut sent = 0;
        fire(i, &mut sent).await.unwrap();
        let run = new_run(&t, &mut known).await;
        t.wait_settled(&run, Duration::from_millis(5)).await.unwrap();
    }
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let mut sent = 0;
        fire(1000 + i, &mut sent).await.unwrap();
        let run = new_run(&t, &mut known).await;
        let v = t.wait_settled(&run, Duration::from_millis(5)).await.unwrap();
        latencies.push(v.state.steps[0].attempts[0].started_at.expect("the first step started").saturating_sub(sent));
    }
    report(label, "event fire → first step started", latencies);

    // A waiting run resumed by its event.
    let spec = parse_yaml(WAITING).unwrap();
    let mut latencies = Vec::with_capacity(samples / 2);
    for i in 0..samples / 2 {
        let run = t.start_run(&spec, json!({ "n": i }).as_object().unwrap()).await.unwrap();
        let v = t.wait_settled(&run, Duration::from_millis(5)).await.unwrap();
        assert_eq!(v.state.steps[0].status.label(), "waiting_event");
        let sent = now_ms();
        t.emit_event("bench", "bench.pong", &json!({ "n": i }), None).await.unwrap();
        let v = loop {
            let v = t.view(&run).await.unwrap();
            if v.state.status.is_finished() {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(
            v.state.steps[1].attempts[0].started_at.expect("the step after the wait started").saturating_sub(sent),
        );
    }
    report(label, "event → waiting run's next step started", latencies);
    triggers.shutdown().await;
    sys.shutdown().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let samples = if quick { 100 } else { 300 };
    let dir = tempfile::tempdir().unwrap();
    let base = Config { master_key: MASTER.into(), data_dir: dir.path().to_path_buf(), ..Config::default() };
    bench("embedded", Config { backend: BackendKind::Embedded, ..base.clone() }, samples).await;
    let redis_url = std::env::var("TOLLGATE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("tgbench-ev-{}", std::process::id());
    bench(
        "redis",
        Config { backend: BackendKind::Redis, redis_url: redis_url.clone(), namespace: namespace.clone(), ..base },
        samples,
    )
    .await;
    if let Ok(client) = redis::Client::open(redis_url) {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("{namespace}*")).query_async(&mut conn).await.unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
            }
        }
    }
}
