//! The fleet backend: apalis-redis, with our own enqueue and completion scripts.
//!
//! apalis-redis 1.0.0 facts this file works around (measured here, see ARCHITECTURE-GUIDE, and
//! read in its Lua scripts):
//! - Its `push_tasks` clamps `run_at` to "now", so *every* job lands in the scheduled set and
//!   only becomes visible when a fetch promotes it; `fetch_next.lua` promotes all due ids with
//!   one `rpush(unpack(ids))`, which fails with "too many results to unpack" from ~8,000 due
//!   jobs and kills every worker on every fetch from then on (a backlog built while workers
//!   were down wedges the queue for good). It also publishes its "available" event only for
//!   unscheduled jobs, i.e. never. So we enqueue with [`PUSH_SCRIPT`]: the same records in the
//!   same keys, but a due job goes straight onto the active list (fetched `batch_size` at a
//!   time), and the push publishes a wake-up in the same round trip. Only delayed jobs use the
//!   scheduled set, so only ≥ 8,000 delayed jobs falling due between two fetches still hit the
//!   limit; the engine's per-queue in-flight cap keeps far below that.
//! - `lock_tasks(false)`: `fetch_next.lua` already moves fetched ids atomically from the active
//!   list into the fetching worker's in-flight set (LRANGE + LTRIM in one script), so two
//!   workers never receive the same job from a fetch. The lock (`acquire_leases.lua`) only
//!   `LREM`s the id from the active list again — an O(backlog) scan for an id that is no longer
//!   there (~2.5k jobs/s at 50k backlog vs ~42k/s without) — and sets a cosmetic `Running`
//!   status. It does not fence duplicates either: the only duplicate path, orphan recovery
//!   re-pushing the in-flight set of a worker that missed heartbeats but is still running, is
//!   the same with or without it. Lease renewal only refreshes `locked_at`.
//! - `persist_results(false)`: acknowledging through apalis keeps every job's data, metadata and
//!   id (done set) forever, and errors out — killing the worker — when a job is no longer in the
//!   worker's in-flight set. [`COMPLETE_SCRIPT`] deletes the job instead.
//! - `max_attempts` is ignored (hard-coded 25) and idempotency keys are inert without a TTL
//!   (`EXPIRE key 0` deletes them at once): irrelevant here, the engine owns retries and
//!   tolerates duplicates. Never call apalis's `Vacuum`: it deletes jobs awaiting retry.
//! - A stopped worker's name stays registered until the orphan window passes (its `poll_close`
//!   `ZREM`s the in-flight *set key* instead of the worker name), and jobs it had claimed but
//!   not started (a fetch in flight when it stopped, or its buffer if it failed) wait that long
//!   too: [`RELEASE_SCRIPT`] hands them back and deregisters the name.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use apalis_core::worker::ext::event_listener::EventListenerExt;
use apalis_redis::{ConnectionManager, RedisStorage};
use async_trait::async_trait;
use futures::FutureExt;
use redis::aio::ConnectionManagerConfig;
use redis::{Client, Script};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_engine::queue::StepJob;
use ulid::Ulid;

use crate::pubsub::{Event, Subscription};
use crate::queue::error::BackendError;
use crate::queue::service::{CompleteJob, StepService};
use crate::queue::sqlite::unix_secs_ceil;
use crate::queue::wake::{WakeHub, Wakeable};
use crate::queue::worker::{Alive, WorkerOptions, WorkerSource};

/// Writes jobs exactly as apalis's `batch_push.lua` would (data hash, metadata hash), but a
/// due job goes onto the active list, and one wake-up is published if any job is due.
pub(crate) static PUSH_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] task data hash, KEYS[2] active list, KEYS[3] signal list,
-- KEYS[4] task metadata key prefix, KEYS[5] scheduled set
-- ARGV[1] wake channel, ARGV[2] publisher instance,
-- then per job: task id, payload, run_at (unix s; 0 = now)
local due = 0
for i = 3, #ARGV, 3 do
    local id, run_at = ARGV[i], tonumber(ARGV[i + 2])
    if redis.call('HSETNX', KEYS[1], id, ARGV[i + 1]) == 1 then
        redis.call('HSET', KEYS[4] .. ':' .. id, 'attempts', 0, 'max_attempts', 25,
            'status', 'Pending', 'idempotency_key', '')
        if run_at > 0 then
            redis.call('ZADD', KEYS[5], run_at, id)
        else
            redis.call('RPUSH', KEYS[2], id)
            due = due + 1
        end
    end
end
if due > 0 then
    redis.call('DEL', KEYS[3])
    redis.call('LPUSH', KEYS[3], 1)
    redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return due
"#,
    )
});

/// Deletes a handled job — but only while this worker still holds it. If orphan recovery has
/// already re-pushed it (the worker was taken for dead), the data must stay for that second
/// delivery: a fetch of an id whose data is gone fails and kills the fetching worker.
pub(crate) static COMPLETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] the worker's in-flight set, KEYS[2] task data hash, KEYS[3] the task's metadata hash
-- ARGV[1] task id
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('DEL', KEYS[3])
    return 1
end
return 0
"#,
    )
});

/// Clean-up after a stopped worker whose started jobs have all finished: whatever is left in
/// its in-flight set was claimed but never started, so it goes back to the front of the active
/// list (in order, without `unpack`), and the name is deregistered.
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] workers sorted set, KEYS[2] the worker's in-flight set, KEYS[3] its metadata hash,
-- KEYS[4] active list, KEYS[5] signal list
-- ARGV[1] worker name, ARGV[2] wake channel, ARGV[3] publisher instance
local left = redis.call('SMEMBERS', KEYS[2])
table.sort(left)
for i = #left, 1, -1 do
    redis.call('LPUSH', KEYS[4], left[i])
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
if #left > 0 then
    redis.call('DEL', KEYS[5])
    redis.call('LPUSH', KEYS[5], 1)
    redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return #left
"#,
    )
});

/// An opened Redis queue, shared by this process's producer and workers.
#[derive(Clone)]
pub(crate) struct RedisQueue {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    conn: ConnectionManager,
    config: apalis_redis::Config,
    wake: WakeHub,
    /// Tags this process's wake-ups so its own subscription can skip them (it already woke
    /// its workers directly).
    instance: String,
    channel: String,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").field("queue", &self.inner.config.queue).finish()
    }
}

impl RedisQueue {
    /// Connects and checks the server answers, so a wrong URL fails at startup.
    pub(crate) async fn open(url: &str, queue: &str) -> Result<Self, BackendError> {
        let client = Client::open(url)?;
        let mut conn = client.get_connection_manager_with_config(connection_config()).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        let config = apalis_redis::Config::default()
            .queue(queue)
            .lock_tasks(false)
            .persist_results(false)
            // Its events (lock, done, retry…) have no subscriber; the wake-up is ours.
            .emit_events(false);
        // apalis's own naming for "jobs available" (which it never publishes, see above).
        let channel = format!("tasks:{}:available", config.active_jobs_list());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                conn,
                config,
                wake: WakeHub::default(),
                instance: Ulid::generate().to_string(),
                channel,
            }),
        })
    }

    /// Enqueues `jobs` in one script call (one round trip, one wake-up).
    pub(crate) async fn enqueue(&self, jobs: &[StepJob], not_before: Option<SystemTime>) -> Result<(), BackendError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let run_at = not_before.filter(|at| *at > SystemTime::now()).map_or(0, unix_secs_ceil);
        let mut push = PUSH_SCRIPT.prepare_invoke();
        push.key(inner.config.job_data_hash())
            .key(inner.config.active_jobs_list())
            .key(inner.config.signal_list())
            .key(inner.config.job_meta_hash())
            .key(inner.config.scheduled_jobs_set())
            .arg(&inner.channel)
            .arg(&inner.instance);
        for job in jobs {
            push.arg(Ulid::generate().to_string()).arg(serde_json::to_vec(job)?).arg(run_at);
        }
        let due: i64 = push.invoke_async(&mut inner.conn.clone()).await?;
        if due > 0 {
            inner.wake.notify();
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn config(&self) -> &apalis_redis::Config {
        &self.inner.config
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }
}

/// The connection manager's default response timeout (500 ms) turns a slow answer into an
/// error, and an error ends the apalis worker: a push of thousands of jobs, or a fetch on a
/// loaded machine, can take longer. The store's connection allows 5 s too.
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(2)))
}

fn meta_key(config: &apalis_redis::Config, task_id: &str) -> String {
    format!("{}:{task_id}", config.job_meta_hash())
}

fn inflight_set(config: &apalis_redis::Config, worker: &str) -> String {
    config.inflight_set_for(&WorkerContext::new(worker))
}

struct DeleteJob {
    conn: ConnectionManager,
    config: apalis_redis::Config,
    inflight: String,
}

#[async_trait]
impl CompleteJob for DeleteJob {
    async fn complete(&self, task_id: &str) -> Result<(), BackendError> {
        let held: i64 = COMPLETE_SCRIPT
            .key(&self.inflight)
            .key(self.config.job_data_hash())
            .key(meta_key(&self.config, task_id))
            .arg(task_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if held == 0 {
            tracing::info!(task_id, "job was re-queued by orphan recovery meanwhile; kept");
        }
        Ok(())
    }
}

#[async_trait]
impl WorkerSource for RedisQueue {
    fn completer(&self, worker: &str) -> Arc<dyn CompleteJob> {
        Arc::new(DeleteJob {
            conn: self.inner.conn.clone(),
            config: self.inner.config.clone(),
            inflight: inflight_set(&self.inner.config, worker),
        })
    }

    async fn run_worker(
        &self,
        name: &str,
        options: &WorkerOptions,
        service: StepService,
        alive: Alive,
        shutdown: CancellationToken,
    ) -> Result<(), BackendError> {
        let config = self.inner.config.clone().batch_size(options.batch_size);
        let storage = RedisStorage::<Value, _>::new(self.inner.conn.clone()).with_config(config);
        let backend = Wakeable::new(storage, self.inner.wake.subscribe(), options.poll_interval);
        let worker = WorkerBuilder::new(name).backend(backend).on_event(alive.listener()).build(service);
        worker
            .run_until(shutdown.cancelled_owned().map(Ok::<(), apalis_core::error::WorkerError>))
            .await
            .map_err(|e| BackendError::Worker(e.to_string()))
    }

    async fn after_worker(&self, name: &str) -> Result<u64, BackendError> {
        let inner = &self.inner;
        let config = &inner.config;
        let released: u64 = RELEASE_SCRIPT
            .key(config.workers_set())
            .key(inflight_set(config, name))
            .key(config.worker_metadata_key(&WorkerContext::new(name)))
            .key(config.active_jobs_list())
            .key(config.signal_list())
            .arg(name)
            .arg(&inner.channel)
            .arg(&inner.instance)
            .invoke_async(&mut inner.conn.clone())
            .await?;
        if released > 0 {
            inner.wake.notify();
        }
        Ok(released)
    }

    fn spawn_helpers(&self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        tasks.spawn(relay_wakeups(Arc::clone(&self.inner), shutdown.clone()));
    }

    async fn probe(&self) -> Result<(), BackendError> {
        redis::cmd("PING").query_async::<()>(&mut self.inner.conn.clone()).await?;
        Ok(())
    }
}

/// Turns wake-ups published by other processes into local ones. Before waking the local
/// workers it waits for a `PING` on the connection they fetch on (see `wake.rs`: every fetch
/// sent before the signal arrived then has its reply). After a lost connection the
/// subscription comes back by itself (see `crate::pubsub`), and a (re)subscription wakes the
/// workers for anything published meanwhile; the poll interval covers the gap.
async fn relay_wakeups(inner: Arc<Inner>, shutdown: CancellationToken) {
    // Signals that arrive during a barrier coalesce into one more round.
    let arrived = tokio::sync::Notify::new();
    let subscription = Subscription::lazy(inner.client.clone(), inner.channel.clone(), "queue wake-up");
    let listen = subscription.run(shutdown.clone(), |event| match event {
        Event::Message(m) if m.get_payload_bytes() == inner.instance.as_bytes() => {}
        Event::Subscribed | Event::Message(_) => arrived.notify_one(),
    });
    let relay = async {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = arrived.notified() => {}
            }
            // Its failure means the connection is gone; the workers find out themselves.
            let _ = redis::cmd("PING").query_async::<()>(&mut inner.conn.clone()).await;
            inner.wake.notify();
        }
    };
    tokio::join!(listen, relay);
}
