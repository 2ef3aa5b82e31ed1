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
//!
//! Write cost, measured here: apalis's `Jobs` table carries ten indexes, so every insert or
//! delete dirties ~10 pages and costs ~0.4 ms on this machine (vs ~0.06 ms for a plain table),
//! while deleting 50 rows in one statement costs ~0.05 ms per row. So all our writes go through
//! one writer task that commits whatever has queued up — inserts and deletes together — in one
//! transaction ("group commit"): one job at a time pays nothing extra, a burst shares commits.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::ext::event_listener::EventListenerExt;
use apalis_sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage, SqliteTask};
use async_trait::async_trait;
use futures::FutureExt;
use serde_json::Value;
use sqlx::sqlite::{SqliteJournalMode, SqliteOperation, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tollgate_engine::queue::StepJob;
use ulid::Ulid;

use crate::queue::error::BackendError;
use crate::queue::service::{CompleteJob, StepService};
use crate::queue::wake::{WakeHub, Wakeable};
use crate::queue::worker::{Alive, WorkerOptions, WorkerSource};

/// The apalis queue (`Jobs.job_type`) holding step jobs.
pub(crate) const QUEUE_NAME: &str = "tollgate.steps";

/// How long a statement waits for another writer (this process or another) before
/// "database is locked".
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the working pool. SQLite admits one writer at a time and every queue
/// statement writes (apalis's fetch is an `UPDATE`), so a second connection only moves the
/// queueing from the pool's fair async wait into SQLite's sleep-based busy handler, whose
/// first back-off is already 1 ms. Measured here (`examples/queue_latency.rs`): with two
/// connections idle pickup p50 was 2.0-2.6 ms and, under load, fetches starved behind the
/// writer (p50 ~600 ms); with one, 1.1 ms and 2.1-2.5 ms.
pub(crate) const POOL_CONNECTIONS: u32 = 1;

/// Most writes one group commit takes.
const MAX_GROUP: usize = 512;

/// The table apalis-sqlite keeps jobs in (its `JOBS_TABLE`).
const JOBS_TABLE: &str = "Jobs";

/// An opened SQLite queue file, shared by this process's producer and workers.
#[derive(Clone, Debug)]
pub(crate) struct SqliteQueue {
    pool: SqlitePool,
    wake: WakeHub,
    writes: mpsc::UnboundedSender<Write>,
}

/// A write for the group-commit task; each reports back once committed.
#[derive(Debug)]
enum Write {
    Insert(Vec<SqliteTask>, oneshot::Sender<Result<(), String>>),
    Delete(String, oneshot::Sender<Result<(), String>>),
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
            .foreign_keys(true)
            // See `checkpoint`.
            .pragma("wal_autocheckpoint", "0");

        // `setup` leaves `synchronous = OFF` on the connection it used: let that connection die.
        let setup_pool = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        let setup = SqliteStorage::setup(&setup_pool).await;
        setup_pool.close().await;
        setup?;

        let wake = WakeHub::default();
        let hook_wake = wake.clone();
        // A connection SQLite took out of its transaction after a write error (a full disk)
        // is replaced, as the store's are (see `SqliteBackend::pool_options`).
        let pool = tollgate_connectors::store::SqliteBackend::pool_options()
            .max_connections(POOL_CONNECTIONS)
            // Reopening costs milliseconds on the next write; a local file needs no recycling.
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(move |conn, _meta| {
                let wake = hook_wake.clone();
                Box::pin(async move {
                    conn.lock_handle().await?.set_update_hook(move |event| {
                        if event.operation == SqliteOperation::Insert && event.table == JOBS_TABLE {
                            wake.notify();
                        }
                    });
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        let (writes, queued) = mpsc::unbounded_channel();
        // Neither is a long-lived job of its own: both end when the last handle to this queue
        // (and so the last sender) is gone, the writer after committing what was queued.
        tokio::spawn(group_commit(pool.clone(), queued));
        let checkpointer = sqlx::ConnectOptions::connect(&options).await?;
        tokio::spawn(checkpoint(checkpointer, writes.downgrade()));
        Ok(Self { pool, wake, writes })
    }

    /// Enqueues `jobs` in one commit.
    pub(crate) async fn enqueue(&self, jobs: &[StepJob], not_before: Option<SystemTime>) -> Result<(), BackendError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut tasks = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut task = TaskBuilder::new(serde_json::to_vec(job)?).task_id(TaskId::from_ulid(Ulid::generate()));
            if let Some(at) = not_before {
                task = task.run_at_timestamp(unix_secs_ceil(at));
            }
            tasks.push(task.build());
        }
        self.write(|done| Write::Insert(tasks, done)).await
    }

    async fn write(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Write,
    ) -> Result<(), BackendError> {
        let (done, committed) = oneshot::channel();
        self.writes.send(write(done)).map_err(|_| BackendError::Closed)?;
        committed.await.map_err(|_| BackendError::Closed)?.map_err(BackendError::Commit)
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Commits queued writes in batches until every sender is gone. The update hook fires while
/// the inserts run, so woken workers queue for the pool's one connection and fetch right after
/// the commit.
async fn group_commit(pool: SqlitePool, mut queued: mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while queued.recv_many(&mut batch, MAX_GROUP).await > 0 {
        let result = commit(&pool, &batch).await.map_err(|e| e.to_string());
        for write in batch.drain(..) {
            let (Write::Insert(_, done) | Write::Delete(_, done)) = write;
            // The caller may have stopped waiting; the write stands either way.
            let _ = done.send(result.clone());
        }
    }
}

async fn commit(pool: &SqlitePool, batch: &[Write]) -> Result<(), BackendError> {
    let mut inserts = Vec::new();
    let mut deletes = Vec::new();
    for write in batch {
        match write {
            Write::Insert(tasks, _) => inserts.extend(tasks.iter().cloned()),
            Write::Delete(id, _) => deletes.push(id.as_str()),
        }
    }
    let mut conn = pool.acquire().await?;
    // A lone write runs as one autocommit statement: BEGIN and COMMIT would be two more round
    // trips to sqlx's connection thread on the idle path.
    if batch.len() == 1 {
        return write_all(&mut conn, &inserts, &deletes).await;
    }
    let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
    write_all(&mut tx, &inserts, &deletes).await?;
    tx.commit().await?;
    Ok(())
}

async fn write_all(
    conn: &mut sqlx::SqliteConnection,
    inserts: &[SqliteTask],
    deletes: &[&str],
) -> Result<(), BackendError> {
    if !inserts.is_empty() {
        apalis_sqlite::queries::push_tasks(conn, QUEUE_NAME, inserts).await?;
    }
    if !deletes.is_empty() {
        sqlx::query("DELETE FROM Jobs WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(serde_json::to_string(deletes)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Checkpoints the WAL from a connection of its own. SQLite's automatic checkpoint runs inside
/// whichever commit crosses 1,000 WAL pages, i.e. in our writer, and its fsyncs stalled that
/// commit — and every fetch queued behind it — by 15-20 ms (measured here: idle pickup p99
/// ~16-19 ms with it, ~4-8 ms with this). A passive checkpoint beside the writer never blocks
/// it. Ends when the queue's write channel is gone.
async fn checkpoint(mut conn: sqlx::SqliteConnection, alive: mpsc::WeakUnboundedSender<Write>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if alive.upgrade().is_none() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await {
            tracing::warn!(error = %e, "queue WAL checkpoint failed");
        }
    }
}

/// Hands back the jobs a stopped worker claimed but never started (every job it started has
/// been deleted by now) and removes its `Workers` row, which apalis never does.
async fn release_worker(pool: &SqlitePool, name: &str) -> Result<u64, BackendError> {
    let mut tx = pool.begin().await?;
    let released = sqlx::query(
        "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
         WHERE lock_by = ?1 AND status IN ('Queued', 'Running')",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM Workers WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM Jobs WHERE lock_by = ?1)")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(released)
}

/// apalis keeps `run_at` in whole seconds; rounding up keeps "no earlier than `not_before`"
/// (a job may start up to a second late, never early).
pub(crate) fn unix_secs_ceil(at: SystemTime) -> u64 {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}

/// Deleting the row is the whole acknowledgement (see the module doc).
#[async_trait]
impl CompleteJob for SqliteQueue {
    async fn complete(&self, task_id: &str) -> Result<(), BackendError> {
        self.write(|done| Write::Delete(task_id.to_owned(), done)).await
    }
}

#[async_trait]
impl WorkerSource for SqliteQueue {
    fn completer(&self, _worker: &str) -> Arc<dyn CompleteJob> {
        Arc::new(self.clone())
    }

    async fn run_worker(
        &self,
        name: &str,
        options: &WorkerOptions,
        service: StepService,
        alive: Alive,
        shutdown: CancellationToken,
    ) -> Result<(), BackendError> {
        let config = apalis_sqlite::Config::default()
            .queue(QUEUE_NAME)
            .batch_size(options.batch_size)
            .lock_tasks(false)
            .persist_results(false);
        let storage = SqliteStorage::<Value>::new(&self.pool).with_config(config);
        let backend = Wakeable::new(storage, self.wake.subscribe(), options.poll_interval);
        let worker = WorkerBuilder::new(name).backend(backend).on_event(alive.listener()).build(service);
        worker
            .run_until(shutdown.cancelled_owned().map(Ok::<(), apalis_core::error::WorkerError>))
            .await
            .map_err(|e| BackendError::Worker(e.to_string()))
    }

    async fn after_worker(&self, name: &str) -> Result<u64, BackendError> {
        let released = release_worker(&self.pool, name).await?;
        if released > 0 {
            // An UPDATE, which the insert hook does not see.
            self.wake.notify();
        }
        Ok(released)
    }
}
