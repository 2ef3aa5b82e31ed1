//! The cron source: fires each slot of its schedule, keyed by the slot's time, so every engine
//! process can run the same trigger and each slot still starts one run (the fire path's claim
//! decides which process's fire wins; the others are recorded as duplicates). After downtime
//! the missed-slot policy (`all` / `last` / `none`, within the catch-up window) decides which
//! slots since the last one seen are fired; the last slot is the trigger's saved cursor.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use tollgate_engine::spec::triggers::CronTrigger;

use crate::system::now_ms;
use crate::triggers::source::{TriggerContext, TriggerError, TriggerSource};

pub struct CronSource(pub CronTrigger);

/// The dedup key of a slot.
pub fn slot_key(slot_ms: u64) -> String {
    format!("slot:{slot_ms}")
}

fn rfc3339(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms as i64).map(|t| t.to_rfc3339()).unwrap_or_default()
}

impl CronSource {
    async fn fire_slot(&self, ctx: &TriggerContext, slot: u64) -> Result<(), TriggerError> {
        let at = rfc3339(slot);
        let payload = json!({ "slot": at, "slot_ms": slot, "schedule": self.0.schedule });
        ctx.fire(slot_key(slot), payload, format!("slot {at}")).await?;
        ctx.set_cursor(json!({ "last_slot": slot }));
        Ok(())
    }
}

#[async_trait]
impl TriggerSource for CronSource {
    async fn run(&self, ctx: &TriggerContext) -> Result<(), TriggerError> {
        let schedule = self.0.parse().map_err(TriggerError)?;
        let started = now_ms();
        let last_seen = ctx.cursor().get("last_slot").and_then(|v| v.as_u64());
        ctx.set_connected(true);
        let mut last = last_seen.unwrap_or(started);
        for slot in schedule.missed(last_seen, started, self.0.missed, self.0.catch_up) {
            self.fire_slot(ctx, slot).await?;
        }
        // Everything up to now is settled by the policy, fired or not.
        last = last.max(started);
        let catch_up = self.0.catch_up.as_millis() as u64;
        loop {
            // A process that stalled longer than the catch-up window skips what lies beyond it.
            let base = last.max(now_ms().saturating_sub(catch_up));
            let Some(next) = schedule.next_after(base) else {
                ctx.shutdown.cancelled().await; // the schedule has no further slot
                return Ok(());
            };
            let wait = Duration::from_millis(next.saturating_sub(now_ms()));
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            // Wall clock and the timer may disagree by a little: never fire a slot early.
            while now_ms() < next {
                tokio::time::sleep(Duration::from_millis(next - now_ms())).await;
            }
            self.fire_slot(ctx, next).await?;
            last = next;
        }
    }
}
