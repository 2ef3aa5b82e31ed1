//! Decision latency benchmark (prints figures; asserts nothing about time): N runs each wait
//! on an approval (passivated: no live actor), then each is approved in turn and the time is
//! taken from the decision call to the next step dispatched — its attempt journaled with its
//! input and its job in the queue (the `running` update the run publishes after the enqueue).
//! Includes recording the decision (first writer wins), rehydrating the run from its journal,
//! taking its lease, journaling, and enqueueing. p50 / p99 / max over N decisions, on the
//! embedded backend and on Redis (TOLLGATE_BENCH_REDIS_URL, default 127.0.0.1:6379).
//!
//! `cargo bench -p tollgate --bench decisions` (`-- --decisions N`, default 1,000).

use std::time::{Duration, Instant};

use tollgate::bootstrap::{self, Role};
use tollgate::config::{BackendKind, Config};
use tollgate::system::RunUpdate;
use tollgate_engine::run::{Decision, StepStatus};
use tollgate_engine::spec::parse_yaml;

const MASTER: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

const SPEC: &str = r#"
id: bench-decisions
owner: bench
steps:
  - { id: ok, type: approval, question: "Go?" }
  - { id: next, type: code, needs: [ok], script: "return 1" }
"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn bench(label: &str, config: Config, n: usize) {
    let sys = bootstrap::start(&config, Role::All).await.unwrap_or_else(|e| panic!("{label}: cannot start: {e:#}"));
    let t = &sys.tollgate;
    let spec = parse_yaml(SPEC).unwrap();
    let mut runs = Vec::with_capacity(n + 20);
    for _ in 0..n + 20 {
        runs.push(t.start_run(&spec, &Default::default()).await.unwrap());
    }
    let mut requests = Vec::with_capacity(runs.len());
    for run in &runs {
        let v = t.wait_settled(run, Duration::from_millis(20)).await.unwrap();
        match &v.state.steps[0].status {
            StepStatus::WaitingHuman { request } => requests.push(request.clone()),
            other => panic!("{label}: run {run} does not wait for its approval: {other:?}"),
        }
    }
    // Every waiting run passivated (as they would be, waiting for people).
    let end = Instant::now() + Duration::from_secs(120);
    while t.live_runs().await.unwrap() > 0 {
        assert!(Instant::now() < end, "{label}: runs did not passivate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut updates = t.engine.updates.subscribe();
    let mut latencies = Vec::with_capacity(n);
    for (i, (run, request)) in runs.iter().zip(&requests).enumerate() {
        let started = Instant::now();
        t.decide(request, Decision::Approve, "bench", None).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), updates.recv()).await {
                Ok(Ok(RunUpdate::Step { run: r, step, status: "running", .. }))
                    if r == *run && step.as_str() == "next" =>
                {
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{label}: update bus: {e}"),
                Err(_) => panic!("{label}: run {run}: no dispatch 30 s after the decision"),
            }
        }
        // The first 20 warm caches and connections.
        if i >= 20 {
            latencies.push(started.elapsed());
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<9} decision → next step dispatched over {} decisions (passivated runs): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
    for run in &runs {
        t.wait_settled(run, Duration::from_millis(20)).await.unwrap();
    }
    sys.shutdown().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--decisions")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let dir = tempfile::tempdir().unwrap();
    let mut base = Config { master_key: MASTER.into(), data_dir: dir.path().to_path_buf(), ..Config::default() };
    base.apply_env(std::env::vars()).expect("TOLLGATE_* settings");
    println!(
        "tollgate decision latency benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    bench("embedded", Config { backend: BackendKind::Embedded, ..base.clone() }, n).await;
    let redis_url = std::env::var("TOLLGATE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("tgbench-decide-{}", std::process::id());
    bench(
        "redis",
        Config { backend: BackendKind::Redis, redis_url: redis_url.clone(), namespace: namespace.clone(), ..base },
        n,
    )
    .await;
    // Leave nothing behind on the shared Redis.
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
