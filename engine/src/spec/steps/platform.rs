//! `platform` steps: what Tollgate itself offers a workflow. One `action`, its settings under
//! `with` (their strings may hold `${{ … }}` templates):
//!
//! - `workflow.run` — start a sub-workflow (`with: { workflow, params }`) and wait for it. The
//!   run resolves it itself (`run/subworkflow.rs`): the child is a run of its own, linked to
//!   the parent, spending from the parent's budget, cancelled with the parent.
//! - `memory.write` / `memory.read` / `memory.list` — the owner's notes, sealed per owner (a job:
//!   the `platform` handler in `tollgate-connectors`).
//! - `notify` — a console notification to a user or group, and an email through a named `smtp`
//!   connection when `connection` is set (a job).
//!
//! `with` is kept as written and read into the action's own struct ([`PlatformStep::workflow_run`]
//! …), so an unknown or missing field is refused by validation with its place.

use std::time::Duration;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::WorkflowId;
use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::validate::problem;

/// How deep sub-workflows may nest (a top-level run is depth 0): a chain of workflows that
/// call each other stops here with `recursion_limit`.
pub const MAX_WORKFLOW_DEPTH: u32 = 8;
/// How far back `memory.list` looks when `since` is not given.
pub const DEFAULT_MEMORY_SINCE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most notes one `memory.list` returns.
pub const MAX_MEMORY_LIST: u32 = 500;
/// Longest note text, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// `platform`: one of Tollgate's own actions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformStep {
    /// `workflow.run` | `memory.write` | `memory.read` | `memory.list` | `notify`.
    pub action: PlatformAction,
    /// The action's settings.
    #[serde(default)]
    pub with: Map<String, Value>,
}

/// What a `platform` step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PlatformAction {
    #[serde(rename = "workflow.run")]
    WorkflowRun,
    #[serde(rename = "memory.write")]
    MemoryWrite,
    #[serde(rename = "memory.read")]
    MemoryRead,
    #[serde(rename = "memory.list")]
    MemoryList,
    #[serde(rename = "notify")]
    Notify,
}

impl PlatformAction {
    pub fn name(self) -> &'static str {
        match self {
            PlatformAction::WorkflowRun => "workflow.run",
            PlatformAction::MemoryWrite => "memory.write",
            PlatformAction::MemoryRead => "memory.read",
            PlatformAction::MemoryList => "memory.list",
            PlatformAction::Notify => "notify",
        }
    }
}

/// `workflow.run`'s settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRunWith {
    /// The sub-workflow's id (in the workflow catalogue); not templated.
    pub workflow: WorkflowId,
    /// Its parameters, templated from this run's scope, checked against its declaration.
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// `memory.write`'s settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryWriteWith {
    /// The note's key (a later write under it replaces it); default: a new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub text: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `memory.read`'s settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryReadWith {
    pub key: String,
}

/// `memory.list`'s settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryListWith {
    /// How far back (`7d`, `24h`); default 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub since: Option<Duration>,
    /// Only notes with this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// At most this many, newest first (default and maximum 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl MemoryListWith {
    pub fn since(&self) -> Duration {
        self.since.unwrap_or(DEFAULT_MEMORY_SINCE)
    }
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(MAX_MEMORY_LIST).min(MAX_MEMORY_LIST)
    }
}

/// `notify`'s settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyWith {
    /// A user or a group.
    pub to: String,
    pub subject: String,
    pub message: String,
    /// An `smtp` connection of the owner: the notification is also emailed to the recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

impl PlatformStep {
    pub const FIELDS: &'static [&'static str] = &["action", "with"];

    /// `with` read as `workflow.run`'s settings (validation guarantees it for that action).
    pub fn workflow_run(&self) -> Option<WorkflowRunWith> {
        (self.action == PlatformAction::WorkflowRun).then(|| read(&self.with).ok()).flatten()
    }

    /// The settings of this step's action, as `T` (after templates are rendered, for the handler).
    pub fn settings<T: DeserializeOwned>(with: &Value) -> Result<T, String> {
        serde_json::from_value(with.clone()).map_err(|e| e.to_string())
    }

    fn check_with(&self, at: &str, p: &mut Vec<SpecProblem>) {
        let at = format!("{at}.with");
        let r = match self.action {
            PlatformAction::WorkflowRun => read::<WorkflowRunWith>(&self.with).map(|w| {
                if !crate::ids::is_valid_id(w.workflow.as_str()) {
                    p.push(problem(format!("{at}.workflow"), format!("`{}` is not a workflow id", w.workflow)));
                }
            }),
            PlatformAction::MemoryWrite => read::<MemoryWriteWith>(&self.with).map(|w| {
                if w.text.len() > MAX_NOTE_BYTES {
                    p.push(problem(format!("{at}.text"), format!("is longer than {MAX_NOTE_BYTES} bytes")));
                }
            }),
            PlatformAction::MemoryRead => read::<MemoryReadWith>(&self.with).map(drop),
            PlatformAction::MemoryList => read::<MemoryListWith>(&self.with).map(|w| {
                if w.limit == Some(0) || w.limit.is_some_and(|l| l > MAX_MEMORY_LIST) {
                    p.push(problem(format!("{at}.limit"), format!("must be 1..={MAX_MEMORY_LIST}")));
                }
            }),
            PlatformAction::Notify => read::<NotifyWith>(&self.with).map(|w| {
                if w.to.trim().is_empty() {
                    p.push(problem(format!("{at}.to"), "must name a user or group"));
                }
            }),
        };
        if let Err(e) = r {
            p.push(problem(&at, format!("{} for `{}`", e, self.action.name())));
        }
    }
}

fn read<T: DeserializeOwned>(with: &Map<String, Value>) -> Result<T, serde_json::Error> {
    serde_json::from_value(Value::Object(with.clone()))
}

impl StepShape for PlatformStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        self.check_with(at, p);
    }

    fn templates(&self, at: &str) -> Vec<(String, Value)> {
        match self.action {
            // The workflow id is not templated: validation and the catalogue look it up as written.
            PlatformAction::WorkflowRun => {
                vec![(format!("{at}.with.params"), self.with.get("params").cloned().unwrap_or(Value::Null))]
            }
            _ => vec![(format!("{at}.with"), Value::Object(self.with.clone()))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(action: PlatformAction, with: Value) -> PlatformStep {
        PlatformStep { action, with: with.as_object().cloned().unwrap_or_default() }
    }

    fn problems(s: &PlatformStep) -> Vec<String> {
        let mut p = Vec::new();
        s.check("steps[0] (x)", &mut p);
        p.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn each_action_checks_its_settings() {
        assert!(
            problems(&step(PlatformAction::WorkflowRun, json!({"workflow": "child", "params": {"a": 1}}))).is_empty()
        );
        let p = problems(&step(PlatformAction::WorkflowRun, json!({"params": {}})));
        assert!(
            p[0].contains("steps[0] (x).with")
                && p[0].contains("missing field `workflow`")
                && p[0].contains("workflow.run"),
            "{p:?}"
        );
        let p = problems(&step(PlatformAction::MemoryWrite, json!({"text": "t", "tag": ["x"]})));
        assert!(p[0].contains("unknown field `tag`"), "{p:?}");
        let p = problems(&step(PlatformAction::MemoryList, json!({"since": "a week"})));
        assert!(p[0].contains("steps[0] (x).with"), "{p:?}");
        assert!(problems(&step(PlatformAction::MemoryList, json!({"since": "7d", "tag": "client"}))).is_empty());
        let p = problems(&step(PlatformAction::MemoryList, json!({"limit": 0})));
        assert!(p[0].contains("with.limit"), "{p:?}");
        let p = problems(&step(PlatformAction::Notify, json!({"to": "ops", "subject": "s"})));
        assert!(p[0].contains("missing field `message`"), "{p:?}");
    }
}
