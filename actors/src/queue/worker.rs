//! The worker set: one supervised apalis worker per process and queue, restarted under a fresh
//! name whenever it dies, plus the tracked tasks of the jobs it is running.
//!
//! Why a fresh name per start: apalis-redis refuses to register a worker name seen alive within
//! the orphan window (`heartbeat × missed_heartbeats`, ~5 min by default), so a process that
//! restarts under a fixed name cannot fetch for minutes; the same rule exists in apalis-sqlite
//! (60 s). Jobs a crashed worker had claimed come back through apalis's orphan recovery on a
//! live worker's heartbeat, and sooner through the engine's step timeout.
//!
//! Why one worker: a worker fetches in batches and runs up to `concurrency` jobs at once (each
//! a tracked task, see `service.rs`), so more apalis workers per process would only add fetch
//! loops competing for the same rows or list.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ulid::Ulid;

use crate::queue::error::BackendError;
use crate::queue::service::{CompleteJob, StepService};
use crate::queue::{JobHandler, QueueConfig};

/// The knobs a worker needs, derived from [`QueueConfig`].
#[derive(Clone, Debug)]
pub(crate) struct WorkerOptions {
    pub(crate) concurrency: usize,
    /// Jobs claimed per fetch. apalis fetches only when a slot is free but then claims a whole
    /// batch, which waits in the worker's buffer for slots; one concurrency's worth keeps a
    /// busy worker fed in one round trip without hoarding much from other processes.
    pub(crate) batch_size: usize,
    pub(crate) poll_interval: Duration,
}

impl WorkerOptions {
    pub(crate) fn from_config(config: &QueueConfig) -> Self {
        Self {
            concurrency: config.concurrency.max(1),
            batch_size: config.concurrency.clamp(1, 64),
            poll_interval: config.poll_interval,
        }
    }
}

/// A backend that can run apalis workers for step jobs.
#[async_trait]
pub(crate) trait WorkerSource: Send + Sync + 'static {
    /// How jobs fetched by the worker `worker` are deleted once handled.
    fn completer(&self, worker: &str) -> Arc<dyn CompleteJob>;

    /// Runs one apalis worker named `name` until `shutdown` fires (`Ok`, after in-flight jobs
    /// finished and unstarted ones were handed back) or the backend fails (`Err`).
    async fn run_worker(
        &self,
        name: &str,
        options: &WorkerOptions,
        service: StepService,
        shutdown: CancellationToken,
    ) -> Result<(), BackendError>;

    /// Runs once the worker `name` has stopped (cleanly or not) *and* every job it started has
    /// finished, handler and delete: hands back jobs it claimed but never started — apalis
    /// drops a fetch that is in flight when a worker stops, and a failed worker leaves its
    /// buffer behind — and deregisters the name. Without this they would wait for apalis's
    /// orphan recovery (60 s on SQLite, ~5 min on Redis).
    async fn after_worker(&self, name: &str);

    /// Starts helper tasks the workers rely on (e.g. a wake-up subscription).
    fn spawn_helpers(&self, _tasks: &TaskTracker, _shutdown: &CancellationToken) {}
}

const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A worker that ran this long before dying counts as healthy: restart it without delay growth.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Running workers of one queue in this process.
#[derive(Debug)]
pub struct WorkerSet {
    tasks: TaskTracker,
    shutdown: CancellationToken,
    current: Arc<Mutex<Option<String>>>,
}

impl WorkerSet {
    pub(crate) fn spawn(
        source: Arc<dyn WorkerSource>,
        options: WorkerOptions,
        handler: Arc<dyn JobHandler>,
        shutdown: &CancellationToken,
    ) -> Self {
        let set = Self {
            tasks: TaskTracker::new(),
            shutdown: shutdown.child_token(),
            current: Arc::default(),
        };
        source.spawn_helpers(&set.tasks, &set.shutdown);
        let slots = Arc::new(Semaphore::new(options.concurrency));
        let supervisor = Supervisor {
            source,
            options,
            handler,
            slots,
            tasks: set.tasks.clone(),
            shutdown: set.shutdown.clone(),
            current: Arc::clone(&set.current),
        };
        set.tasks.spawn(supervisor.run());
        set
    }

    /// The name of the apalis worker currently running, if any.
    pub fn worker_name(&self) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops fetching, lets in-flight jobs finish, hands unstarted ones back, and returns when
    /// all of that is done.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the set has stopped (after its shutdown token fired) and every job it
    /// started has finished.
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Keeps one apalis worker running until shutdown.
struct Supervisor {
    source: Arc<dyn WorkerSource>,
    options: WorkerOptions,
    handler: Arc<dyn JobHandler>,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    current: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    async fn run(self) {
        let mut backoff = RESTART_BACKOFF_MIN;
        while !self.shutdown.is_cancelled() {
            let name = unique_worker_name();
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.clone());
            // This worker's jobs, so its clean-up can wait for exactly them.
            let jobs = TaskTracker::new();
            let service = StepService::new(
                Arc::clone(&self.handler),
                self.source.completer(&name),
                Arc::clone(&self.slots),
                jobs.clone(),
            );
            let started = Instant::now();
            tracing::debug!(worker = %name, "queue worker starting");
            let result = self
                .source
                .run_worker(&name, &self.options, service, self.shutdown.clone())
                .await;
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
            // A failed worker's jobs may run on for a while; restart without waiting for them.
            let (source, stopped) = (Arc::clone(&self.source), name.clone());
            self.tasks.spawn(async move {
                jobs.close();
                jobs.wait().await;
                source.after_worker(&stopped).await;
            });
            match result {
                Ok(()) if self.shutdown.is_cancelled() => {
                    tracing::debug!(worker = %name, "queue worker stopped");
                    break;
                }
                Ok(()) => tracing::warn!(worker = %name, "queue worker exited on its own"),
                Err(e) => tracing::warn!(worker = %name, error = %e, "queue worker failed"),
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff = RESTART_BACKOFF_MIN;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        }
    }
}

/// Unique per start (see the module doc); the pid helps an operator match workers to processes.
pub(crate) fn unique_worker_name() -> String {
    format!("tollgate-{}-{}", std::process::id(), Ulid::generate())
}
