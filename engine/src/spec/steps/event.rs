//! `event` steps, in two forms. `emit` publishes a named event (name and payload templated) on
//! the internal event bus; it runs as a job (the `event` handler in `tollgate-connectors`), with
//! the step's idempotency key as the event's dedup key, so a retried emit publishes once.
//! `wait` is resolved by the run itself: the step waits (passivated, like a run waiting for a
//! human) for an event of a name that satisfies a CEL correlation expression over `event`,
//! `params` and `steps`, looking back `lookback` before the wait began so an event emitted
//! just before is not missed; after `timeout` it takes its `on_timeout` outcome.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::expr::{self, ExprError, Scope};
use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::validate::problem;

/// How far back a `wait` looks for an event emitted before it began, unless it says otherwise.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(60);
/// The longest `lookback` a wait may ask for (the bus keeps events at least this long).
pub const MAX_LOOKBACK: Duration = Duration::from_secs(3600);
/// Longest event name.
pub const MAX_EVENT_NAME: usize = 200;

/// `event`: `emit` an event, or `wait` for one. Exactly one of the two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventStep {
    /// Publish an event on the internal bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit: Option<EmitSpec>,
    /// Wait for an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitSpec>,
}

/// What an `emit` publishes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitSpec {
    /// The event's name (e.g. `payment.received`); may hold `${{ … }}` templates.
    pub name: String,
    /// The event's payload; its strings may hold `${{ … }}` templates.
    #[serde(default)]
    pub payload: Value,
}

/// What a `wait` waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// The event's name.
    pub name: String,
    /// CEL over `event` (`id`, `name`, `payload`, `at`), `params` and `steps`: the first event
    /// of the name for which it is true is the one the step receives. Without it, any event of
    /// the name matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlate: Option<String>,
    /// How long to wait.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// What the step does when the timeout passes: `fail` (default, error `event_timeout`),
    /// `succeed` (its output is `{received: false, payload: <default>}`) or `skip`.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// The payload a timed-out wait succeeds with (`on_timeout: succeed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// How long before the wait began an event may have been emitted and still count
    /// (default 60 s, at most 1 h).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub lookback: Option<Duration>,
}

/// A timed-out wait's outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    #[default]
    Fail,
    Succeed,
    Skip,
}

impl EventStep {
    pub const FIELDS: &'static [&'static str] = &["emit", "wait"];
}

impl WaitSpec {
    pub fn lookback(&self) -> Duration {
        self.lookback.unwrap_or(DEFAULT_LOOKBACK)
    }

    /// Whether `event` (`{id, name, payload, at}`) is the one this wait is for.
    pub fn matches(&self, event: &Value, scope: &Scope<'_>) -> Result<bool, ExprError> {
        if event.get("name").and_then(Value::as_str) != Some(self.name.as_str()) {
            return Ok(false);
        }
        match &self.correlate {
            None => Ok(true),
            Some(src) => expr::eval_bool_with(src, scope, &[("event", event)]),
        }
    }

    /// The output of a wait that received `event`.
    pub fn received(event: &Value) -> Value {
        json!({ "received": true, "id": event["id"], "name": event["name"], "payload": event["payload"], "at": event["at"] })
    }

    /// The output of a wait that timed out with `on_timeout: succeed`.
    pub fn timed_out(&self) -> Value {
        json!({ "received": false, "payload": self.default.clone().unwrap_or(Value::Null) })
    }
}

/// Whether `name` is a valid event name: 1–200 characters of letters, digits and `._:-/`.
pub fn valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'/'))
}

fn check_name(at: &str, name: &str, templated: bool, p: &mut Vec<SpecProblem>) {
    if templated && name.contains("${{") {
        return; // checked when rendered
    }
    if !valid_event_name(name) {
        p.push(problem(at, format!("`{name}` is not an event name (1–{MAX_EVENT_NAME} letters, digits or `._:-/`)")));
    }
}

impl StepShape for EventStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        match (&self.emit, &self.wait) {
            (None, None) => p.push(problem(at, "an `event` step needs `emit` or `wait`")),
            (Some(_), Some(_)) => p.push(problem(at, "an `event` step has either `emit` or `wait`, not both")),
            (Some(e), None) => check_name(&format!("{at}.emit.name"), &e.name, true, p),
            (None, Some(w)) => {
                check_name(&format!("{at}.wait.name"), &w.name, false, p);
                if w.timeout.is_zero() {
                    p.push(problem(format!("{at}.wait.timeout"), "must be more than zero"));
                }
                if w.lookback() > MAX_LOOKBACK {
                    p.push(problem(format!("{at}.wait.lookback"), "must be at most 1h"));
                }
                if w.default.is_some() && w.on_timeout != OnTimeout::Succeed {
                    p.push(problem(
                        format!("{at}.wait.default"),
                        "is the output of a timed-out wait: it needs `on_timeout: succeed`",
                    ));
                }
            }
        }
    }

    fn expressions(&self, at: &str) -> Vec<(String, String)> {
        self.wait.iter().flat_map(|w| w.correlate.clone().map(|c| (format!("{at}.wait.correlate"), c))).collect()
    }

    fn templates(&self, at: &str) -> Vec<(String, Value)> {
        self.emit
            .iter()
            .flat_map(|e| {
                [
                    (format!("{at}.emit.name"), Value::String(e.name.clone())),
                    (format!("{at}.emit.payload"), e.payload.clone()),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(correlate: Option<&str>) -> WaitSpec {
        WaitSpec {
            name: "payment.received".into(),
            correlate: correlate.map(String::from),
            timeout: Duration::from_secs(10),
            on_timeout: OnTimeout::Fail,
            default: None,
            lookback: None,
        }
    }

    #[test]
    fn a_wait_matches_its_name_and_correlation() {
        let params = json!({"order": "A-1"});
        let steps = json!({});
        let scope = Scope { params: &params, steps: &steps };
        let w = wait(Some("event.payload.order == params.order"));
        let ev = |name: &str, order: &str| json!({"id": "1", "name": name, "payload": {"order": order}, "at": 5});
        assert!(w.matches(&ev("payment.received", "A-1"), &scope).unwrap());
        assert!(!w.matches(&ev("payment.received", "B-2"), &scope).unwrap());
        assert!(!w.matches(&ev("payment.refunded", "A-1"), &scope).unwrap());
        assert!(wait(None).matches(&ev("payment.received", "Z"), &scope).unwrap());
    }

    #[test]
    fn event_names_are_checked() {
        assert!(valid_event_name("payment.received"));
        assert!(valid_event_name("crm/lead:new-1"));
        assert!(!valid_event_name(""));
        assert!(!valid_event_name("has space"));
        assert!(!valid_event_name(&"x".repeat(201)));
    }
}
