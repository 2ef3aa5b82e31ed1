//! Orchestration benchmark (prints figures; asserts nothing about time):
//! - a chain of 40 sequential ~10 ms `code` steps: seconds end to end, and milliseconds of
//!   orchestration per transition = (total − the steps' own measured time) ÷ 40;
//! - 10,000 independent no-op steps in one run: steps per second, every transition journaled
//!   and sealed.
//! On the embedded backend and on Redis (TOLLGATE_BENCH_REDIS_URL, default 127.0.0.1:6379).
//!
//! `cargo bench -p tollgate --bench engine` (add `-- --quick` for a 1,000-step fan-out).
//! `-- --only embedded` (or `redis`) runs one backend.
//! `cargo bench -p tollgate --bench engine -- --waiting N` instead starts N runs that wait on a
//! human and prints the process's resident memory once they are all passivated.

use std::time::{Duration, Instant};

use tollgate::bootstrap::{self, Role};
use tollgate::config::{BackendKind, Config};
use tollgate_engine::spec::parse_yaml;

const MASTER: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn chain_spec(n: usize) -> String {
    let mut y = String::from("id: bench-chain\nowner: bench\nsteps:\n");
    for i in 0..n {
        let needs = if i == 0 { String::new() } else { format!(", needs: [s{}]", i - 1) };
        // Busy for ~10 ms of the step's own time.
        y.push_str(&format!("  - {{ id: s{i}, type: code, script: \"const t = Date.now(); while (Date.now() - t < 10) {{}} return {i}\"{needs} }}\n"));
    }
    y
}

fn fanout_spec(n: usize) -> String {
    let mut y = String::from("id: bench-fanout\nowner: bench\nsteps:\n");
    for i in 0..n {
        y.push_str(&format!("  - {{ id: s{i}, type: code, script: \"return 1\" }}\n"));
    }
    y
}

async fn bench(label: &str, config: Config, fanout: usize) {
    let sys = bootstrap::start(&config, Role::All).await.unwrap_or_else(|e| panic!("{label}: cannot start: {e:#}"));
    let t = &sys.tollgate;

    // Warm up (sandbox pools, connections, spec caches).
    let warm = parse_yaml(&chain_spec(3)).unwrap();
    let run = t.start_run(&warm, &Default::default()).await.unwrap();
    t.wait_settled(&run, Duration::from_millis(5)).await.unwrap();

    let chain = parse_yaml(&chain_spec(40)).unwrap();
    let started = Instant::now();
    let run = t.start_run(&chain, &Default::default()).await.unwrap();
    let v = t.wait_settled(&run, Duration::from_millis(5)).await.unwrap();
    let total = started.elapsed();
    assert_eq!(v.state.status.label(), "succeeded", "{label}: chain run {:?}", v.state.status);
    let own: u64 = v
        .state
        .steps
        .iter()
        .map(|s| {
            s.attempts.iter().map(|a| a.finished_at.unwrap_or(0).saturating_sub(a.started_at.unwrap_or(0))).sum::<u64>()
        })
        .sum();
    let orchestration = total.as_secs_f64() * 1000.0 - own as f64;
    println!(
        "{label:<9} chain  : 40 sequential ~10 ms steps in {:.3} s; steps' own time {own} ms; orchestration {:.2} ms per transition",
        total.as_secs_f64(),
        orchestration / 40.0
    );

    let spec = parse_yaml(&fanout_spec(fanout)).unwrap();
    let started = Instant::now();
    let run = t.start_run(&spec, &Default::default()).await.unwrap();
    let v = t.wait_settled(&run, Duration::from_millis(20)).await.unwrap();
    let total = started.elapsed();
    assert_eq!(v.state.status.label(), "succeeded", "{label}: fan-out run {:?}", v.state.status);
    println!(
        "{label:<9} fan-out: {fanout} independent no-op steps in {:.3} s = {:.0} steps/s (journaled, sealed)",
        total.as_secs_f64(),
        fanout as f64 / total.as_secs_f64()
    );
    sys.shutdown().await;
}

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn waiting(config: Config, n: usize) {
    let sys = bootstrap::start(&config, Role::All).await.expect("system starts");
    let t = &sys.tollgate;
    let spec = parse_yaml("id: bench-wait\nowner: bench\nsteps:\n  - { id: ask, type: approval, question: \"Approve?\" }\n  - { id: after, type: code, needs: [ask], script: \"return 1\" }\n").unwrap();
    let before = rss_bytes();
    let started = Instant::now();
    for i in 0..n {
        t.start_run(&spec, &Default::default()).await.unwrap();
        if (i + 1) % 10_000 == 0 {
            println!("  {} runs started, {:.0} MiB resident", i + 1, rss_bytes() as f64 / 1048576.0);
        }
    }
    while t.live_runs().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rss_bytes();
    println!(
        "{n} runs waiting on a human (all passivated) after {:.1} s: {:.0} MiB resident ({:.0} MiB before); {:.2} KiB per waiting run → {:.0} MiB for 100,000",
        started.elapsed().as_secs_f64(),
        after as f64 / 1048576.0,
        before as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / 1024.0 / n as f64,
        (before as f64 + after.saturating_sub(before) as f64 * 100_000.0 / n as f64) / 1048576.0,
    );
    sys.shutdown().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let fanout = if quick { 1_000 } else { 10_000 };
    let dir = tempfile::tempdir().unwrap();
    let mut base = Config { master_key: MASTER.into(), data_dir: dir.path().to_path_buf(), ..Config::default() };
    // TOLLGATE_* variables tune the run (e.g. TOLLGATE_WORKER_CONCURRENCY), as for the binary.
    base.apply_env(std::env::vars()).expect("TOLLGATE_* settings");
    println!("tollgate engine benchmark ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    if let Some(n) =
        args.iter().position(|a| a == "--waiting").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok())
    {
        let backend = if base.backend == BackendKind::Redis { "redis" } else { "embedded" };
        println!("backend: {backend} (TOLLGATE_BACKEND=redis to change)");
        let namespace = format!("tgbench-wait-{}", std::process::id());
        waiting(Config { namespace, ..base }, n).await;
        return;
    }
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).map(String::as_str);
    if only.is_none_or(|b| b == "embedded") {
        bench("embedded", Config { backend: BackendKind::Embedded, ..base.clone() }, fanout).await;
    }
    if only.is_some_and(|b| b != "redis") {
        return;
    }
    let redis_url = std::env::var("TOLLGATE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("tgbench-{}", std::process::id());
    bench(
        "redis",
        Config { backend: BackendKind::Redis, redis_url: redis_url.clone(), namespace: namespace.clone(), ..base },
        fanout,
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
