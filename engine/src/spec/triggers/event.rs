//! `event:` — an event on the internal bus starts the run: every event of the trigger's name
//! (and, with `filter`, for which the CEL filter over `payload` is true) fires once, keyed by
//! the event's id, so several engine processes following the bus still start one run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::expr;
use crate::spec::SpecProblem;
use crate::spec::steps::valid_event_name;
use crate::spec::validate::problem;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTrigger {
    /// The event's name (e.g. `lead.created`).
    pub name: String,
    /// CEL over `payload` (the event's payload): only events for which it is true fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl EventTrigger {
    pub(crate) fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if !valid_event_name(&self.name) {
            p.push(problem(
                format!("{at}.event.name"),
                format!("`{}` is not an event name (1–200 letters, digits or `._:-/`)", self.name),
            ));
        }
        if let Some(f) = &self.filter {
            if let Err(e) = expr::compile(f) {
                p.push(problem(format!("{at}.event.filter"), e.to_string()));
            }
        }
    }

    /// Whether an event with `payload` passes the filter (a filter that fails to evaluate on
    /// this payload does not pass).
    pub fn passes(&self, payload: &serde_json::Value) -> bool {
        match &self.filter {
            None => true,
            Some(f) => matches!(expr::eval_vars(f, &[("payload", payload)]), Ok(serde_json::Value::Bool(true))),
        }
    }
}
