//! Trigger benchmark (prints figures; asserts nothing about time), on the embedded backend and
//! on Redis (TOLLGATE_BENCH_REDIS_URL, default 127.0.0.1:6379), through real HTTP:
//! - fire → first step started: a signed webhook delivery is sent, and the run's first step
//!   (a `code` step) is claimed by a worker; p50/p99 over sequential deliveries (target p99 ≤
//!   20 ms). Measured from just before the request is sent to the worker's claim (both on this
//!   machine's wall clock, in ms);
//! - webhook fires/s accepted: concurrent signed deliveries with distinct delivery ids, each
//!   claimed (dedup), recorded in the history and starting a run; and deliveries/s of one
//!   delivery id (all but the first recorded as duplicates).
//!
//! `cargo bench -p tollgate --bench triggers` (`-- --quick` for fewer deliveries).

use std::time::{Duration, Instant};

use tollgate::bootstrap::{self, Role};
use tollgate::config::{BackendKind, Config};
use tollgate::triggers::start_triggers;
use tollgate_engine::ids::{RunId, TriggerId, WorkflowId};
use tollgate_engine::spec::parse_yaml;
use tollgate_engine::trigger::signature::sign_hex;

const MASTER: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";

const SPEC: &str = r#"
id: bench-hooks
owner: bench
parameters:
  n: { type: integer }
steps:
  - { id: first, type: code, script: "return input.n", inputs: { n: "${{ params.n }}" } }
triggers:
  - { id: hook, webhook: {}, params: { n: "${{ payload.body.n }}" } }
"#;

/// For throughput: a run whose only step (a condition) the run actor resolves itself, so the
/// figure is the fire path's and the run start's, not the step workers'.
const BURST_SPEC: &str = r#"
id: bench-burst
owner: bench
parameters:
  n: { type: integer }
steps:
  - { id: check, type: condition, expr: "params.n >= 0" }
triggers:
  - { id: hook, webhook: {}, params: { n: "${{ payload.body.n }}" } }
"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn bench(label: &str, config: Config, samples: usize, burst: usize) {
    let sys = bootstrap::start(&config, Role::All).await.unwrap_or_else(|e| panic!("{label}: cannot start: {e:#}"));
    let t = sys.tollgate.clone();
    let triggers = start_triggers(
        &t,
        config.triggers.history_ttl,
        vec![parse_yaml(SPEC).unwrap(), parse_yaml(BURST_SPEC).unwrap()],
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tollgate::http::router(t.clone(), String::new());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let secret_of = |wf: &'static str| {
        let t = t.clone();
        async move {
            let (wf, hook) = (WorkflowId::new(wf), TriggerId::new("hook"));
            loop {
                if let Some(s) = t.engine.store.trigger_secret(&wf, &hook).await.unwrap_or(None)
                    && t.engine.triggers.endpoint(&wf, &hook).is_some()
                {
                    break s.into_bytes();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let secrets = [secret_of("bench-hooks").await, secret_of("bench-burst").await];
    let urls = [format!("http://{addr}/hooks/bench-hooks/hook"), format!("http://{addr}/hooks/bench-burst/hook")];
    let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
    let send_to = |which: usize, id: String, n: usize| {
        let body = format!("{{\"n\":{n}}}").into_bytes();
        let sig = sign_hex(&secrets[which], &body);
        let (client, url) = (client.clone(), urls[which].clone());
        async move {
            let resp = client
                .post(&url)
                .header("X-Signature-256", sig)
                .header("Idempotency-Key", id)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.unwrap();
            (status, v["run"].as_str().map(RunId::new))
        }
    };
    let send = |id: String, n: usize| send_to(0, id, n);

    // Warm up (connections, caches), then fire → first step started, one delivery at a time.
    for i in 0..5 {
        let (_, run) = send(format!("warm-{i}"), i).await;
        t.wait_settled(&run.unwrap(), Duration::from_millis(5)).await.unwrap();
    }
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let sent = now_ms();
        let (status, run) = send(format!("lat-{i}"), i).await;
        assert_eq!(status, 202);
        let v = t.wait_settled(&run.unwrap(), Duration::from_millis(5)).await.unwrap();
        let started = v.state.steps[0].attempts[0].started_at.expect("the first step started");
        latencies.push(started.saturating_sub(sent));
    }
    latencies.sort_unstable();
    println!(
        "{label}: webhook fire → first step started: p50 {} ms, p99 {} ms, max {} ms ({samples} deliveries)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );

    // Throughput, 64 senders at a time: first one delivery id (all but one are duplicates),
    // then distinct ids (each claimed, recorded, and starting a run).
    let ids: Vec<usize> = (0..burst).collect();
    let start = Instant::now();
    let mut dups = 0;
    for chunk in ids.chunks(64) {
        let answers = futures::future::join_all(chunk.iter().map(|&i| send_to(1, "same-id".into(), i))).await;
        dups += answers.iter().filter(|(s, _)| *s == 200).count();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label}: {burst} deliveries of one id in {secs:.2} s = {:.0} deliveries/s ({dups} recorded as duplicates)",
        burst as f64 / secs
    );
    let start = Instant::now();
    let mut accepted = 0;
    for chunk in ids.chunks(64) {
        let answers = futures::future::join_all(chunk.iter().map(|&i| send_to(1, format!("burst-{i}"), i))).await;
        accepted += answers.iter().filter(|(s, _)| *s == 202).count();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label}: {accepted} webhook fires accepted in {secs:.2} s = {:.0} fires/s (each claimed, recorded, starting a run)",
        accepted as f64 / secs
    );

    server.abort();
    triggers.shutdown().await;
    sys.shutdown().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (samples, burst) = if quick { (100, 500) } else { (300, 2000) };
    let dir = tempfile::tempdir().unwrap();
    let base = Config { master_key: MASTER.into(), data_dir: dir.path().to_path_buf(), ..Config::default() };
    bench("embedded", Config { backend: BackendKind::Embedded, ..base.clone() }, samples, burst).await;
    let redis_url = std::env::var("TOLLGATE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("tgbench-trig-{}", std::process::id());
    bench(
        "redis",
        Config { backend: BackendKind::Redis, redis_url: redis_url.clone(), namespace: namespace.clone(), ..base },
        samples,
        burst,
    )
    .await;
    if let Ok(client) = redis::Client::open(redis_url)
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{namespace}*")).query_async(&mut conn).await.unwrap_or_default();
        for chunk in keys.chunks(1000) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
    }
}
