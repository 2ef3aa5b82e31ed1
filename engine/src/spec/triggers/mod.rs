//! `triggers:` — how a workflow starts itself: one struct per trigger type (one module each),
//! the fields every trigger has, and their checks.
//!
//! A trigger turns an outside event into a *fire* (see `crate::trigger`); the fire's payload
//! becomes the run's parameters through the trigger's `params:` templates, which see
//! `payload` (what arrived) and `fire` (its id, trigger, dedup key and time).

mod cron;
mod event;
mod imap;
mod upload;
mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use cron::{CronSchedule, CronTrigger, MAX_CATCH_UP, MissedSlots};
pub use event::EventTrigger;
pub use imap::{ImapAfter, ImapTrigger};
pub use upload::{UploadTrigger, sanitize_file_name};
pub use webhook::{BodySchema, SignatureScheme, WebhookTrigger, compile_schema};

use crate::expr;
use crate::spec::validate::problem;
use crate::spec::{SpecProblem, WorkflowSpec};

/// One trigger of a workflow: its id, exactly one type section (`cron:`, `webhook:`,
/// `upload:`) with that type's fields, and the fields every trigger has.
///
/// ```yaml
/// triggers:
///   - id: nightly
///     cron: { schedule: "0 2 * * *", timezone: Europe/Stockholm }
///   - id: intake
///     webhook: { signature: github }
///     params: { client: "${{ payload.client.name }}" }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// Trigger id, unique in the workflow: letters, digits, `_`, `-` (it is part of the URL of
    /// a webhook or upload trigger, and of store keys).
    pub id: String,
    /// On a schedule (cron expression, seconds optional), in a time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronTrigger>,
    /// An HTTP POST to the trigger's own URL, signed with its own secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTrigger>,
    /// A file: an HTTP multipart upload to the trigger's URL, and/or a watched folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTrigger>,
    /// An event on the internal bus (`POST /api/events`, an `event` step's `emit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventTrigger>,
    /// A new message in an IMAP mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imap: Option<ImapTrigger>,
    /// The run's parameters, by name: values may hold `${{ … }}` templates over `payload`
    /// (what arrived) and `fire` (`fire.id`, `fire.trigger`, `fire.key`, `fire.at`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
    /// How long a fire's dedup key is remembered (a second fire with the same key within it
    /// is a duplicate). Default: the fire history's retention (7 days).
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub dedup_window: Option<Duration>,
    /// A disabled trigger is validated but not started.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// A trigger's type and its fields. Adding a type: a module with its struct and checks, an
/// `Option` field on [`TriggerSpec`], a line in [`TriggerSpec::kinds`], [`TriggerKind::name`]
/// and [`TriggerKind::check`], and its source in `actors/src/triggers/`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TriggerKind<'a> {
    Cron(&'a CronTrigger),
    Webhook(&'a WebhookTrigger),
    Upload(&'a UploadTrigger),
    Event(&'a EventTrigger),
    Imap(&'a ImapTrigger),
}

/// The type names, for messages.
pub const TRIGGER_TYPES: &[&str] = &["cron", "webhook", "upload", "event", "imap"];

impl TriggerSpec {
    /// Every type section the trigger sets (a valid trigger sets exactly one).
    pub fn kinds(&self) -> Vec<TriggerKind<'_>> {
        let mut out = Vec::new();
        out.extend(self.cron.as_ref().map(TriggerKind::Cron));
        out.extend(self.webhook.as_ref().map(TriggerKind::Webhook));
        out.extend(self.upload.as_ref().map(TriggerKind::Upload));
        out.extend(self.event.as_ref().map(TriggerKind::Event));
        out.extend(self.imap.as_ref().map(TriggerKind::Imap));
        out
    }

    /// The trigger's type. Validation guarantees there is exactly one.
    pub fn kind(&self) -> TriggerKind<'_> {
        self.kinds().into_iter().next().expect("a validated trigger has a type")
    }
}

impl TriggerKind<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            TriggerKind::Cron(_) => "cron",
            TriggerKind::Webhook(_) => "webhook",
            TriggerKind::Upload(_) => "upload",
            TriggerKind::Event(_) => "event",
            TriggerKind::Imap(_) => "imap",
        }
    }

    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        match self {
            TriggerKind::Cron(t) => t.check(at, p),
            TriggerKind::Webhook(t) => t.check(at, p),
            TriggerKind::Upload(t) => t.check(at, p),
            TriggerKind::Event(t) => t.check(at, p),
            TriggerKind::Imap(t) => t.check(at, p),
        }
    }
}

/// Whether `s` is usable as a trigger id (it appears in URLs and store keys).
pub fn is_trigger_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Check every trigger of `spec`: ids, each type's fields, and that `params:` names declared
/// parameters with templates that parse and refer only to `payload` and `fire`.
pub(crate) fn check_triggers(spec: &WorkflowSpec, p: &mut Vec<SpecProblem>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in spec.triggers.iter().enumerate() {
        let at = format!("triggers[{i}] ({})", t.id);
        if !is_trigger_id(&t.id) {
            p.push(problem(&at, format!("trigger id `{}` must be 1–64 letters, digits, `_` or `-`", t.id)));
        }
        if let Some(first) = seen.insert(t.id.as_str(), i) {
            p.push(problem(&at, format!("duplicate trigger id `{}` (first at triggers[{first}])", t.id)));
        }
        if t.dedup_window.is_some_and(|d| d.is_zero()) {
            p.push(problem(format!("{at}.dedup_window"), "must be longer than zero"));
        }
        match t.kinds().as_slice() {
            [] => p.push(problem(&at, format!("a trigger needs its type: one of {}", sections()))),
            [kind] => kind.check(&at, p),
            many => {
                let names: Vec<_> = many.iter().map(|k| format!("`{}:`", k.name())).collect();
                p.push(problem(&at, format!("a trigger has one type, this one sets {}", names.join(" and "))));
            }
        }
        for (name, value) in &t.params {
            let at = format!("{at}.params.{name}");
            if !spec.parameters.contains_key(name) {
                let known: Vec<_> = spec.parameters.keys().map(String::as_str).collect();
                p.push(problem(&at, format!("unknown parameter (declared: {})", known.join(", "))));
            }
            match expr::template_exprs(value) {
                Err(e) => p.push(problem(&at, e.to_string())),
                Ok(exprs) => {
                    for e in exprs {
                        if let Err(err) = expr::compile(&e) {
                            p.push(problem(&at, err.to_string()));
                        } else if !expr::referenced_params(&e).is_empty() || !expr::referenced_steps(&e).is_empty() {
                            p.push(problem(
                                &at,
                                format!(
                                    "`{e}`: a trigger's templates see `payload` and `fire`, not `params` or `steps`"
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn sections() -> String {
    TRIGGER_TYPES.iter().map(|t| format!("`{t}:`")).collect::<Vec<_>>().join(", ")
}

/// The run parameters a fire gives: each of the trigger's `params:` rendered over `payload` and
/// `fire` (the result is then bound like parameters given on the command line).
pub fn render_params(
    trigger: &TriggerSpec,
    payload: &Value,
    fire: &Value,
) -> Result<serde_json::Map<String, Value>, expr::ExprError> {
    let vars = [("payload", payload), ("fire", fire)];
    trigger.params.iter().map(|(name, v)| Ok((name.clone(), expr::render_vars(v, &vars)?))).collect()
}

#[cfg(test)]
mod tests;
