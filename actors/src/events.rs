//! The internal event bus in the running system: opening it for the configured backend, and
//! the dispatcher — a task in every process that drives runs, tailing the bus and routing
//! each new event to the runs registered as waiting for its name (the store index
//! `event-waits/{name id}`), which the supervisor wakes if they are passivated. The run
//! actor registers a run before it looks on the bus for an event already there, so an event
//! is either found by that look or routed afterwards — provided the dispatcher's cursor was
//! fixed before any run could look: the process takes it ([`EventBus::end`]) before its
//! supervisor exists. A tail that resumes after an outage continues from its cursor, so no
//! event is skipped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;
use tollgate_connectors::events::{RedisEventBus, SqliteEventBus};
use tollgate_engine::crypto::MasterKey;
use tollgate_engine::events::{EventBus, TailCursor, waiters_key};
use tollgate_engine::ids::RunId;

use crate::config::{BackendKind, Config};
use crate::run_actor::RunMsg;
use crate::supervisor::SupervisorMsg;
use crate::system::Engine;

/// How long one tail call waits for a new event before asking again.
const TAIL_WAIT: Duration = Duration::from_secs(1);
/// Backoff between tail attempts while the bus is unavailable: doubles up to the last.
const TAIL_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The bus for the configured backend: Redis streams, or `data_dir/events.db`.
pub async fn open_bus(config: &Config, master: &MasterKey) -> anyhow::Result<Arc<dyn EventBus>> {
    Ok(match config.backend {
        BackendKind::Embedded => {
            let path = config.data_dir.join("events.db");
            Arc::new(
                SqliteEventBus::open(&path, master, config.event_retention)
                    .await
                    .with_context(|| format!("opening the event bus at {}", path.display()))?,
            )
        }
        BackendKind::Redis => Arc::new(
            RedisEventBus::connect(&config.redis_url, &config.namespace, master, config.event_retention)
                .await
                .with_context(|| format!("connecting the event bus to Redis at {}", config.redis_url))?,
        ),
    })
}

/// Tail the bus from `cursor` (taken before any run actor of this process started) until
/// `shutdown`, routing each event to the runs waiting for its name.
pub async fn dispatch(
    engine: Arc<Engine>,
    bus: Arc<dyn EventBus>,
    supervisor: ActorRef<SupervisorMsg>,
    mut cursor: TailCursor,
    shutdown: CancellationToken,
) {
    let mut backoff = TAIL_BACKOFF.0;
    loop {
        let tailed = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = bus.tail(&mut cursor, TAIL_WAIT) => r,
        };
        let events = match tailed {
            Ok(events) => {
                backoff = TAIL_BACKOFF.0;
                events
            }
            Err(e) => {
                tracing::warn!("event bus tail failed (retrying in {backoff:?}): {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(TAIL_BACKOFF.1);
                continue;
            }
        };
        // One look-up per name in the batch.
        let mut names: Vec<&str> = events.iter().map(|e| e.name_id.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name_id in names {
            let waiters = loop {
                match engine.store.backend().index_members(&waiters_key(name_id)).await {
                    Ok(w) => break w,
                    Err(e) => {
                        tracing::warn!("reading the runs waiting for an event failed (retrying): {e}");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                    }
                }
            };
            for run in waiters {
                let _ =
                    supervisor.send_message(SupervisorMsg::Route { run: RunId::new(run), msg: RunMsg::EventsArrived });
            }
        }
    }
}

impl crate::service::Tollgate {
    /// Publish an event in `owner`'s scope on the internal bus (tests, benchmarks; on
    /// someone's behalf, `emit_event_as` checks they may). With a `dedup` key, a second
    /// publish under the same key (per owner) within the retention period publishes nothing
    /// and answers with the first one's id.
    pub async fn emit_event(
        &self,
        owner: &str,
        name: &str,
        payload: &serde_json::Value,
        dedup: Option<&str>,
    ) -> Result<tollgate_engine::events::Published, crate::service::ServiceError> {
        let bus = self
            .engine
            .events
            .as_ref()
            .ok_or_else(|| crate::service::ServiceError::Engine("this process has no event bus".into()))?;
        Ok(bus.publish(tollgate_engine::events::EventName::new(owner, name), payload, dedup).await?)
    }
}
