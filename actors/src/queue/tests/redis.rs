//! Redis-specific tests: the apalis-redis workarounds and their regression checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis_core::task::builder::TaskBuilder;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use apalis_redis::RedisStorage;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tollgate_engine::queue::StepQueue;

use crate::queue::tests::redis_server::RedisServer;
use crate::queue::tests::{DRAIN, PROMPT, Recorder, drop_redis_queue, job, redis_config, stored_jobs, wait_stored};
use crate::queue::{QueueBackend, QueueConfig, WorkerHealth};

async fn open(config: &QueueConfig) -> QueueBackend {
    QueueBackend::open(config).await.unwrap_or_else(|e| {
        panic!("Redis at {} must be reachable for these tests: {e}", crate::queue::tests::redis_url())
    })
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// Workaround "always poll" (and interop): a job pushed by apalis's own producer — which
/// publishes no wake-up — is found by the poll interval once the worker is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_finds_jobs_pushed_by_apalis() {
    let config = redis_config(4, Duration::from_millis(100));
    let backend = open(&config).await;
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    backend.enqueue(job(1), None).await.expect("enqueue");
    assert!(recorder.wait_done(1, PROMPT).await, "worker is running and idle");

    let q = backend.redis().expect("redis");
    let task = TaskBuilder::new(serde_json::to_vec(&job(2)).expect("json")).build();
    apalis_redis::queries::push_tasks(&mut q.connection(), q.config(), &[task]).await.expect("apalis push");
    assert!(recorder.wait_done(2, PROMPT).await, "found by polling, not the 30 s heartbeat");
    workers.shutdown().await;
    drop_redis_queue(&config).await;
}

/// A job enqueued in another process wakes this one's idle worker through pub/sub (poll
/// interval at 30 s, so polling cannot be what finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_up_crosses_processes() {
    let config = redis_config(4, Duration::from_secs(30));
    let worker_side = open(&config).await;
    let other_process = open(&config).await;
    let recorder = Recorder::new();
    let workers = worker_side.spawn_workers(recorder.clone(), CancellationToken::new());
    worker_side.enqueue(job(0), None).await.expect("enqueue");
    assert!(recorder.wait_done(1, PROMPT).await, "worker is running and subscribed");
    for n in 1..10 {
        other_process.enqueue(job(n), None).await.expect("enqueue");
        assert!(recorder.wait_done(n as usize + 1, PROMPT).await, "job {n} not woken");
    }
    workers.shutdown().await;
    drop_redis_queue(&config).await;
}

/// Workaround `lock_tasks(false)`: two worker sets (as if two processes) on one queue both
/// work, and the atomic fetch alone keeps each job to one delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_sets_share_a_queue_without_duplicates() {
    const JOBS: u32 = 1_000;
    let config = redis_config(8, Duration::from_millis(50));
    let (a, b) = (open(&config).await, open(&config).await);
    let (ra, rb) = (Recorder::new(), Recorder::new());
    let wa = a.spawn_workers(ra.clone(), CancellationToken::new());
    let wb = b.spawn_workers(rb.clone(), CancellationToken::new());
    for n in 0..JOBS {
        (if n % 2 == 0 { &a } else { &b }).enqueue(job(n), None).await.expect("enqueue");
    }
    let both_done = async {
        loop {
            if ra.done() + rb.done() >= JOBS as usize {
                break;
            }
            tokio::select! {
                _ = ra.wait_done(ra.done() + 1, Duration::from_millis(50)) => {}
                _ = rb.wait_done(rb.done() + 1, Duration::from_millis(50)) => {}
            }
        }
    };
    tokio::time::timeout(DRAIN, both_done).await.expect("all jobs handled");
    wa.shutdown().await;
    wb.shutdown().await;
    assert!(ra.done() > 0 && rb.done() > 0, "both sets worked: {} / {}", ra.done(), rb.done());
    let mut counts = ra.counts();
    for (j, c) in rb.counts() {
        *counts.entry(j).or_default() += c;
    }
    assert_eq!(counts.len(), JOBS as usize);
    assert!(counts.values().all(|c| *c == 1), "a job was delivered twice");
    drop_redis_queue(&config).await;
}

/// apalis fact: a worker name seen alive within the orphan window cannot register again. If
/// this starts failing, apalis relaxed it (unique names stay harmless).
#[tokio::test]
async fn apalis_refuses_a_recently_seen_worker_name() {
    let config = redis_config(1, Duration::from_millis(50));
    let backend = open(&config).await;
    let q = backend.redis().expect("redis");
    let name = "crashed-worker";
    let _: () = ::redis::cmd("ZADD")
        .arg(q.config().workers_set())
        .arg(now_secs())
        .arg(name)
        .query_async(&mut q.connection())
        .await
        .expect("ZADD");
    let storage = RedisStorage::<serde_json::Value, _>::new(q.connection()).with_config(q.config().clone());
    let worker = WorkerBuilder::new(name).backend(storage).build(|_: serde_json::Value| async {});
    let run = tokio::time::timeout(PROMPT, worker.run()).await.expect("fails at once");
    let error = run.expect_err("registration refused").to_string();
    assert!(error.contains("still active"), "{error}");
    drop_redis_queue(&config).await;
}

/// Workaround "unique worker names": a worker set started after another one — even one that
/// crashed and left its name registered — runs under a fresh name and fetches at once; a set
/// that stops cleanly deregisters its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_worker_set_gets_a_fresh_name() {
    let config = redis_config(2, Duration::from_millis(50));
    let backend = open(&config).await;
    let q = backend.redis().expect("redis");
    let first = Recorder::new();
    let workers = backend.spawn_workers(first.clone(), CancellationToken::new());
    backend.enqueue(job(1), None).await.expect("enqueue");
    assert!(first.wait_done(1, PROMPT).await);
    let old_name = workers.worker_name().expect("running");
    workers.shutdown().await;
    let score: Option<f64> = ::redis::cmd("ZSCORE")
        .arg(q.config().workers_set())
        .arg(&old_name)
        .query_async(&mut q.connection())
        .await
        .expect("ZSCORE");
    assert_eq!(score, None, "a cleanly stopped worker is deregistered");

    // As if that process had crashed: its name still registered, heartbeat fresh.
    let _: () = ::redis::cmd("ZADD")
        .arg(q.config().workers_set())
        .arg(now_secs())
        .arg(&old_name)
        .query_async(&mut q.connection())
        .await
        .expect("ZADD");
    let second = Recorder::new();
    let workers = backend.spawn_workers(second.clone(), CancellationToken::new());
    backend.enqueue(job(2), None).await.expect("enqueue");
    assert!(second.wait_done(1, PROMPT).await, "the restarted set fetches at once");
    assert_ne!(workers.worker_name().expect("running"), old_name);
    workers.shutdown().await;
    drop_redis_queue(&config).await;
}

/// apalis fact: `fetch_next.lua` promotes all due scheduled jobs with one `unpack`, which
/// fails from ~8,000 jobs — and apalis's `push_tasks` schedules every job. If this starts
/// failing, apalis fixed it and our push script's detour is no longer needed.
#[tokio::test]
async fn apalis_fetch_breaks_on_8000_due_jobs() {
    let config = redis_config(1, Duration::from_millis(50));
    let backend = open(&config).await;
    let q = backend.redis().expect("redis");
    let tasks: Vec<_> = (0..9_000).map(|n| TaskBuilder::new(format!("{n}").into_bytes()).build()).collect();
    apalis_redis::queries::push_tasks(&mut q.connection(), q.config(), &tasks).await.expect("apalis push");
    let name = "regression-worker";
    let _: () = ::redis::cmd("ZADD")
        .arg(q.config().workers_set())
        .arg(now_secs())
        .arg(name)
        .query_async(&mut q.connection())
        .await
        .expect("ZADD");
    let fetched = apalis_redis::queries::fetch_next(&mut q.connection(), &WorkerContext::new(name), q.config()).await;
    let error = fetched.expect_err("too many due jobs").to_string();
    assert!(error.contains("unpack"), "{error}");
    drop_redis_queue(&config).await;
}

/// Workaround: our push puts due jobs straight on the active list, so a backlog of 10,000
/// jobs built while no worker runs drains normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_beyond_8000_due_jobs_drains() {
    const JOBS: u32 = 10_000;
    let config = redis_config(64, Duration::from_millis(50));
    let backend = Arc::new(open(&config).await);
    futures::stream::iter(0..JOBS)
        .map(|n| {
            let backend = Arc::clone(&backend);
            async move { backend.enqueue(job(n), None).await }
        })
        .buffer_unordered(64)
        .for_each(|r| async move { r.expect("enqueue") })
        .await;
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    assert!(recorder.wait_done(JOBS as usize, DRAIN).await, "only {} handled", recorder.done());
    workers.shutdown().await;
    assert_eq!(recorder.counts().len(), JOBS as usize);
    drop_redis_queue(&config).await;
}

/// Workaround `persist_results(false)` + delete: handled jobs leave nothing behind — no data,
/// no metadata, no done set, no in-flight ids, no registered worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_jobs_leave_no_records() {
    let config = redis_config(4, Duration::from_millis(50));
    let backend = open(&config).await;
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    for n in 0..50 {
        backend.enqueue(job(n), None).await.expect("enqueue");
    }
    assert!(recorder.wait_done(50, PROMPT).await);
    assert!(wait_stored(&backend, 0, PROMPT).await, "{} jobs left", stored_jobs(&backend).await);
    workers.shutdown().await;

    let q = backend.redis().expect("redis");
    let QueueConfig { backend: crate::queue::QueueBackendConfig::Redis { queue, .. }, .. } = &config else {
        unreachable!()
    };
    let keys: Vec<String> =
        ::redis::cmd("KEYS").arg(format!("{queue}:*")).query_async(&mut q.connection()).await.expect("KEYS");
    assert_eq!(keys, Vec::<String>::new(), "keys left behind");
    drop_redis_queue(&config).await;
}

/// Workaround: jobs a stopped worker had claimed but never started (e.g. apalis dropped its
/// in-flight fetch at shutdown) go straight back to the queue, and the name is deregistered,
/// instead of waiting ~5 min for orphan recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_worker_hands_back_claimed_jobs() {
    use crate::queue::worker::WorkerSource;
    let config = redis_config(2, Duration::from_secs(30));
    let backend = open(&config).await;
    let q = backend.redis().expect("redis");
    backend.enqueue(job(1), None).await.expect("enqueue");
    let ghost = "ghost-worker";
    let _: () = ::redis::cmd("ZADD")
        .arg(q.config().workers_set())
        .arg(now_secs())
        .arg(ghost)
        .query_async(&mut q.connection())
        .await
        .expect("ZADD");
    let claimed = apalis_redis::queries::fetch_next(&mut q.connection(), &WorkerContext::new(ghost), q.config())
        .await
        .expect("fetch");
    assert_eq!(claimed.len(), 1);

    q.after_worker(ghost).await.expect("released");
    let score: Option<f64> = ::redis::cmd("ZSCORE")
        .arg(q.config().workers_set())
        .arg(ghost)
        .query_async(&mut q.connection())
        .await
        .expect("ZSCORE");
    assert_eq!(score, None, "deregistered");
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    assert!(recorder.wait_done(1, PROMPT).await, "the claimed job is delivered");
    workers.shutdown().await;
    assert_eq!(recorder.deliveries()[0].job, job(1));
    drop_redis_queue(&config).await;
}

/// A Redis restart (shutdown, then start on the same port and AOF) ends the apalis worker with
/// a broken pipe: the set reports itself not running while Redis is away, starts a fresh worker
/// that registers once Redis is back, and jobs enqueued before and after the restart are
/// handled — including one whose deletion failed during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_come_back_after_a_redis_restart() {
    let mut server = tokio::task::block_in_place(RedisServer::start);
    let config = QueueConfig {
        backend: crate::queue::QueueBackendConfig::Redis { url: server.url(), queue: "restart".into() },
        concurrency: 2,
        poll_interval: Duration::from_millis(50),
        eager: false,
    };
    let backend = open(&config).await;
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    let mut health = workers.watch_health();
    let running = |h: &WorkerHealth| h.running;
    tokio::time::timeout(PROMPT, health.wait_for(running)).await.expect("the worker registers").expect("set alive");
    backend.enqueue(job(1), None).await.expect("enqueue");
    assert!(recorder.wait_done(1, PROMPT).await, "worker is running");

    tokio::task::block_in_place(|| server.shutdown());
    let down = tokio::time::timeout(DRAIN, health.wait_for(|h| !h.running && h.restarts > 0))
        .await
        .expect("the set notices the outage")
        .expect("set alive")
        .clone();
    assert!(down.last_error.is_some(), "{down:?}");
    tokio::task::block_in_place(|| server.start_again());
    tokio::time::timeout(DRAIN, health.wait_for(running))
        .await
        .expect("a fresh worker registers once Redis is back")
        .expect("set alive");

    backend.enqueue(job(2), None).await.expect("enqueue after the restart");
    assert!(recorder.wait_done(2, DRAIN).await, "the job enqueued after the restart was never handled");
    workers.shutdown().await;
    assert!(!workers.health().running, "a stopped set is not running");
}
