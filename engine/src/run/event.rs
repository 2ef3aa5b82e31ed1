//! Events (facts the run learns, journaled) and actions (what the actor must do next).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::{PromptHold, ToolAsk};
use crate::ids::{RequestId, RunId, StepId, WorkflowId};
use crate::llm::ModelQuote;
use crate::money::Money;
use crate::step::StepError;

/// A fact about a run. Journaled, in order, before anything it causes is done.
/// Times are milliseconds since the Unix epoch, taken by the actor when the fact arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        at: u64,
        params: Value,
        /// What each `llm` step's model costs, as the price table said when the run started
        /// (journaled, so replay reserves the same amounts whatever the table says later).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        quotes: BTreeMap<StepId, ModelQuote>,
        /// For a sub-workflow's run: the run and step that started it, and the budget granted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentLink>,
    },
    StepSucceeded {
        step: StepId,
        attempt: u32,
        at: u64,
        started_at: u64,
        output: Value,
        cost: Money,
        /// The gate mesh's verdict on the output, when the step type is gated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<Value>,
    },
    StepFailed {
        step: StepId,
        attempt: u32,
        at: u64,
        started_at: Option<u64>,
        error: StepError,
        /// The gate mesh's verdict when it is what failed the step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<Value>,
    },
    /// The gate mesh blocked the attempt's output. Only its redacted form is journaled; the
    /// output itself is held (sealed) outside the run's reach until a human releases it.
    StepBlocked {
        step: StepId,
        attempt: u32,
        at: u64,
        started_at: u64,
        redacted: Value,
        cost: Money,
        gate: Value,
    },
    /// An `llm` attempt stopped before a tool call that needs a human's authorisation; the
    /// run asks (a tool-authorisation request) and continues the conversation with a new
    /// attempt once answered. `cost`: its model calls, exactly.
    ToolAuthorisationAsked {
        step: StepId,
        attempt: u32,
        at: u64,
        started_at: u64,
        ask: ToolAsk,
        cost: Money,
    },
    /// An `llm` attempt stopped before any call: its rendered prompt looked like a prompt
    /// injection and the step asks for guidance (`on_injection: guidance`).
    PromptHeld {
        step: StepId,
        attempt: u32,
        at: u64,
        started_at: u64,
        hold: PromptHold,
    },
    TimerFired {
        timer: Timer,
        at: u64,
    },
    /// An attempt was started by a process that died before recording an outcome (the run
    /// driver found its claim held by a process that is no longer alive). It may have run: the
    /// step goes on with a new attempt, under the same idempotency key.
    AttemptInterrupted {
        step: StepId,
        attempt: u32,
        at: u64,
        started_at: u64,
        worker: String,
    },
    HumanDecided {
        request: RequestId,
        decision: Decision,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// For an approval of a blocked output: the held output, released into the run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        released: Option<Value>,
        /// Applied by an escalation's `default` when no one answered in time, not by a person.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_policy: bool,
        at: u64,
    },
    Cancelled {
        by: String,
        reason: String,
        at: u64,
    },
    /// A `for_each` step's list resolved to `items` elements (from journaled data), and the
    /// run's limit on a fan-out was `limit` (the engine's `for_each_max_items` then): the
    /// fan-out's length and bound are in the journal, so replay expands it the same way.
    ItemsResolved {
        step: StepId,
        items: u32,
        limit: u32,
        at: u64,
    },
    /// An `event` step's `wait` received this bus event (`{id, name, payload, at}`), which
    /// matched its name and correlation when the run driver checked it.
    EventReceived {
        step: StepId,
        received: Value,
        at: u64,
    },
    /// A `workflow.run` step's sub-workflow run `child` ended, or could not be started; `cost`
    /// is what it spent, settled on the step.
    ChildFinished {
        step: StepId,
        child: RunId,
        outcome: ChildOutcome,
        cost: Money,
        at: u64,
    },
    /// The sub-workflow `child` ran short of the budget this run granted it: its own budget
    /// request `request` asks for `amount` more (granted from this run's budget, or this run
    /// pauses for an extension).
    ChildBudgetAsked {
        step: StepId,
        child: RunId,
        request: RequestId,
        amount: Money,
        at: u64,
    },
}

/// How a sub-workflow's run ended, for its parent step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChildOutcome {
    Succeeded { output: Value },
    Failed { error: StepError },
}

/// A sub-workflow's run's link to the run that started it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParentLink {
    pub run: RunId,
    pub workflow: WorkflowId,
    pub step: StepId,
    /// 1 for a child of a top-level run.
    pub depth: u32,
    /// The budget the parent granted (its remaining budget, or the step's `cost`): the child's
    /// cap; when it runs short it asks the parent, not a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Money>,
}

impl Event {
    /// The event's name as journaled (`step_succeeded`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::StepSucceeded { .. } => "step_succeeded",
            Event::StepFailed { .. } => "step_failed",
            Event::StepBlocked { .. } => "step_blocked",
            Event::ToolAuthorisationAsked { .. } => "tool_authorisation_asked",
            Event::PromptHeld { .. } => "prompt_held",
            Event::TimerFired { .. } => "timer_fired",
            Event::AttemptInterrupted { .. } => "attempt_interrupted",
            Event::HumanDecided { .. } => "human_decided",
            Event::Cancelled { .. } => "cancelled",
            Event::ItemsResolved { .. } => "items_resolved",
            Event::EventReceived { .. } => "event_received",
            Event::ChildFinished { .. } => "child_finished",
            Event::ChildBudgetAsked { .. } => "child_budget_asked",
        }
    }

    pub fn at(&self) -> u64 {
        match self {
            Event::RunStarted { at, .. }
            | Event::StepSucceeded { at, .. }
            | Event::StepFailed { at, .. }
            | Event::StepBlocked { at, .. }
            | Event::ToolAuthorisationAsked { at, .. }
            | Event::PromptHeld { at, .. }
            | Event::TimerFired { at, .. }
            | Event::AttemptInterrupted { at, .. }
            | Event::HumanDecided { at, .. }
            | Event::Cancelled { at, .. }
            | Event::ItemsResolved { at, .. }
            | Event::EventReceived { at, .. }
            | Event::ChildFinished { at, .. }
            | Event::ChildBudgetAsked { at, .. } => *at,
        }
    }
}

/// Durable timers a run may arm.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub enum Timer {
    /// An attempt was not started by any worker within the step's `queue_timeout`, and the run
    /// driver fenced it (no worker can start it any more): it failed without running.
    QueueTimeout { step: StepId, attempt: u32 },
    /// A started attempt is past its start-to-close `timeout` with no outcome although its
    /// worker is alive (the worker enforces the timeout itself, so this is a backstop): it
    /// failed as timed out; a result arriving later is recorded as superseded.
    StepTimeout { step: StepId, attempt: u32 },
    /// A `delay` step is over.
    Delay { step: StepId },
    /// An `event` step's `wait` timed out.
    EventWait { step: StepId },
    /// The whole run has run too long.
    RunTimeout,
    /// Escalation `level` (0-based) of the request a step (or a `for_each` item: its slot id
    /// `step.k`) still waits on is due: an approval, guidance or tool authorisation.
    Escalate { step: StepId, level: u32 },
    /// Escalation `level` of the run's open budget-extension request is due.
    EscalateBudget { level: u32 },
}

/// The four kinds of human request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HumanMode {
    Approval,
    BudgetExtension,
    Guidance,
    ToolAuthorisation,
}

/// A human's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
    /// Budget extension by this amount (an `approve` on a budget request extends by what is needed).
    Extend {
        amount: Money,
    },
    /// Guidance: use this value instead.
    Modify {
        value: Value,
    },
    Abort,
    /// Tool authorisation: run this one call.
    AllowOnce,
    /// Tool authorisation: run this call and every later call of the same tool of this step in
    /// this run without asking again.
    AllowForRun,
    /// Tool authorisation: do not run it; the model receives `reason` as the tool's result.
    Deny {
        reason: String,
    },
}

impl Decision {
    /// Whether it lets the run go ahead (what a step forbidding self-approval refuses its
    /// starter): approve, modify, extend, allow.
    pub fn is_approving(&self) -> bool {
        matches!(
            self,
            Decision::Approve
                | Decision::Modify { .. }
                | Decision::Extend { .. }
                | Decision::AllowOnce
                | Decision::AllowForRun
        )
    }
}

/// What to ask a human.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanRequestSpec {
    pub id: RequestId,
    pub mode: HumanMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepId>,
    pub question: String,
    pub context: Value,
    /// Who is asked: a user or a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// The user who started the run may not approve it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forbid_self_approval: bool,
}

/// Something the run actor must do. Re-derivable from the journal, so safe to redo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Record the attempt's input, enqueue its job (ids only).
    Dispatch {
        step: StepId,
        attempt: u32,
        not_before: Option<u64>,
        input: Value,
    },
    ArmTimer {
        timer: Timer,
        at: u64,
    },
    /// Persist and publish a request for a human decision.
    RequestHuman(HumanRequestSpec),
    /// A request no longer needs an answer (its step was cancelled or the run ended).
    WithdrawHuman {
        request: RequestId,
    },
    /// Escalation: page `to` (a user or group) about an open request, and add them to its
    /// assignees.
    PageHuman {
        request: RequestId,
        to: String,
        level: u32,
    },
    /// Escalation: nobody answered in time; record `decision` as the policy's, with `reason`
    /// (which default, after how long) as its comment (first writer wins against a human
    /// deciding at the same moment) and apply whichever decision won.
    DecideByPolicy {
        request: RequestId,
        decision: Decision,
        reason: String,
    },
    /// An `event` step waits for an event named `name` published at or after `from` (ms since
    /// the epoch: the wait's start minus its lookback): register the run as a waiter for the
    /// name, then look on the bus for one already there.
    AwaitEvent {
        step: StepId,
        name: String,
        from: u64,
    },
    /// A `workflow.run` step starts its sub-workflow: create the run `child` (once: its id is
    /// derived from this run, the step and the time) of `workflow` with `params` (checked
    /// against its declaration), linked to this run, and start it; if it exists, look at how
    /// it stands.
    StartChild {
        step: StepId,
        child: RunId,
        workflow: WorkflowId,
        params: Value,
        parent: ParentLink,
    },
    /// Cancel a sub-workflow's run (this run ended before it).
    CancelChild {
        child: RunId,
        reason: String,
    },
    /// Give a sub-workflow `amount` more budget: decide its budget request `request`.
    GrantChild {
        child: RunId,
        request: RequestId,
        amount: Money,
    },
    /// A sub-workflow's run is short of its granted budget: tell the parent (which decides).
    AskParent {
        request: RequestId,
        amount: Money,
    },
    /// A `for_each` step's list has `items` elements: journal `ItemsResolved` with the
    /// engine's `for_each_max_items` (the items start once it is applied).
    ResolveItems {
        step: StepId,
        items: u32,
    },
    /// The run is over.
    Finish,
}
