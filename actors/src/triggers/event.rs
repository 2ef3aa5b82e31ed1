//! The event source: follows the internal bus and fires for each event of its name that
//! passes its filter, with the event's payload as the fire's payload, keyed by the event's id (so every engine process may follow the bus and
//! each event still starts one run). Its cursor (the time of the last event fired) is saved,
//! so events published while the engine was down fire when it comes back, within the bus's
//! retention.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tollgate_engine::events::EventName;
use tollgate_engine::spec::triggers::EventTrigger;

use crate::system::now_ms;
use crate::triggers::source::{TriggerContext, TriggerError, TriggerSource};

pub struct EventSource(pub EventTrigger);

/// How long one tail call waits.
const TAIL_WAIT: Duration = Duration::from_secs(1);
/// Ids of recently fired events kept to skip re-reads of the cursor's millisecond.
const RECENT: usize = 1024;
/// Events read in one catch-up.
const READ_LIMIT: usize = 10_000;

/// The dedup key of an event.
pub fn event_key(id: &str) -> String {
    format!("event:{id}")
}

#[async_trait]
impl TriggerSource for EventSource {
    async fn run(&self, ctx: &TriggerContext) -> Result<(), TriggerError> {
        let bus = ctx
            .fire_path
            .tollgate()
            .engine
            .events
            .clone()
            .ok_or_else(|| TriggerError("this process has no event bus".into()))?;
        // The workflow's owner's events only.
        let owner = ctx.spec.spec().owner.to_string();
        let event_name = EventName::new(&owner, &self.0.name);
        let name_id = bus.name_id(event_name);
        // From the saved cursor, or from now. Then start following, then catch up: an event
        // published in between is tailed or read, never neither.
        let mut from = ctx.cursor().get("at").and_then(|v| v.as_u64()).unwrap_or_else(now_ms);
        let mut tail = bus.end().await.map_err(|e| TriggerError(format!("event bus: {e}")))?;
        let mut recent: VecDeque<String> = VecDeque::new();
        let mut pending = true;
        ctx.set_connected(true);
        loop {
            if pending {
                for event in bus.read_since(event_name, from, READ_LIMIT).await? {
                    if recent.contains(&event.id) {
                        continue;
                    }
                    if self.0.passes(&event.payload) {
                        ctx.fire(
                            event_key(&event.id),
                            event.payload.clone(),
                            format!("event {} ({})", event.id, event.name),
                        )
                        .await?;
                    }
                    from = from.max(event.at);
                    recent.push_back(event.id);
                    if recent.len() > RECENT {
                        recent.pop_front();
                    }
                    ctx.set_cursor(json!({ "at": from }));
                }
            }
            let tailed = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = bus.tail(&mut tail, TAIL_WAIT) => r,
            };
            match tailed {
                Ok(events) => {
                    ctx.set_connected(true);
                    pending = events.iter().any(|e| e.name_id == name_id);
                }
                Err(e) => {
                    ctx.set_connected(false);
                    return Err(TriggerError(format!("event bus: {e}")));
                }
            }
        }
    }
}
