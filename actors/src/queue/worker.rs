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
//!
//! A backend error (Redis restarted, connection reset) ends the apalis worker: its future
//! returns the error — or, when the worker is not fetching because every slot is taken, a
//! failed probe of the backend ends it (its future is dropped; what it had claimed and not
//! started is handed back by the clean-up below, as after any failure). The supervisor below
//! starts a fresh one with backoff for as long as it takes; while Redis is away the new
//! worker's registration waits for the connection manager to reconnect or fails, and the next
//! one tries again. Meanwhile the set reports itself not
//! running ([`WorkerHealth`], served by `/healthz`): "running" means a worker has registered
//! with its backend (apalis's heartbeat event), not merely that its future exists. The clean-up
//! after a stopped worker (handing back the jobs it claimed but never started) is retried too:
//! right after a failure the backend is usually still away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_core::worker::context::WorkerContext;
use apalis_core::worker::event::Event;
use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ulid::Ulid;

use crate::queue::eager::EagerLane;
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
    /// finished and unstarted ones were handed back) or the backend fails (`Err`). The worker
    /// reports its events to `alive` (see [`Alive::listener`]).
    async fn run_worker(
        &self,
        name: &str,
        options: &WorkerOptions,
        service: StepService,
        alive: Alive,
        shutdown: CancellationToken,
    ) -> Result<(), BackendError>;

    /// Runs once the worker `name` has stopped (cleanly or not) *and* every job it started has
    /// finished, handler and delete: hands back jobs it claimed but never started — apalis
    /// drops a fetch that is in flight when a worker stops, and a failed worker leaves its
    /// buffer behind — wakes the local workers if there were any, and deregisters the name.
    /// Without this they would wait for apalis's orphan recovery (60 s on SQLite, ~5 min on
    /// Redis). Returns how many jobs it handed back; the caller retries an error.
    async fn after_worker(&self, name: &str) -> Result<u64, BackendError>;

    /// Starts helper tasks the workers rely on (e.g. a wake-up subscription).
    fn spawn_helpers(&self, _tasks: &TaskTracker, _shutdown: &CancellationToken) {}

    /// Whether the backend answers now (a server that can go away: Redis). A worker finds out
    /// by itself only when it fetches, and a worker whose slots are all taken — by jobs that
    /// are themselves waiting for the store — does not fetch.
    async fn probe(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// How often the supervisor asks the backend whether it answers, and how long it waits.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A worker that ran this long before dying counts as healthy: restart it without delay growth.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What a worker set says about itself; `/healthz` serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerHealth {
    /// An apalis worker is registered with the backend and fetching jobs. False while a worker
    /// (re)starts — e.g. while Redis is away — and after shutdown.
    pub running: bool,
    /// The apalis worker of the moment, if one is starting or running.
    pub worker: Option<String>,
    /// Workers started again after one stopped on its own (a backend error).
    pub restarts: u64,
    /// What the last worker that stopped on its own stopped with.
    pub last_error: Option<String>,
}

/// Running workers of one queue in this process.
#[derive(Debug)]
pub struct WorkerSet {
    tasks: TaskTracker,
    shutdown: CancellationToken,
    health: watch::Sender<WorkerHealth>,
    /// The way in for jobs started eagerly (same slots, same tasks, same shutdown).
    lane: EagerLane,
}

impl WorkerSet {
    pub(crate) fn spawn(
        source: Arc<dyn WorkerSource>,
        options: WorkerOptions,
        handler: Arc<dyn JobHandler>,
        shutdown: &CancellationToken,
    ) -> Self {
        let tasks = TaskTracker::new();
        let shutdown = shutdown.child_token();
        let slots = Arc::new(Semaphore::new(options.concurrency));
        let lane = EagerLane {
            handler: Arc::clone(&handler),
            slots: Arc::clone(&slots),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        };
        let set = Self { tasks, shutdown, health: watch::channel(WorkerHealth::default()).0, lane };
        source.spawn_helpers(&set.tasks, &set.shutdown);
        let supervisor = Supervisor {
            source,
            options,
            handler,
            slots,
            tasks: set.tasks.clone(),
            shutdown: set.shutdown.clone(),
            health: set.health.clone(),
        };
        set.tasks.spawn(supervisor.run());
        set
    }

    /// Where eager jobs enter this set (see `eager.rs`).
    pub(crate) fn eager_lane(&self) -> EagerLane {
        self.lane.clone()
    }

    /// The name of the apalis worker currently starting or running, if any.
    pub fn worker_name(&self) -> Option<String> {
        self.health.borrow().worker.clone()
    }

    /// The set's health now.
    pub fn health(&self) -> WorkerHealth {
        self.health.borrow().clone()
    }

    /// The set's health, updated as it changes.
    pub fn watch_health(&self) -> watch::Receiver<WorkerHealth> {
        self.health.subscribe()
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

/// Tells the worker set that its apalis worker `name` has talked to its backend: apalis emits
/// a heartbeat event once the worker has registered, and at every heartbeat after that.
#[derive(Clone)]
pub(crate) struct Alive {
    health: watch::Sender<WorkerHealth>,
    name: Arc<str>,
}

impl Alive {
    /// For apalis's `on_event`.
    pub(crate) fn listener(&self) -> impl Fn(&WorkerContext, &Event) + Send + Sync + 'static {
        let alive = self.clone();
        move |_, event| {
            if matches!(event, Event::HeartBeat) {
                alive.registered();
            }
        }
    }

    fn registered(&self) {
        let mut came_back = None;
        self.health.send_if_modified(|h| {
            if h.running || h.worker.as_deref() != Some(&*self.name) {
                return false;
            }
            h.running = true;
            came_back = (h.restarts > 0).then_some(h.restarts);
            true
        });
        match came_back {
            Some(restarts) => tracing::info!(worker = %self.name, restarts, "queue worker running again"),
            None => tracing::debug!(worker = %self.name, "queue worker running"),
        }
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
    health: watch::Sender<WorkerHealth>,
}

impl Supervisor {
    async fn run(self) {
        let mut backoff = RESTART_BACKOFF_MIN;
        // Failures in a row: the first is a warning, the rest of an outage only debug lines.
        let mut failing = 0u32;
        while !self.shutdown.is_cancelled() {
            let name = unique_worker_name();
            self.health.send_modify(|h| {
                h.running = false;
                h.worker = Some(name.clone());
            });
            // This worker's jobs, so its clean-up can wait for exactly them.
            let jobs = TaskTracker::new();
            let service = StepService::new(
                Arc::clone(&self.handler),
                self.source.completer(&name),
                Arc::clone(&self.slots),
                jobs.clone(),
            );
            let alive = Alive { health: self.health.clone(), name: name.as_str().into() };
            let started = Instant::now();
            tracing::debug!(worker = %name, "queue worker starting");
            // The worker stops on its own when a fetch fails; the probe stops it when the
            // backend is away while it is not fetching (every slot taken), so a saturated
            // process reports the outage too, and its restarts wait for the backend like any.
            let result = tokio::select! {
                r = self.source.run_worker(&name, &self.options, service, alive, self.shutdown.clone()) => r,
                e = backend_lost(self.source.as_ref()) => Err(e),
            };
            // A failed worker's jobs may run on for a while; restart without waiting for them.
            let (source, stopped, shutdown) = (Arc::clone(&self.source), name.clone(), self.shutdown.clone());
            self.tasks.spawn(async move {
                jobs.close();
                jobs.wait().await;
                release(source.as_ref(), &stopped, &shutdown).await;
            });
            let error = match result {
                Ok(()) if self.shutdown.is_cancelled() => {
                    self.health.send_modify(|h| {
                        h.running = false;
                        h.worker = None;
                    });
                    tracing::debug!(worker = %name, "queue worker stopped");
                    break;
                }
                Ok(()) => "exited on its own".to_owned(),
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= HEALTHY_RUN {
                backoff = RESTART_BACKOFF_MIN;
            }
            let was_running = self.health.borrow().running;
            if was_running {
                failing = 0;
            }
            failing += 1;
            if failing == 1 {
                tracing::warn!(worker = %name, %error, "queue worker stopped; starting another (with backoff) until the backend answers");
            } else {
                tracing::debug!(worker = %name, %error, attempt = failing, "queue worker could not start");
            }
            self.health.send_modify(|h| {
                h.running = false;
                h.worker = None;
                h.restarts += 1;
                h.last_error = Some(error);
            });
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        }
    }
}

/// Returns once the backend fails to answer a probe (an error, or no answer in time).
async fn backend_lost(source: &dyn WorkerSource) -> BackendError {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        match tokio::time::timeout(PROBE_TIMEOUT, source.probe()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return BackendError::Worker(format!("the backend does not answer: {e}")),
            Err(_) => {
                return BackendError::Worker(format!(
                    "the backend does not answer within {}s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
        }
    }
}

/// Runs the clean-up after the stopped worker `name` until it succeeds: right after a backend
/// error the backend is usually still away. After shutdown it is tried once more, then left
/// to apalis's orphan recovery.
async fn release(source: &dyn WorkerSource, name: &str, shutdown: &CancellationToken) {
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut failed = false;
    loop {
        match source.after_worker(name).await {
            Ok(0) => return,
            Ok(jobs) => {
                tracing::info!(worker = name, jobs, "handed back jobs a stopped worker never started");
                return;
            }
            Err(e) if shutdown.is_cancelled() => {
                tracing::warn!(worker = name, error = %e, "could not release a stopped worker; left to orphan recovery");
                return;
            }
            Err(e) if !failed => {
                failed = true;
                tracing::warn!(worker = name, error = %e, "could not release a stopped worker yet; retrying");
            }
            Err(e) => tracing::debug!(worker = name, error = %e, "could not release a stopped worker yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// Unique per start (see the module doc); the pid helps an operator match workers to processes.
pub(crate) fn unique_worker_name() -> String {
    format!("tollgate-{}-{}", std::process::id(), Ulid::generate())
}
