//! Tests of the step queue against a real SQLite file and a real Redis server.
//!
//! Redis is `127.0.0.1:6379` unless `TOLLGATE_TEST_REDIS_URL` says otherwise; a test that
//! cannot reach it fails. Every Redis test uses its own queue (a ULID) and deletes its keys.
//! Each apalis workaround has a regression test here (named after the workaround), so an apalis
//! upgrade that fixes or breaks one shows up.

mod both;
mod redis;
pub(crate) mod redis_server;
mod sqlite;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::{Semaphore, watch};
use tollgate_engine::ids::{RunId, StepId, WorkflowId};
use tollgate_engine::queue::StepJob;

use crate::queue::{JobHandler, JobRejected, QueueBackendConfig, QueueConfig};

/// A generous bound for "picked up at once": well below the 30 s poll interval and apalis
/// heartbeat it guards against, far above scheduling noise on a loaded 2-core machine (2 s
/// was not: a first build running beside the tests can stall a process that long).
const PROMPT: Duration = Duration::from_secs(10);
/// Upper bound for bulk tests to drain.
const DRAIN: Duration = Duration::from_secs(60);

pub(crate) fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A config on a fresh Redis queue; the caller should [`drop_redis_queue`] at the end.
pub(crate) fn redis_config(concurrency: usize, poll_interval: Duration) -> QueueConfig {
    QueueConfig {
        backend: QueueBackendConfig::Redis {
            url: redis_url(),
            queue: format!("tollgate-test:{}", ulid::Ulid::generate()),
        },
        concurrency,
        poll_interval,
        eager: false,
    }
}

pub(crate) fn sqlite_config(dir: &tempfile::TempDir, concurrency: usize, poll_interval: Duration) -> QueueConfig {
    QueueConfig {
        backend: QueueBackendConfig::Embedded { path: dir.path().join("queue.db") },
        concurrency,
        poll_interval,
        eager: false,
    }
}

/// Deletes every key of the test's queue.
pub(crate) async fn drop_redis_queue(config: &QueueConfig) {
    let QueueBackendConfig::Redis { url, queue } = &config.backend else {
        return;
    };
    let client = ::redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis reachable");
    let keys: Vec<String> = ::redis::cmd("KEYS").arg(format!("{queue}:*")).query_async(&mut conn).await.expect("KEYS");
    if !keys.is_empty() {
        let _: () = ::redis::cmd("DEL").arg(keys).query_async(&mut conn).await.expect("DEL");
    }
}

pub(crate) fn job(n: u32) -> StepJob {
    StepJob {
        workflow: WorkflowId::new("wf"),
        run: RunId::new(format!("run-{n}")),
        step: StepId::new("step"),
        attempt: n,
    }
}

/// What the test handler does with a job, by step id.
#[derive(Clone, Default)]
pub(crate) struct Behaviour {
    /// Hold every job until a permit is available (then give it back).
    pub gate: Option<Arc<Semaphore>>,
    /// Work this long per job.
    pub work: Duration,
}

/// Records every delivery.
pub(crate) struct Recorder {
    behaviour: Behaviour,
    deliveries: Mutex<Vec<Delivery>>,
    done: watch::Sender<usize>,
    started: watch::Sender<usize>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub job: StepJob,
    pub wall: SystemTime,
}

impl Recorder {
    pub(crate) fn new() -> Arc<Self> {
        Self::with(Behaviour::default())
    }

    pub(crate) fn with(behaviour: Behaviour) -> Arc<Self> {
        // Queue warnings show up in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("TEST_LOG").unwrap_or_else(|_| "tollgate=debug,apalis=warn,apalis_core=warn".into()),
            )
            .with_test_writer()
            .try_init();
        Arc::new(Self {
            behaviour,
            deliveries: Mutex::default(),
            done: watch::channel(0).0,
            started: watch::channel(0).0,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    pub(crate) fn delivered(&self, job: &StepJob) -> usize {
        self.deliveries.lock().unwrap().iter().filter(|d| &d.job == job).count()
    }

    /// How many times each job was delivered.
    pub(crate) fn counts(&self) -> HashMap<StepJob, usize> {
        let mut counts = HashMap::new();
        for d in self.deliveries.lock().unwrap().iter() {
            *counts.entry(d.job.clone()).or_default() += 1;
        }
        counts
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `n` jobs have finished (`done`) or `within` passed; returns whether they did.
    pub(crate) async fn wait_done(&self, n: usize, within: Duration) -> bool {
        wait_count(&self.done, n, within).await
    }

    pub(crate) async fn wait_started(&self, n: usize, within: Duration) -> bool {
        wait_count(&self.started, n, within).await
    }

    pub(crate) fn done(&self) -> usize {
        *self.done.borrow()
    }
}

async fn wait_count(counter: &watch::Sender<usize>, n: usize, within: Duration) -> bool {
    let mut rx = counter.subscribe();
    tokio::time::timeout(within, rx.wait_for(|c| *c >= n)).await.is_ok()
}

#[async_trait]
impl JobHandler for Recorder {
    async fn handle(&self, job: StepJob) -> Result<(), JobRejected> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let step = job.step.as_str().to_owned();
        self.deliveries.lock().unwrap().push(Delivery { job, wall: SystemTime::now() });
        self.started.send_modify(|c| *c += 1);
        if let Some(gate) = &self.behaviour.gate {
            let _permit = gate.acquire().await.expect("gate open");
        }
        if !self.behaviour.work.is_zero() {
            tokio::time::sleep(self.behaviour.work).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.done.send_modify(|c| *c += 1);
        match step.as_str() {
            "reject" => Err(JobRejected::new("test rejection")),
            "panic" => panic!("test panic"),
            _ => Ok(()),
        }
    }
}

/// Jobs the backend still stores (pending, running, or handled but not deleted).
pub(crate) async fn stored_jobs(backend: &crate::queue::QueueBackend) -> usize {
    if let Some(q) = backend.sqlite() {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM Jobs").fetch_one(q.pool()).await.expect("count jobs");
        return n as usize;
    }
    let q = backend.redis().expect("a redis or sqlite backend");
    let n: usize =
        ::redis::cmd("HLEN").arg(q.config().job_data_hash()).query_async(&mut q.connection()).await.expect("HLEN");
    n
}

/// Waits until the backend stores exactly `n` jobs; polls, because deletion has no event.
pub(crate) async fn wait_stored(backend: &crate::queue::QueueBackend, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if stored_jobs(backend).await == n {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
