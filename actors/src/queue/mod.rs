//! The step queue on apalis 1.0: an embedded SQLite file (the default) or Redis (fleets).
//!
//! A run hands a ready step to the worker fleet through the engine's port
//! [`tollgate_engine::queue::StepQueue`]; the payload is a [`StepJob`] (ids only, JSON). Workers
//! pull jobs with apalis and hand each to a [`JobHandler`], which loads everything else from our
//! store and records the step's outcome there.
//!
//! The queue is a delivery mechanism, not a source of truth: apalis never retries (the engine
//! owns retries and timeouts and enqueues a *new* job per attempt), apalis results are never
//! read, and a rare duplicate delivery is tolerated because outcomes are first-writer-wins and
//! side effects carry idempotency keys. So once our handler returns, the job is *deleted* (see
//! `service.rs`) instead of being acknowledged into apalis's result bookkeeping, which both
//! backends would otherwise keep forever.
//!
//! ```text
//! let queue = queue::open(&config).await?;               // Arc<QueueBackend>, a StepQueue
//! queue.enqueue(job, None).await?;
//! let workers = queue.spawn_workers(handler, shutdown);  // or queue::spawn_workers(&config, …)
//! workers.shutdown().await;                             // stop fetching, finish in-flight jobs
//! ```
//!
//! Layout: `mod.rs` config and traits, `backend.rs` the opened queue ([`QueueBackend`]),
//! `sqlite.rs` / `redis.rs` the two backends, `wake.rs` how an idle worker learns of new jobs,
//! `service.rs` what happens to one delivered job, `eager.rs` the local shortcut to a free
//! worker slot, `worker.rs` the supervised worker loop,
//! `error.rs` the adapters' errors.

mod backend;
mod eager;
mod error;
mod redis;
mod service;
mod sqlite;
mod wake;
mod worker;

#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tollgate_engine::queue::QueueError;
pub use tollgate_engine::queue::StepJob;

pub use crate::queue::backend::{QueueBackend, open, spawn_workers};
pub use crate::queue::worker::{WorkerHealth, WorkerSet};

/// How and where step jobs are queued; owned by the binary's config (`[queue]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Which backend holds the jobs: an embedded SQLite file (default) or a Redis server.
    pub backend: QueueBackendConfig,
    /// How many jobs one process runs at once. Each job is a tracked tokio task, so this is
    /// also the bound on concurrently running step handlers in this process.
    pub concurrency: usize,
    /// How often an idle worker looks for due jobs when nothing woke it. New jobs normally wake
    /// workers at once (SQLite update hook, Redis pub/sub); this interval covers delayed jobs
    /// becoming due, producers in other processes on SQLite, and lost wake-ups. apalis alone
    /// would only look again at its 30 s heartbeat.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Jobs enqueued through this process's backend also go straight to a free slot of its
    /// workers, if one is free (see `eager.rs`).
    pub eager: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            backend: QueueBackendConfig::default(),
            concurrency: 16,
            poll_interval: Duration::from_millis(200),
            eager: false,
        }
    }
}

impl QueueConfig {
    /// The queue of the application config: `data_dir/queue.db`, or the Redis queue
    /// `{namespace}:steps` (its own key prefix, apart from the store's records).
    pub fn from_app(config: &crate::config::Config) -> Self {
        let backend = match config.backend {
            crate::config::BackendKind::Embedded => {
                QueueBackendConfig::Embedded { path: config.data_dir.join("queue.db") }
            }
            crate::config::BackendKind::Redis => QueueBackendConfig::Redis {
                url: config.redis_url.clone(),
                queue: format!("{}:steps", config.namespace),
            },
        };
        Self {
            backend,
            concurrency: config.worker_concurrency,
            poll_interval: config.poll_interval,
            eager: config.eager_dispatch,
        }
    }

    /// Checks what serde cannot: positive knobs and a usable queue name.
    pub fn validate(&self) -> Result<(), QueueError> {
        if self.concurrency == 0 {
            return Err(QueueError("queue.concurrency must be at least 1".into()));
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(30) {
            return Err(QueueError("queue.poll_interval must be between 1ms and 30s (apalis's heartbeat)".into()));
        }
        match &self.backend {
            QueueBackendConfig::Embedded { path } if path.as_os_str().is_empty() => {
                Err(QueueError("queue.backend.path must not be empty".into()))
            }
            QueueBackendConfig::Redis { queue, .. } if !is_valid_queue_name(queue) => {
                Err(QueueError(format!("queue.backend.queue {queue:?}: use 1..=64 characters of [A-Za-z0-9_.:-]")))
            }
            _ => Ok(()),
        }
    }
}

/// The queue's storage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum QueueBackendConfig {
    /// One SQLite file, no server; the default for a single process.
    Embedded {
        /// The SQLite file holding the jobs; created (with its directory) if missing.
        path: PathBuf,
    },
    /// A Redis server shared by a fleet of worker processes.
    Redis {
        /// Connection URL, e.g. `redis://127.0.0.1:6379`.
        url: String,
        /// Queue name: prefix of every key apalis writes (`{queue}:active`, `{queue}:data`…).
        queue: String,
    },
}

impl Default for QueueBackendConfig {
    fn default() -> Self {
        Self::Embedded { path: PathBuf::from("data/queue.db") }
    }
}

fn is_valid_queue_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// What a worker does with one delivered job.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Runs the step and records its outcome (success or failure) in our store, then returns
    /// `Ok`. `Err` only for a job that cannot be processed at all (unknown run, undecryptable
    /// input); it is dropped, never retried by the queue.
    async fn handle(&self, job: StepJob) -> Result<(), JobRejected>;
}

/// A job that cannot be processed at all; mapped to apalis's `AbortError`.
#[derive(Debug, thiserror::Error)]
#[error("job rejected: {reason}")]
pub struct JobRejected {
    /// Why, for the log; never contains step data.
    pub reason: String,
}

impl JobRejected {
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}
