//! An opened step queue: what the binary holds to enqueue step jobs and to start workers.
//!
//! Producer and workers of one process must share one [`QueueBackend`]: on SQLite the
//! update-hook wake-up only sees inserts made through the same connection pool, and on Redis
//! the producer wakes its local workers directly. [`open`] and [`spawn_workers`] therefore hand
//! out one shared backend per configuration and process; a second [`QueueBackend::open`] of the
//! same queue still works, but its jobs are found by polling (`poll_interval`), not at once.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tollgate_engine::queue::{QueueError, StepJob, StepQueue};

use crate::queue::eager::EagerSlot;
use crate::queue::redis::RedisQueue;
use crate::queue::sqlite::SqliteQueue;
use crate::queue::worker::{WorkerOptions, WorkerSet, WorkerSource};
use crate::queue::{JobHandler, QueueBackendConfig, QueueConfig};

/// The step queue selected by [`QueueConfig`]; implements the engine's [`StepQueue`].
#[derive(Clone, Debug)]
pub struct QueueBackend {
    kind: Kind,
    options: WorkerOptions,
    /// Set when this backend's workers start, if the config asks for eager dispatch.
    eager: EagerSlot,
    eager_on: bool,
}

#[derive(Clone, Debug)]
enum Kind {
    Sqlite(SqliteQueue),
    Redis(RedisQueue),
}

impl QueueBackend {
    /// Validates `config` and opens (creating and migrating if needed) the queue it names, as
    /// a new, unshared backend (see the module doc; [`open`] is usually what you want).
    /// Fails if the SQLite file cannot be prepared or Redis does not answer.
    pub async fn open(config: &QueueConfig) -> Result<Self, QueueError> {
        config.validate()?;
        let kind = match &config.backend {
            QueueBackendConfig::Embedded { path } => Kind::Sqlite(SqliteQueue::open(path).await?),
            QueueBackendConfig::Redis { url, queue } => Kind::Redis(RedisQueue::open(url, queue).await?),
        };
        Ok(Self {
            kind,
            options: WorkerOptions::from_config(config),
            eager: EagerSlot::default(),
            eager_on: config.eager,
        })
    }

    /// Starts this process's workers: up to `concurrency` jobs at a time go to `handler` until
    /// `shutdown` fires (or [`WorkerSet::shutdown`] is called).
    pub fn spawn_workers(&self, handler: Arc<dyn JobHandler>, shutdown: CancellationToken) -> WorkerSet {
        let source: Arc<dyn WorkerSource> = match &self.kind {
            Kind::Sqlite(q) => Arc::new(q.clone()),
            Kind::Redis(q) => Arc::new(q.clone()),
        };
        let set = WorkerSet::spawn(source, self.options.clone(), handler, &shutdown);
        if self.eager_on {
            self.eager.set(set.eager_lane());
        }
        set
    }

    async fn push(&self, jobs: &[StepJob], not_before: Option<SystemTime>) -> Result<(), QueueError> {
        // The caller has journaled the dispatch, so starting before the queue write is safe:
        // a crash in between re-dispatches from the journal, and the claim dedupes.
        if not_before.is_none_or(|at| at <= SystemTime::now()) {
            self.eager.start(jobs);
        }
        match &self.kind {
            Kind::Sqlite(q) => q.enqueue(jobs, not_before).await,
            Kind::Redis(q) => q.enqueue(jobs, not_before).await,
        }
        .map_err(QueueError::from)
    }

    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> Option<&SqliteQueue> {
        match &self.kind {
            Kind::Sqlite(q) => Some(q),
            Kind::Redis(_) => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn redis(&self) -> Option<&RedisQueue> {
        match &self.kind {
            Kind::Redis(q) => Some(q),
            Kind::Sqlite(_) => None,
        }
    }
}

#[async_trait]
impl StepQueue for QueueBackend {
    async fn enqueue(&self, job: StepJob, not_before: Option<SystemTime>) -> Result<(), QueueError> {
        self.push(&[job], not_before).await
    }

    /// One write for all of `jobs`: one commit on SQLite, one script call on Redis.
    async fn enqueue_many(&self, jobs: Vec<StepJob>) -> Result<(), QueueError> {
        self.push(&jobs, None).await
    }
}

/// Backends opened through [`open`], by configuration; weak so the last user closes it.
static SHARED: LazyLock<Mutex<HashMap<QueueConfig, Weak<QueueBackend>>>> = LazyLock::new(Mutex::default);

/// This process's backend for `config`, opened on first use (see the module doc).
pub async fn open(config: &QueueConfig) -> Result<Arc<QueueBackend>, QueueError> {
    let key = shared_key(config);
    if let Some(backend) = lock_shared().get(&key).and_then(Weak::upgrade) {
        return Ok(backend);
    }
    let backend = Arc::new(QueueBackend::open(config).await?);
    // Two first opens racing both succeed; the later one is shared from then on.
    let mut shared = lock_shared();
    shared.retain(|_, b| b.strong_count() > 0);
    shared.insert(key, Arc::downgrade(&backend));
    Ok(backend)
}

/// Starts workers on this process's backend for `config` (opening it if needed), so jobs
/// enqueued through [`open`]'s backend wake them at once.
pub async fn spawn_workers(
    config: &QueueConfig,
    handler: Arc<dyn JobHandler>,
    shutdown: CancellationToken,
) -> Result<WorkerSet, QueueError> {
    Ok(open(config).await?.spawn_workers(handler, shutdown))
}

fn shared_key(config: &QueueConfig) -> QueueConfig {
    let mut key = config.clone();
    if let QueueBackendConfig::Embedded { path } = &mut key.backend
        && let Ok(absolute) = std::path::absolute(&*path)
    {
        *path = absolute;
    }
    key
}

fn lock_shared() -> std::sync::MutexGuard<'static, HashMap<QueueConfig, Weak<QueueBackend>>> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}
