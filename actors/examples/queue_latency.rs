//! Measures the step queue: enqueue → handler-start latency and throughput, on the embedded
//! SQLite backend and on Redis.
//!
//! ```text
//! cargo run --release -p tollgate --example queue_latency -- [sqlite|redis|both] \
//!     [--jobs N] [--concurrency N] [--redis-url URL]
//! ```
//!
//! Three figures per backend:
//! - *idle*: one job at a time, each enqueued while the worker is idle (the wake-up path);
//!   latency = handler start − the moment `enqueue` was called (so it includes the enqueue).
//! - *loaded*: `--jobs` jobs enqueued by 8 concurrent producers while workers run; latency per
//!   job as above, and jobs/s = jobs ÷ (last handler start − first enqueue).
//! - *drain*: `--jobs` jobs queued before the workers start; jobs/s to work through them.
//!
//! The handler does nothing but record when it started, so the figures are the queue's own
//! cost (plus our completion delete).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tollgate::queue::{JobHandler, JobRejected, QueueBackend, QueueBackendConfig, QueueConfig};
use tollgate_engine::ids::{RunId, StepId, WorkflowId};
use tollgate_engine::queue::{StepJob, StepQueue};

/// Records each job's start time (ns since `base`), indexed by the job's `attempt`.
struct Clock {
    base: Instant,
    started: Vec<AtomicU64>,
    count: AtomicUsize,
    notify: Notify,
}

impl Clock {
    fn new(jobs: usize) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            started: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
            notify: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.notify.notified();
            if self.count.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl JobHandler for Clock {
    async fn handle(&self, job: StepJob) -> Result<(), JobRejected> {
        self.started[job.attempt as usize].store(self.now(), Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
        Ok(())
    }
}

fn job(n: usize) -> StepJob {
    StepJob {
        workflow: WorkflowId::new("bench"),
        run: RunId::new(format!("run-{n}")),
        step: StepId::new("step"),
        attempt: n as u32,
    }
}

struct Args {
    backends: Vec<&'static str>,
    jobs: usize,
    concurrency: usize,
    redis_url: String,
}

fn parse_args() -> Args {
    let mut args = Args {
        backends: vec!["sqlite", "redis"],
        jobs: 5_000,
        concurrency: 16,
        redis_url: "redis://127.0.0.1:6379".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "sqlite" => args.backends = vec!["sqlite"],
            "redis" => args.backends = vec!["redis"],
            "both" => args.backends = vec!["sqlite", "redis"],
            "--jobs" => args.jobs = it.next().and_then(|v| v.parse().ok()).expect("--jobs N"),
            "--concurrency" => args.concurrency = it.next().and_then(|v| v.parse().ok()).expect("--concurrency N"),
            "--redis-url" => args.redis_url = it.next().expect("--redis-url URL"),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn config(backend: &str, args: &Args, dir: &tempfile::TempDir) -> QueueConfig {
    let backend = match backend {
        "sqlite" => QueueBackendConfig::Embedded { path: dir.path().join("queue.db") },
        _ => QueueBackendConfig::Redis {
            url: args.redis_url.clone(),
            queue: format!("tollgate-bench:{}", ulid::Ulid::generate()),
        },
    };
    QueueConfig { backend, concurrency: args.concurrency, poll_interval: Duration::from_millis(200), eager: false }
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(sorted[i])
}

fn report(label: &str, mut latencies: Vec<u64>, jobs_per_s: Option<f64>) {
    latencies.sort_unstable();
    let rate = jobs_per_s.map(|r| format!("  {r:>8.0} jobs/s")).unwrap_or_default();
    println!(
        "  {label:<7} n={:<6} p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}{rate}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
}

async fn bench(backend_name: &str, args: &Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(backend_name, args, &dir);
    println!("{backend_name} (concurrency {}, {} jobs):", args.concurrency, args.jobs);

    // Idle: one job at a time.
    let idle_jobs = args.jobs.min(2_000);
    let backend = QueueBackend::open(&config).await.expect("open queue");
    let clock = Clock::new(idle_jobs);
    let workers = backend.spawn_workers(clock.clone(), CancellationToken::new());
    let mut latencies = Vec::with_capacity(idle_jobs);
    let mut enqueue_calls = Vec::with_capacity(idle_jobs);
    for n in 0..idle_jobs {
        let t0 = clock.now();
        backend.enqueue(job(n), None).await.expect("enqueue");
        enqueue_calls.push(clock.now() - t0);
        clock.wait_for(n + 1).await;
        latencies.push(clock.started[n].load(Ordering::SeqCst) - t0);
    }
    workers.shutdown().await;
    report("enqueue", enqueue_calls, None);
    report("idle", latencies, None);

    // Loaded: producers and workers at once.
    let clock = Clock::new(args.jobs);
    let workers = backend.spawn_workers(clock.clone(), CancellationToken::new());
    let enqueued: Arc<Vec<AtomicU64>> = Arc::new((0..args.jobs).map(|_| AtomicU64::new(0)).collect());
    let backend = Arc::new(backend);
    futures::stream::iter(0..args.jobs)
        .map(|n| {
            let (backend, clock, enqueued) = (backend.clone(), clock.clone(), enqueued.clone());
            async move {
                enqueued[n].store(clock.now(), Ordering::SeqCst);
                backend.enqueue(job(n), None).await.expect("enqueue");
            }
        })
        .buffer_unordered(8)
        .collect::<()>()
        .await;
    clock.wait_for(args.jobs).await;
    workers.shutdown().await;
    let first = enqueued.iter().map(|t| t.load(Ordering::SeqCst)).min().unwrap_or(0);
    let last = clock.started.iter().map(|t| t.load(Ordering::SeqCst)).max().unwrap_or(0);
    let latencies =
        (0..args.jobs).map(|n| clock.started[n].load(Ordering::SeqCst) - enqueued[n].load(Ordering::SeqCst)).collect();
    let rate = args.jobs as f64 / Duration::from_nanos(last - first).as_secs_f64();
    report("loaded", latencies, Some(rate));

    // Drain: a backlog, then workers.
    let clock = Clock::new(args.jobs);
    futures::stream::iter(0..args.jobs)
        .map(|n| {
            let backend = backend.clone();
            async move { backend.enqueue(job(n), None).await.expect("enqueue") }
        })
        .buffer_unordered(8)
        .collect::<()>()
        .await;
    let t0 = Instant::now();
    let workers = backend.spawn_workers(clock.clone(), CancellationToken::new());
    clock.wait_for(args.jobs).await;
    let elapsed = t0.elapsed();
    workers.shutdown().await;
    println!("  drain   {} jobs in {elapsed:.3?}: {:.0} jobs/s", args.jobs, args.jobs as f64 / elapsed.as_secs_f64());

    if let QueueBackendConfig::Redis { url, queue } = &config.backend {
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{queue}:*")).query_async(&mut conn).await.expect("KEYS");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.expect("DEL");
        }
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    println!("cores: {}", std::thread::available_parallelism().map_or(0, |n| n.get()));
    for backend in args.backends.clone() {
        bench(backend, &args).await;
    }
}
