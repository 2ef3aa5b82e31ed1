//! `cron:` — a schedule (a standard cron expression, seconds optional) in a time zone, and
//! what to do about slots missed while no engine ran: `all`, `last` or `none`, within a
//! catch-up window. Slot arithmetic is here (pure); the actor only sleeps and fires.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::SpecProblem;
use crate::spec::validate::problem;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    /// A cron expression: `min hour day month weekday`, or with seconds first
    /// (`sec min hour day month weekday`). `@daily`, `@hourly`… are accepted.
    pub schedule: String,
    /// IANA time zone the schedule is read in (`Europe/Stockholm`); default UTC. Daylight
    /// saving follows Vixie cron: a fixed-time slot in a skipped hour fires right after the
    /// gap (02:30 → 03:00 that day), one in a repeated hour fires once; interval slots
    /// (`*/5`) in a gap are skipped and run for each wall-clock match in a repeated hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Slots missed while no engine was running: `all` fires each one, `last` only the most
    /// recent, `none` none (default `last`). Only slots within `catch_up` count.
    #[serde(default)]
    pub missed: MissedSlots,
    /// How far back missed slots are caught up (default 1h).
    #[serde(default = "default_catch_up", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub catch_up: Duration,
}

fn default_catch_up() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissedSlots {
    All,
    #[default]
    Last,
    None,
}

/// A parsed schedule in its time zone.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

/// At most this many missed slots are caught up at once (`all` over a long window of a
/// per-second schedule would otherwise start a flood).
pub const MAX_CATCH_UP: usize = 1000;

impl CronTrigger {
    pub(crate) fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if let Err(e) = self.parse() {
            p.push(problem(format!("{at}.cron"), e));
        }
    }

    /// The schedule, parsed.
    pub fn parse(&self) -> Result<CronSchedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&self.schedule)
            .map_err(|e| format!("schedule `{}`: {e}", self.schedule))?;
        let tz = match &self.timezone {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| format!("timezone `{name}` is not an IANA time zone (e.g. Europe/Stockholm)"))?,
        };
        Ok(CronSchedule { cron, tz })
    }
}

impl CronSchedule {
    /// The first slot strictly after `after_ms` (Unix ms), if the schedule has one.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let t = self.tz.from_utc_datetime(&utc(after_ms)?.naive_utc());
        self.cron.find_next_occurrence(&t, false).ok().map(|n| n.with_timezone(&Utc).timestamp_millis() as u64)
    }

    /// Slots in (`after_ms`, `until_ms`], oldest first, at most `limit`.
    pub fn slots_between(&self, after_ms: u64, until_ms: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t = after_ms;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= until_ms => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }

    /// The slots to fire on start after downtime: those after `last_ms` (the last slot seen,
    /// if any) up to `now_ms`, within `window`, chosen by `policy`.
    pub fn missed(&self, last_ms: Option<u64>, now_ms: u64, policy: MissedSlots, window: Duration) -> Vec<u64> {
        let Some(last) = last_ms else { return Vec::new() };
        let floor = now_ms.saturating_sub(window.as_millis() as u64).max(last);
        match policy {
            MissedSlots::None => Vec::new(),
            MissedSlots::All => self.slots_between(floor, now_ms, MAX_CATCH_UP),
            MissedSlots::Last => {
                // Walk forward (croner searches forward efficiently); keep the last one.
                let mut last_slot = None;
                let mut t = floor;
                while let Some(n) = self.next_after(t).filter(|&n| n <= now_ms) {
                    last_slot = Some(n);
                    t = n;
                }
                last_slot.into_iter().collect()
            }
        }
    }
}

fn utc(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}
