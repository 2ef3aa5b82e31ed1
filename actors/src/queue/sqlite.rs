//! The embedded backend: apalis-sqlite on one local file, woken by SQLite's update hook.
//!
//! apalis-sqlite 1.0.0 facts this file works around (measured here, see ARCHITECTURE-GUIDE):
//! - `SqliteStorage::setup` runs `PRAGMA synchronous = OFF`. That pragma is per connection, so
//!   on a pool it silently lands on whichever connection ran it. We run `setup` on a throw-away
//!   one-connection pool and give every working connection `synchronous = NORMAL` (durable
//!   across a process crash in WAL mode; FULL would add an fsync per enqueue and per completion).
//! - Completion updates slow down as the `Jobs` table grows (~350 jobs/s at 10k rows). We run
//!   with `persist_results(false)` and instead *delete* a job's row once our handler returns, so
//!   the table only ever holds pending and running jobs. (Without the delete, rows of a handled
//!   job stay `Queued` under their worker's name forever, and the first time that worker stops
//!   heartbeating apalis re-enqueues every one of them.)
//! - Task ids must be ULIDs (one non-ULID id makes every fetch fail and wedges the queue): we
//!   always set a fresh ULID ourselves.
//! - A shared file can answer "database is locked" under a concurrent producer: every
//!   connection gets an explicit `busy_timeout`.
//! - `lock_tasks(false)`: the fetch (`UPDATE … SET lock_by = worker … RETURNING`) already claims
//!   jobs atomically; the extra lock write per job buys nothing.
//!
//! `SqliteStorage::connect_with_callback` (the README's hooked storage) takes only a URL, so its
//! pool can have neither a busy timeout nor our synchronous level; we install the same update
//! hook ourselves in `after_connect`. It only sees inserts made through this pool, i.e. through
//! this process's [`SqliteQueue`]; producers elsewhere are found by the poll interval.

use std::path::Path;
use std::time::{Duration, SystemTime};

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage};
use async_trait::async_trait;
use futures::FutureExt;
use serde_json::Value;
use sqlx::sqlite::{SqliteJournalMode, SqliteOperation, SqliteSynchronous};
use tokio_util::sync::CancellationToken;
use tollgate_engine::queue::StepJob;
use ulid::Ulid;

use crate::queue::error::BackendError;
use crate::queue::service::{CompleteJob, StepService};
use crate::queue::wake::{WakeHub, Wakeable};
use crate::queue::worker::{WorkerOptions, WorkerSource};

/// The apalis queue (`Jobs.job_type`) holding step jobs.
pub(crate) const QUEUE_NAME: &str = "tollgate.steps";

/// How long a statement waits for another writer (this process or another) before
/// "database is locked".
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the working pool. SQLite admits one writer at a time and every queue
/// statement writes, so more connections only move the queueing from the pool's fair async
/// wait into SQLite's sleep-based busy handler (whose first back-off is already 1 ms).
pub(crate) const POOL_CONNECTIONS: u32 = 1;

/// The table apalis-sqlite keeps jobs in (its `JOBS_TABLE`).
const JOBS_TABLE: &str = "Jobs";

/// An opened SQLite queue file, shared by this process's producer and workers.
#[derive(Clone, Debug)]
pub(crate) struct SqliteQueue {
    pool: SqlitePool,
    wake: WakeHub,
}

impl SqliteQueue {
    pub(crate) async fn open(path: &Path) -> Result<Self, BackendError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| BackendError::Io { path: dir.display().to_string(), source })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);

        // `setup` leaves `synchronous = OFF` on the connection it used: let that connection die.
        let setup_pool =
            SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        let setup = SqliteStorage::setup(&setup_pool).await;
        setup_pool.close().await;
        setup?;

        let wake = WakeHub::default();
        let hook_wake = wake.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .after_connect(move |conn, _meta| {
                let wake = hook_wake.clone();
                Box::pin(async move {
                    conn.lock_handle().await?.set_update_hook(move |event| {
                        if event.operation == SqliteOperation::Insert && event.table == JOBS_TABLE
                        {
                            wake.notify();
                        }
                    });
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, wake })
    }

    pub(crate) async fn enqueue(
        &self,
        job: &StepJob,
        not_before: Option<SystemTime>,
    ) -> Result<(), BackendError> {
        let mut task = TaskBuilder::new(serde_json::to_vec(job)?)
            .task_id(TaskId::from_ulid(Ulid::generate()));
        if let Some(at) = not_before {
            task = task.run_at_timestamp(unix_secs_ceil(at));
        }
        let mut conn = self.pool.acquire().await?;
        // A single autocommit INSERT: no BEGIN/COMMIT round trips, and the update hook fires
        // from inside it.
        apalis_sqlite::queries::push_tasks(&mut *conn, QUEUE_NAME, &[task.build()]).await?;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// apalis keeps `run_at` in whole seconds; rounding up keeps "no earlier than `not_before`"
/// (a job may start up to a second late, never early).
pub(crate) fn unix_secs_ceil(at: SystemTime) -> u64 {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}

/// Deleting the row is the whole acknowledgement (see the module doc).
#[derive(Debug)]
struct DeleteRow {
    pool: SqlitePool,
}

#[async_trait]
impl CompleteJob for DeleteRow {
    async fn complete(&self, task_id: &str) -> Result<(), BackendError> {
        sqlx::query("DELETE FROM Jobs WHERE id = ?1").bind(task_id).execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl WorkerSource for SqliteQueue {
    fn completer(&self, _worker: &str) -> std::sync::Arc<dyn CompleteJob> {
        std::sync::Arc::new(DeleteRow { pool: self.pool.clone() })
    }

    async fn run_worker(
        &self,
        name: &str,
        options: &WorkerOptions,
        service: StepService,
        shutdown: CancellationToken,
    ) -> Result<(), BackendError> {
        let config = apalis_sqlite::Config::default()
            .queue(QUEUE_NAME)
            .batch_size(options.batch_size)
            .lock_tasks(false)
            .persist_results(false);
        let storage = SqliteStorage::<Value>::new(&self.pool).with_config(config);
        let backend = Wakeable::new(storage, self.wake.subscribe(), options.poll_interval);
        let worker = WorkerBuilder::new(name).backend(backend).build(service);
        worker
            .run_until(shutdown.cancelled_owned().map(Ok::<(), apalis_core::error::WorkerError>))
            .await
            .map_err(|e| BackendError::Worker(e.to_string()))
    }

    async fn after_worker(&self, _name: &str) {}
}
