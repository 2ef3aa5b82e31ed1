//! The typed records kept in the store (all sealed at rest).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{OwnerId, RunId, StepId, WorkflowId};
use crate::money::Money;
use crate::run::{Decision, HumanRequestSpec, RunState, RunStatus};
use crate::step::StepError;

/// What is needed to derive a workflow's key (sealed with the service key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowKeyInfo {
    pub owner: OwnerId,
    /// Hex of the random per-workflow salt; deleting it crypto-shreds the workflow.
    pub salt: String,
    pub key_version: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub run: RunId,
    pub workflow: WorkflowId,
    /// The spec's declared version, for people.
    pub version: u32,
    /// The digest of the exact spec this run follows.
    pub spec_digest: String,
    pub owner: OwnerId,
    pub params: Value,
    pub created_at: u64,
    /// The user who started the run (an API caller, or the CLI's user); the one user who may
    /// not approve a step that forbids self-approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// The trigger and fire that started the run (none when started by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::trigger::RunTrigger>,
    /// For a sub-workflow's run: the run and `workflow.run` step that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<crate::run::ParentLink>,
}

/// A run's status as a listing shows it, kept beside the journal so that listing runs reads
/// one small record per run instead of replaying each journal. The run's driver rewrites it
/// when the run starts and when it finishes; the journal stays the source of truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    #[serde(flatten)]
    pub status: RunStatus,
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Running, but only waiting for a human or a timer (written when the run passivates, and
    /// cleared when it is woken).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
}

impl RunSummary {
    pub fn of(state: &RunState) -> Self {
        Self {
            status: state.status.clone(),
            started_at: state.started_at,
            finished_at: state.finished_at,
            waiting: !state.status.is_finished() && state.is_waiting(),
        }
    }

    /// `waiting`, the run's status label, or `pending` when there is no summary yet.
    pub fn label(summary: Option<&RunSummary>) -> &'static str {
        match summary {
            None => "pending",
            Some(s) if s.waiting => "waiting",
            Some(s) => s.status.label(),
        }
    }
}

/// What one attempt of a step produced, written by the worker before the run is notified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub step: StepId,
    pub attempt: u32,
    pub started_at: u64,
    pub finished_at: u64,
    pub result: OutcomeResult,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OutcomeResult {
    Succeeded {
        output: Value,
        cost: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<Value>,
    },
    Failed {
        error: StepError,
        /// The verdict, when the gate mesh failed the step (`on_block: fail`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<Value>,
    },
    /// The gate mesh blocked the output: only its redacted form is here; the output itself is
    /// held in the step's quarantine record until a human releases or discards it.
    Blocked { redacted: Value, cost: Money, gate: Value },
    /// The attempt stopped to ask a human to authorise a tool call (arguments and reason
    /// redacted by the gate mesh); `cost` is what its model calls cost.
    AwaitingAuthorisation { ask: crate::conversation::ToolAsk, cost: Money },
    /// The attempt stopped before any call: the prompt looked like an injection and the step
    /// asks for guidance (`on_injection: guidance`). The flagged text is redacted.
    PromptHeld { hold: crate::conversation::PromptHold },
}

/// The claim on one attempt (first writer wins): a worker that starts it, or the run driver
/// fencing it so that no worker ever will.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "claim", rename_all = "snake_case")]
pub enum AttemptClaim {
    /// A worker of process `worker` started the attempt at `at`: its start-to-close clock.
    /// `token` is unique to the one delivery that wrote it, so a worker re-reading the claim
    /// after a lost reply knows it as its own — and two deliveries of the attempt in one
    /// process, in the same millisecond, never both take it for theirs.
    Started { worker: String, at: u64, token: String },
    /// The run driver fenced the attempt before any worker started it.
    Fenced { at: u64, reason: String },
}

/// Written when a run finishes: its attempts must not start, running ones are abandoned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunClosed {
    pub status: String,
    pub at: u64,
    /// The journal's length and last link (hex) when the run finished: what the hash chain
    /// cannot show by itself — a last entry altered, or entries cut off the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<(u64, String)>,
    /// The run has ended but waits for sub-workflows it cancelled to end, to journal what they
    /// spent (`RunState::unsettled`); it is closed again, with the final journal, once they have.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settling: bool,
}

/// Written by the run's driver when it gives up on an attempt that a worker claimed (its
/// process looked dead, or it outran its timeout without a word): the run has moved on to a
/// new attempt, so a worker still running this one — a paused process that woke up — stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptAbandoned {
    pub reason: String,
    pub at: u64,
}

/// What a worker reads before it runs an attempt, in one round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptPreflight {
    pub outcome: Option<StepOutcome>,
    pub input: Option<Value>,
    pub claim: Option<AttemptClaim>,
    /// Why the attempt must not run: the run was cancelled or has finished.
    pub stop: Option<String>,
}

/// A request to cancel a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub by: String,
    pub reason: String,
    pub at: u64,
}

/// A persisted request for a human decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanRequestRecord {
    pub workflow: WorkflowId,
    pub run: RunId,
    pub request: HumanRequestSpec,
    pub created_at: u64,
    /// Who was paged by escalation since (users or groups), in order; they may decide too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalated_to: Vec<String>,
}

/// The decision on a request (first writer wins).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanDecisionRecord {
    pub decision: Decision,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Applied by an escalation's `default`, not by a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_policy: bool,
    pub at: u64,
}
