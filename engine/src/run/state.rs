//! The state of one run, as folded from its journal.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RequestId, RunId};
use crate::money::Money;
use crate::run::Decision;
use crate::step::StepError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    /// Created, `RunStarted` not yet applied.
    Pending,
    Running,
    Succeeded,
    Failed {
        reason: FailReason,
    },
    Cancelled {
        by: String,
        reason: String,
    },
}

impl RunStatus {
    pub fn is_finished(&self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed { .. } | RunStatus::Cancelled { .. })
    }
    pub fn label(&self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed { .. } => "failed",
            RunStatus::Cancelled { .. } => "cancelled",
        }
    }
}

/// Why a run failed; `code` is stable (`step_failed`, `budget_exhausted`, `timed_out`, `rejected`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailReason {
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for its dependencies (or for budget).
    Pending,
    /// A `for_each` step whose list is resolved: its length is being journaled
    /// (`ItemsResolved`) before any item starts.
    Expanding,
    /// A `for_each` step whose items run, each with a state of its own (`StepState::items`).
    Mapping {
        items: u32,
    },
    /// An attempt is enqueued or running. `queue_deadline` bounds the time before a worker
    /// starts it (the step's `queue_timeout`); once started, the worker enforces `timeout`.
    Queued {
        attempt: u32,
        not_before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue_deadline: Option<u64>,
    },
    /// Waiting for a human decision.
    WaitingHuman {
        request: RequestId,
    },
    /// A `delay` step, until this time.
    Delaying {
        until: u64,
    },
    /// An `event` step's `wait`: events published from `from` on count; it times out at `until`.
    WaitingEvent {
        from: u64,
        until: u64,
    },
    /// A `workflow.run` step: its sub-workflow's run is under way.
    WaitingChild {
        run: RunId,
    },
    Succeeded,
    Failed,
    /// Not run. `upstream_failed`: its join skipped it because a need failed, so it counts as
    /// failed for the joins of its own dependents (a skipped branch is not a failure; this is).
    Skipped {
        reason: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        upstream_failed: bool,
    },
    Cancelled,
}

impl StepStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped { .. } | StepStatus::Cancelled)
    }
    pub fn label(&self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Expanding | StepStatus::Mapping { .. } => "running",
            StepStatus::Queued { .. } => "running",
            StepStatus::WaitingHuman { .. } => "waiting_human",
            StepStatus::Delaying { .. } => "delaying",
            StepStatus::WaitingEvent { .. } => "waiting_event",
            StepStatus::WaitingChild { .. } => "waiting_child",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped { .. } => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

/// Where an attempt stands, for the audit trail. Every attempt a worker may have started ends
/// in exactly one of `succeeded`, `failed`, `blocked`, `interrupted`, `superseded` or `cancelled`;
/// `not_started` attempts never ran anywhere (no worker claimed them before they were fenced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Dispatched; a worker may be running it.
    Queued,
    Succeeded,
    Failed,
    /// Its output was held by the gate mesh for a human.
    Blocked,
    /// Fenced before any worker claimed it (its `queue_timeout` passed): it never ran.
    NotStarted,
    /// Started, and past its start-to-close timeout without a result while its process was
    /// alive (the engine's backstop; workers enforce the timeout themselves).
    TimedOut,
    /// It may have started in a process that died; the step went on with a new attempt.
    Interrupted,
    /// Its result arrived after the run had moved past it: kept here, never used.
    Superseded,
    /// The run ended while it was in flight.
    Cancelled,
    /// It stopped to ask a human to authorise a tool call; the step goes on with a new attempt
    /// once answered (the conversation continues from its turn journal).
    Suspended,
}

impl AttemptStatus {
    pub fn label(self) -> &'static str {
        match self {
            AttemptStatus::Queued => "queued",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Blocked => "blocked",
            AttemptStatus::NotStarted => "not_started",
            AttemptStatus::TimedOut => "timed_out",
            AttemptStatus::Interrupted => "interrupted",
            AttemptStatus::Superseded => "superseded",
            AttemptStatus::Cancelled => "cancelled",
            AttemptStatus::Suspended => "suspended",
        }
    }

    /// Whether the attempt may have executed (what an outside system may have seen).
    pub fn may_have_run(self) -> bool {
        !matches!(self, AttemptStatus::NotStarted)
    }
}

/// One attempt of a step, for the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub status: AttemptStatus,
    pub dispatched_at: u64,
    /// When a worker started it (its claim): the start of its start-to-close clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// The process that ran it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// For a superseded attempt: what its late result was (`succeeded`, `failed: <code>`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_result: Option<String>,
}

impl AttemptRecord {
    /// Attempts that count towards `retry.max_attempts`: an interrupted attempt is the
    /// engine's failure (its process died), not the step's.
    pub fn counts_towards_retries(&self) -> bool {
        !matches!(self.status, AttemptStatus::Interrupted | AttemptStatus::Suspended)
    }
}

/// A human's decision as recorded on the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDecision {
    pub request: RequestId,
    pub decision: Decision,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Applied by an escalation's `default`, not by a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_policy: bool,
    pub at: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// Dependencies not yet finished.
    pub remaining_needs: u32,
    pub attempts: Vec<AttemptRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Settled cost of all attempts.
    pub cost: Money,
    /// Cost reserved for the attempt in flight.
    pub reserved: Money,
    /// An attempt cost more than its estimate; later attempts reserve at least that much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrun_cost: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Value>,
    /// The redacted form of an output the gate mesh blocked, while a human decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<StepDecision>,
    /// The tool call an `llm` step waits to have authorised (its redacted arguments and reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_ask: Option<crate::conversation::ToolAsk>,
    /// Answers to its tool-authorisation requests, by tool call id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tool_grants: std::collections::BTreeMap<String, crate::conversation::ToolGrant>,
    /// Its tools allowed for the rest of the run (`allow_for_run`), with who allowed them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tools_allowed: std::collections::BTreeMap<String, String>,
    /// The prompt-injection finding an `llm` step waits on guidance for (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_hold: Option<crate::conversation::PromptHold>,
    /// A human released its flagged prompt: later attempts send it as is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_released: bool,
    /// Model calls its turn journal is known to hold (an `llm` step that asked for a tool
    /// authorisation): the next attempt reserves only the calls still possible.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub turns_done: u32,
    /// Escalation levels of its open request that have fired.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalated: u32,
    /// Its last request of a person (approval, guidance, tool authorisation) and when it was
    /// made: escalation counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// A `workflow.run` step's sub-workflow run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<RunId>,
    /// For an item of a `for_each` step: its element of the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Value>,
    /// For a `for_each` step: its items, in list order, each an attempt series of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<StepState>,
}

impl StepState {
    /// A step (or item) that has not started.
    pub fn new(remaining_needs: u32) -> Self {
        StepState {
            status: StepStatus::Pending,
            remaining_needs,
            attempts: Vec::new(),
            output: None,
            cost: Money::ZERO,
            reserved: Money::ZERO,
            overrun_cost: None,
            error: None,
            gate: None,
            blocked: None,
            tool_ask: None,
            tool_grants: Default::default(),
            tools_allowed: Default::default(),
            prompt_hold: None,
            prompt_released: false,
            turns_done: 0,
            decision: None,
            escalated: 0,
            asked: None,
            asked_at: None,
            started_at: None,
            finished_at: None,
            item: None,
            items: Vec::new(),
            child: None,
        }
    }
}

/// Where an attempt series lives: a step (by its index in the spec), or item `k` of a
/// `for_each` step. An item's jobs, claims, outcomes and requests are keyed by its
/// [`slot id`](Slot::id) `step.k`, which no declared step id can be (they hold no `.`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slot {
    pub step: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

impl Slot {
    pub fn step(i: usize) -> Self {
        Slot { step: i, item: None }
    }
    pub fn item(i: usize, k: u32) -> Self {
        Slot { step: i, item: Some(k) }
    }
    /// The id the slot's attempts are keyed by: the step's id, or `<step>.<k>` for an item.
    pub fn id(self, spec: &crate::spec::ValidatedSpec) -> crate::ids::StepId {
        let id = &spec.step(self.step).id;
        match self.item {
            None => id.clone(),
            Some(k) => crate::ids::StepId::new(format!("{id}.{k}")),
        }
    }
    /// The slot an attempt id names: a declared step, or an item `<step>.<k>` of a
    /// `for_each` step.
    pub fn of(spec: &crate::spec::ValidatedSpec, id: &crate::ids::StepId) -> Option<Slot> {
        if let Some(i) = spec.dag().index_of(id) {
            return Some(Slot::step(i));
        }
        let (step, k) = id.as_str().rsplit_once('.')?;
        let i = spec.dag().index_of(&crate::ids::StepId::from(step))?;
        let k: u32 = k.parse().ok().filter(|_| !k.starts_with('+') && (k == "0" || !k.starts_with('0')))?;
        spec.step(i).for_each.is_some().then_some(Slot::item(i, k))
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    /// The declared cap, if any.
    pub cap: Option<Money>,
    /// Extensions granted by humans.
    pub extended: Money,
    pub spent: Money,
    pub reserved: Money,
}

impl BudgetState {
    /// The cap with its extensions, if there is a cap.
    pub fn limit(&self) -> Option<Money> {
        self.cap.map(|cap| cap + self.extended)
    }
    /// Whether `estimate` more can be reserved (exactly: a cap of 0.3 covers three steps of 0.1).
    pub fn covers(&self, estimate: Money) -> bool {
        self.limit().is_none_or(|limit| self.spent + self.reserved + estimate <= limit)
    }
    /// How much more budget `estimate` needs.
    pub fn shortfall(&self, estimate: Money) -> Money {
        self.limit().map_or(Money::ZERO, |limit| (self.spent + self.reserved + estimate).saturating_sub(limit))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub run: RunId,
    pub status: RunStatus,
    pub params: Value,
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// By step index in the spec.
    pub steps: Vec<StepState>,
    pub budget: BudgetState,
    /// The open budget-extension request, if the run is paused on budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_request: Option<RequestId>,
    /// The last budget extension asked of a person, when it was asked, and how many of the
    /// budget's escalation levels have fired since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_asked: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_asked_at: Option<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub budget_escalated: u32,
    /// Ready steps held back until the budget is extended, in readiness order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budget_blocked: Vec<usize>,
    /// Steps not yet in a terminal state.
    pub open_steps: usize,
    /// Sequence for human request ids.
    pub human_seq: u32,
    /// `steps` as expressions see it: `{ id: { output, status } }` for finished steps.
    pub scope: Value,
    /// The model quotes of `llm` steps, from `RunStarted`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub quotes: std::collections::BTreeMap<crate::ids::StepId, crate::llm::ModelQuote>,
    /// For a sub-workflow's run: the run that started it (from `RunStarted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<crate::run::ParentLink>,
    /// A sub-workflow's request for more budget that this run could not cover yet: the open
    /// `budget_request` is about it (and about nothing else: its question names this ask, and
    /// `approve` extends by its shortfall).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_ask: Option<ChildAsk>,
    /// Sub-workflows' asks that arrived while `budget_request` was open about something else,
    /// in arrival order: taken up once that request is answered or withdrawn, never folded
    /// into it (a person decides on what the request says).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued_asks: Vec<ChildAsk>,
    /// `workflow.run` steps (by index) whose sub-workflow this run cancelled when it ended, and
    /// whose spend up to then is not journaled yet (`ChildFinished`, applied after the end).
    /// A run is settled — its record final — once this is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsettled: Vec<usize>,
}

/// A sub-workflow's budget request, waiting on its parent's budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildAsk {
    /// The parent's `workflow.run` step (by index).
    pub step: usize,
    pub child: RunId,
    pub request: RequestId,
    pub amount: Money,
}

impl RunState {
    /// The state of a slot (a step, or an item of a `for_each` step), if it exists.
    pub fn slot(&self, slot: Slot) -> Option<&StepState> {
        let s = self.steps.get(slot.step)?;
        match slot.item {
            None => Some(s),
            Some(k) => s.items.get(k as usize),
        }
    }

    /// Every step and every item of a `for_each` step, with its slot.
    pub fn slots(&self) -> impl Iterator<Item = (Slot, &StepState)> + '_ {
        self.steps.iter().enumerate().flat_map(|(i, s)| {
            std::iter::once((Slot::step(i), s))
                .chain(s.items.iter().enumerate().map(move |(k, it)| (Slot::item(i, k as u32), it)))
        })
    }

    /// Whether `slot`'s current attempt is `attempt` and in flight.
    pub fn is_queued(&self, slot: Slot, attempt: u32) -> bool {
        self.slot(slot).is_some_and(|s| matches!(s.status, StepStatus::Queued { attempt: a, .. } if a == attempt))
    }

    /// Whether an outcome of `attempt` of `slot` means anything to the run: it is the attempt
    /// the slot waits for, or one the run moved past whose late result the audit keeps.
    pub fn wants_outcome(&self, slot: Slot, attempt: u32) -> bool {
        let Some(s) = self.slot(slot) else { return false };
        matches!(s.status, StepStatus::Queued { attempt: a, .. } if a == attempt)
            || s.attempts.iter().any(|a| {
                a.attempt == attempt
                    && matches!(
                        a.status,
                        AttemptStatus::Interrupted | AttemptStatus::TimedOut | AttemptStatus::Cancelled
                    )
            })
    }

    /// Whether the run has ended and its record is final: what its cancelled sub-workflows spent
    /// is journaled too.
    pub fn is_settled(&self) -> bool {
        self.status.is_finished() && self.unsettled.is_empty()
    }

    /// Whether the run is only waiting for a human, an event or a timer (no attempt in flight): such a
    /// run can be passivated.
    pub fn is_waiting(&self) -> bool {
        !self.status.is_finished()
            && !self.slots().any(|(_, s)| matches!(s.status, StepStatus::Queued { .. } | StepStatus::Expanding))
            && (self.budget_request.is_some()
                || self.slots().any(|(_, s)| {
                    matches!(
                        s.status,
                        StepStatus::WaitingHuman { .. }
                            | StepStatus::Delaying { .. }
                            | StepStatus::WaitingEvent { .. }
                            | StepStatus::WaitingChild { .. }
                    )
                }))
    }
}
