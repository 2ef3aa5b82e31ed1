//! Behaviour both backends must share: prompt wake-ups, no apalis retries, the concurrency
//! bound, `not_before`, graceful shutdown.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tollgate_engine::ids::StepId;
use tollgate_engine::queue::StepQueue;

use crate::queue::tests::{
    Behaviour, DRAIN, PROMPT, Recorder, drop_redis_queue, job, redis_config, sqlite_config, stored_jobs, wait_stored,
};
use crate::queue::{QueueBackend, QueueConfig};

/// Runs `$name(config)` once on a fresh SQLite file and once on a fresh Redis queue.
macro_rules! on_both_backends {
    ($name:ident, concurrency = $c:expr, poll = $poll:expr) => {
        mod $name {
            use std::time::Duration;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                super::$name(super::sqlite_config(&dir, $c, $poll)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let config = super::redis_config($c, $poll);
                super::$name(config.clone()).await;
                super::drop_redis_queue(&config).await;
            }
        }
    };
}

/// Workaround "always poll / wake idle workers": with the poll interval at its 30 s maximum
/// (apalis alone would wait for its 30 s heartbeat), every job enqueued after the worker went
/// idle — including right after the previous one finished, while the worker's next fetch may
/// be in flight — must start at once. A lost wake-up shows as a 30 s wait.
async fn wake_up_idle_worker(config: QueueConfig) {
    let backend = QueueBackend::open(&config).await.expect("open");
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    for n in 0..20 {
        backend.enqueue(job(n), None).await.expect("enqueue");
        assert!(recorder.wait_done(n as usize + 1, PROMPT).await, "job {n} was not picked up promptly");
    }
    workers.shutdown().await;
}
on_both_backends!(wake_up_idle_worker, concurrency = 4, poll = Duration::from_secs(30));

/// The engine owns retries: a rejected or panicking job is handled once and then deleted,
/// like a successful one.
async fn rejected_and_panicking_jobs_are_dropped(config: QueueConfig) {
    let backend = QueueBackend::open(&config).await.expect("open");
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    let mut rejected = job(1);
    rejected.step = StepId::new("reject");
    let mut panicking = job(2);
    panicking.step = StepId::new("panic");
    for j in [rejected.clone(), panicking.clone(), job(3)] {
        backend.enqueue(j, None).await.expect("enqueue");
    }
    assert!(recorder.wait_done(3, PROMPT).await);
    assert!(wait_stored(&backend, 0, PROMPT).await, "handled jobs must be deleted");
    workers.shutdown().await;
    assert_eq!(recorder.delivered(&rejected), 1);
    assert_eq!(recorder.delivered(&panicking), 1);
    assert_eq!(recorder.deliveries().len(), 3);
}
on_both_backends!(rejected_and_panicking_jobs_are_dropped, concurrency = 4, poll = Duration::from_millis(100));

async fn concurrency_is_bounded(config: QueueConfig) {
    let backend = QueueBackend::open(&config).await.expect("open");
    for n in 0..40 {
        backend.enqueue(job(n), None).await.expect("enqueue");
    }
    let recorder = Recorder::with(Behaviour { work: Duration::from_millis(20), ..Behaviour::default() });
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    assert!(recorder.wait_done(40, DRAIN).await);
    workers.shutdown().await;
    assert_eq!(recorder.max_in_flight(), 4, "concurrency 4 must be used and never exceeded");
}
on_both_backends!(concurrency_is_bounded, concurrency = 4, poll = Duration::from_millis(100));

/// `not_before` is never early (apalis keeps whole seconds: we round up), and a delayed job
/// does not hold up an undelayed one.
async fn not_before_is_honoured(config: QueueConfig) {
    let backend = QueueBackend::open(&config).await.expect("open");
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    let delay = Duration::from_millis(1200);
    let not_before = SystemTime::now() + delay;
    backend.enqueue(job(1), Some(not_before)).await.expect("enqueue");
    backend.enqueue(job(2), None).await.expect("enqueue");
    // Up to a second late from the rounding, plus a poll interval.
    assert!(recorder.wait_done(2, delay + Duration::from_secs(1) + PROMPT).await);
    workers.shutdown().await;
    let deliveries = recorder.deliveries();
    let delayed = deliveries.iter().find(|d| d.job == job(1)).expect("delivered");
    assert!(delayed.wall >= not_before, "started {:?} early", not_before.duration_since(delayed.wall));
    assert_eq!(deliveries[0].job, job(2));
}
on_both_backends!(not_before_is_honoured, concurrency = 2, poll = Duration::from_millis(100));

/// Shutdown stops fetching, waits for in-flight jobs, and leaves the rest queued for the next
/// worker set.
async fn graceful_shutdown(config: QueueConfig) {
    let backend = QueueBackend::open(&config).await.expect("open");
    for n in 0..6 {
        backend.enqueue(job(n), None).await.expect("enqueue");
    }
    let gate = Arc::new(Semaphore::new(0));
    let recorder = Recorder::with(Behaviour { gate: Some(gate.clone()), ..Behaviour::default() });
    let shutdown = CancellationToken::new();
    let workers = backend.spawn_workers(recorder.clone(), shutdown.clone());
    assert!(recorder.wait_started(2, PROMPT).await);

    shutdown.cancel();
    let stopping = tokio::spawn(async move { workers.wait().await });
    gate.add_permits(2);
    tokio::time::timeout(DRAIN, stopping).await.expect("shutdown finishes").expect("join");
    // The in-flight jobs could only finish after the gate opened, so shutdown waited for them;
    // and nothing else started.
    assert_eq!(recorder.done(), 2);
    assert_eq!(recorder.deliveries().len(), 2);
    assert_eq!(stored_jobs(&backend).await, 4, "unstarted jobs stay queued");

    let next = Recorder::new();
    let workers = backend.spawn_workers(next.clone(), CancellationToken::new());
    assert!(next.wait_done(4, PROMPT).await, "the next worker set takes over the rest");
    workers.shutdown().await;
    let mut all: Vec<u32> = recorder.deliveries().into_iter().chain(next.deliveries()).map(|d| d.job.attempt).collect();
    all.sort_unstable();
    assert_eq!(all, (0..6).collect::<Vec<_>>());
}
on_both_backends!(graceful_shutdown, concurrency = 2, poll = Duration::from_millis(100));

/// Stopping right after a job finished — when the worker's next fetch is typically in flight —
/// is prompt. apalis parks an in-flight fetch until in-flight jobs complete; on SQLite that
/// fetch holds the connection, so a job completion that waited for its delete hung shutdown
/// for the pool's 30 s acquire timeout.
async fn shutdown_with_a_fetch_in_flight_is_prompt(config: QueueConfig) {
    let backend = QueueBackend::open(&config).await.expect("open");
    for round in 0..10 {
        let recorder = Recorder::new();
        let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
        backend.enqueue(job(round), None).await.expect("enqueue");
        assert!(recorder.wait_done(1, PROMPT).await);
        tokio::time::timeout(PROMPT, workers.shutdown()).await.expect("prompt shutdown");
    }
    assert!(wait_stored(&backend, 0, PROMPT).await);
}
on_both_backends!(shutdown_with_a_fetch_in_flight_is_prompt, concurrency = 4, poll = Duration::from_millis(100));

/// `enqueue_many` writes a burst at once (one commit / one script call) and every job of it
/// is delivered once.
async fn enqueue_many_delivers_every_job(config: QueueConfig) {
    let backend = QueueBackend::open(&config).await.expect("open");
    let recorder = Recorder::new();
    let workers = backend.spawn_workers(recorder.clone(), CancellationToken::new());
    backend.enqueue_many(Vec::new()).await.expect("nothing to do");
    backend.enqueue_many((0..300).map(job).collect()).await.expect("enqueue_many");
    assert!(recorder.wait_done(300, DRAIN).await, "only {} handled", recorder.done());
    assert!(wait_stored(&backend, 0, PROMPT).await);
    workers.shutdown().await;
    let counts = recorder.counts();
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|c| *c == 1));
}
on_both_backends!(enqueue_many_delivers_every_job, concurrency = 8, poll = Duration::from_secs(30));
