//! SQLite-specific tests: the apalis-sqlite workarounds and their regression checks.

use std::sync::Arc;
use std::time::Duration;

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use apalis_sqlite::{SqlitePoolOptions, SqliteStorage};
use futures::future::try_join_all;
use tokio_util::sync::CancellationToken;
use tollgate_engine::queue::StepQueue;
use ulid::Ulid;

use crate::queue::QueueBackend;
use crate::queue::sqlite::{BUSY_TIMEOUT, POOL_CONNECTIONS, QUEUE_NAME};
use crate::queue::tests::{DRAIN, PROMPT, Recorder, job, sqlite_config, stored_jobs, wait_stored};

/// apalis fact: `SqliteStorage::setup` sets `synchronous = OFF` on the connection it runs on.
/// If this starts failing, apalis stopped doing it and the throw-away setup pool can go.
#[tokio::test]
async fn apalis_setup_turns_synchronous_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            apalis_sqlite::SqliteConnectOptions::new().filename(dir.path().join("q.db")).create_if_missing(true),
        )
        .await
        .expect("pool");
    SqliteStorage::setup(&pool).await.expect("setup");
    let level: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&pool).await.expect("pragma");
    assert_eq!(level, 0, "OFF");
}

/// Workaround: every working connection runs `synchronous = NORMAL` (1) in WAL mode with our
/// busy timeout, whichever connection apalis's `setup` used.
#[tokio::test]
async fn every_connection_is_durable_and_waits_for_locks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = QueueBackend::open(&sqlite_config(&dir, 4, Duration::from_millis(100))).await.expect("open");
    let pool = backend.sqlite().expect("sqlite").pool();
    // Hold every connection at once so each one is checked.
    let mut conns = Vec::new();
    for _ in 0..POOL_CONNECTIONS {
        conns.push(pool.acquire().await.expect("connection"));
    }
    for conn in &mut conns {
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut **conn).await.expect("pragma");
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut **conn).await.expect("pragma");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut **conn).await.expect("pragma");
        assert_eq!(sync, 1, "NORMAL");
        assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
        assert_eq!(journal, "wal");
    }
}

/// apalis fact: one task whose id is not a ULID makes every fetch of its queue fail, so the
/// worker dies and the queue is wedged (the failed fetch's transaction rolls back, the row stays
/// due). If this starts failing, apalis tolerates other ids.
#[tokio::test]
async fn apalis_fetch_fails_on_a_non_ulid_task_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = QueueBackend::open(&sqlite_config(&dir, 4, Duration::from_millis(100))).await.expect("open");
    let pool = backend.sqlite().expect("sqlite").pool().clone();
    let config = apalis_sqlite::Config::default().queue(QUEUE_NAME);
    let worker = WorkerContext::new("regression-worker");
    apalis_sqlite::queries::register_worker(&pool, &config, &worker, "SqliteStorage").await.expect("register");
    let odd = TaskBuilder::new(b"{}".to_vec()).task_id(TaskId::from_string("not-a-ulid")).build();
    apalis_sqlite::queries::push_tasks(&mut *pool.acquire().await.expect("conn"), QUEUE_NAME, &[odd])
        .await
        .expect("push");
    backend.enqueue(job(1), None).await.expect("enqueue");
    for _ in 0..2 {
        let mut tx = pool.begin().await.expect("begin");
        let fetched = apalis_sqlite::queries::fetch_next(&mut *tx, &config, &worker).await;
        assert!(fetched.is_err(), "a non-ULID id breaks the fetch (and keeps breaking it)");
        drop(tx);
    }
}

/// Workaround: our task ids are ULIDs, and the queue keeps flowing.
#[tokio::test]
async fn task_ids_are_ulids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = QueueBackend::open(&sqlite_config(&dir, 4, Duration::from_millis(100))).await.expect("open");
    for n in 0..20 {
        backend.enqueue(job(n), None).await.expect("enqueue");
    }
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM Jobs")
        .fetch_all(backend.sqlite().expect("sqlite").pool())
        .await
        .expect("ids");
    assert_eq!(ids.len(), 20);
    for id in &ids {
        assert!(Ulid::from_string(id).is_ok(), "{id} is not a ULID");
    }
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    assert!(recorder.wait_done(20, PROMPT).await);
    workers.shutdown().await;
}

/// Workarounds busy_timeout + `persist_results(false)`-with-delete: a producer and a worker
/// set in different pools (as if in two processes) on one file, 2,000 jobs enqueued while
/// workers run. No enqueue fails with "database is locked", every job is handled at least
/// once, and the table ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producer_and_worker_on_one_file() {
    const JOBS: u32 = 2_000;
    const PRODUCERS: u32 = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(&dir, 16, Duration::from_millis(20));
    let worker_side = QueueBackend::open(&config).await.expect("open");
    let producer = Arc::new(QueueBackend::open(&config).await.expect("open"));
    let recorder = Recorder::new();
    let workers = worker_side.spawn_workers(recorder.clone(), CancellationToken::new());

    try_join_all((0..PRODUCERS).map(|p| {
        let producer = Arc::clone(&producer);
        tokio::spawn(async move {
            for n in (p..JOBS).step_by(PRODUCERS as usize) {
                producer.enqueue(job(n), None).await?;
            }
            Ok::<_, tollgate_engine::queue::QueueError>(())
        })
    }))
    .await
    .expect("producers run")
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .expect("no enqueue fails");

    assert!(recorder.wait_done(JOBS as usize, DRAIN).await, "only {} handled", recorder.done());
    assert!(wait_stored(&worker_side, 0, PROMPT).await, "{} rows left", stored_jobs(&worker_side).await);
    workers.shutdown().await;
    let counts = recorder.counts();
    assert_eq!(counts.len(), JOBS as usize, "every job handled");
    let duplicates = counts.values().filter(|c| **c > 1).count();
    eprintln!("{JOBS} jobs, {duplicates} delivered more than once");
}

/// Workaround "always poll": a job from another pool (no update hook fires in ours) is found
/// by the poll interval once the worker is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_finds_jobs_from_another_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(&dir, 4, Duration::from_millis(100));
    let worker_side = QueueBackend::open(&config).await.expect("open");
    let other = QueueBackend::open(&config).await.expect("open");
    let recorder = Recorder::new();
    let workers = worker_side.spawn_workers(recorder.clone(), CancellationToken::new());
    worker_side.enqueue(job(1), None).await.expect("enqueue");
    assert!(recorder.wait_done(1, PROMPT).await, "worker is running and idle");
    other.enqueue(job(2), None).await.expect("enqueue");
    assert!(recorder.wait_done(2, PROMPT).await, "found by polling, not the 30 s heartbeat");
    workers.shutdown().await;
}

/// Workaround: jobs a stopped worker had claimed but never started go straight back to the
/// queue and its `Workers` row goes, instead of waiting 60 s for orphan recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_worker_hands_back_claimed_jobs() {
    use crate::queue::worker::WorkerSource;
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = QueueBackend::open(&sqlite_config(&dir, 2, Duration::from_secs(30))).await.expect("open");
    let q = backend.sqlite().expect("sqlite");
    backend.enqueue(job(1), None).await.expect("enqueue");
    let config = apalis_sqlite::Config::default().queue(QUEUE_NAME);
    let ghost = WorkerContext::new("ghost-worker");
    apalis_sqlite::queries::register_worker(q.pool(), &config, &ghost, "SqliteStorage").await.expect("register");
    let mut tx = q.pool().begin().await.expect("begin");
    let claimed = apalis_sqlite::queries::fetch_next(&mut *tx, &config, &ghost).await.expect("fetch");
    tx.commit().await.expect("commit");
    assert_eq!(claimed.len(), 1);

    q.after_worker("ghost-worker").await.expect("released");
    let workers_left: i64 = sqlx::query_scalar("SELECT count(*) FROM Workers WHERE id = 'ghost-worker'")
        .fetch_one(q.pool())
        .await
        .expect("count");
    assert_eq!(workers_left, 0);
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    assert!(recorder.wait_done(1, PROMPT).await, "the claimed job is delivered");
    workers.shutdown().await;
}
