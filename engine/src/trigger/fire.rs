//! A fire — a trigger's outside event turned into "start this workflow, once per key" — and
//! the records the fire path keeps: the dedup claim, the history entry, the run's link back
//! to its fire, and a trigger's persisted state.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{FireId, RunId, TriggerId, WorkflowId};

/// What a trigger hands to the fire path.
#[derive(Clone, Debug, PartialEq)]
pub struct Fire {
    pub workflow: WorkflowId,
    pub trigger: TriggerId,
    /// The dedup key: at most one run per key within the trigger's dedup window (a delivery
    /// id, a schedule slot, a Message-ID, a content hash). Never stored in the clear.
    pub key: String,
    /// What arrived; the trigger's `params:` templates see it as `payload`.
    pub payload: Value,
    /// When it arrived (Unix ms).
    pub at: u64,
    /// Where it came from, in a few words, for the history (`delivery 5f1c…`, `slot 02:00`).
    pub source: String,
}

impl Fire {
    /// What the trigger's `params:` templates see as `fire`.
    pub fn scope(&self, id: &FireId) -> Value {
        serde_json::json!({ "id": id, "trigger": self.trigger, "key": self.key, "at": self.at, "source": self.source })
    }
}

/// What happened to a fire. Every fire ends as exactly one of these in the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FireOutcome {
    /// The fire started this run.
    Started { run: RunId },
    /// The fire could not start a run (bad payload, parameters that do not bind…).
    Failed { error: String },
    /// Another fire with the same key (within the dedup window) came first.
    SkippedDuplicate { of: FireId },
}

impl FireOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            FireOutcome::Started { .. } => "started",
            FireOutcome::Failed { .. } => "failed",
            FireOutcome::SkippedDuplicate { .. } => "skipped_duplicate",
        }
    }
}

/// One entry of a workflow's fire history (sealed, expires after the retention, 7 days).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FireRecord {
    pub fire: FireId,
    pub workflow: WorkflowId,
    pub trigger: TriggerId,
    /// The trigger's type (`cron`, `webhook`…).
    pub kind: String,
    pub key: String,
    pub at: u64,
    /// When the outcome was recorded (Unix ms).
    pub recorded_at: u64,
    pub source: String,
    #[serde(flatten)]
    pub outcome: FireOutcome,
}

/// The claim on a dedup key: the first fire to write it wins. It names the run that fire
/// starts (chosen before the run exists), so a fire whose process died between claim and
/// run is finished by the next fire with the same key instead of being lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FireClaim {
    pub fire: FireId,
    pub run: RunId,
    pub at: u64,
}

/// Written in a run's metadata when a fire started it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrigger {
    pub trigger: TriggerId,
    pub fire: FireId,
    /// The trigger's type.
    pub kind: String,
}

/// A trigger's health as shown by `tollgate triggers list` and the admin API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerHealth {
    /// Whether the trigger is connected to its source (listening, scheduled, logged in).
    pub connected: bool,
    /// Unix ms of the last fire that was recorded (any outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
    /// Unix ms and text of the last error (a failed fire, a lost connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<(u64, String)>,
    /// Fires that started a run, failed, or were duplicates (since this process started it).
    pub started: u64,
    pub failed: u64,
    pub duplicates: u64,
    /// Deliveries refused before any fire (bad signature): only counted, nothing recorded.
    pub rejected: u64,
    /// How many times the trigger's actor was restarted after a failure.
    pub restarts: u64,
}

/// A trigger's persisted state: its last health, and the cursor its source keeps (a cron's
/// last slot, a mailbox's UIDVALIDITY/UID…) so it resumes where it stopped after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerStateRecord {
    pub workflow: WorkflowId,
    pub trigger: TriggerId,
    pub kind: String,
    pub health: TriggerHealth,
    /// The source's own resume point (type-specific).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub cursor: Value,
    /// The process that wrote this state last, and when (Unix ms).
    pub holder: String,
    pub updated_at: u64,
}
