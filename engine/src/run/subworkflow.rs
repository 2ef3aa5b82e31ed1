//! `workflow.run`: a step whose work is another run. The run resolves it itself (no job):
//!
//! - **Start.** The step's `params` are rendered from the run's scope; the child's run id is
//!   derived from this run, the step and the time of the event that started it (a ULID, so it
//!   sorts with other runs), so redoing `StartChild` after a crash finds the same run. Nesting
//!   deeper than [`MAX_WORKFLOW_DEPTH`] fails the step (`recursion_limit`).
//! - **Budget.** The parent's budget is the cap. The step reserves the parent's remaining
//!   budget (or its own `cost:`, which must fit, else the parent pauses for an extension first)
//!   and grants it to the child as the child's cap. A child that runs short asks its parent
//!   (`AskParent` → the parent journals `ChildBudgetAsked`): the parent grants the amount from
//!   what it has left, or pauses for a budget extension of its own and grants it once a person
//!   extends. When the child ends, what it actually spent is settled on the step, exactly.
//!   Every amount comes from a journaled event, so `apply` stays pure and replay exact.
//! - **End.** `ChildFinished` carries the child's outcome: its output is the outputs of its
//!   final steps (already gated in the child); a failed or cancelled child fails the step,
//!   naming the child run and its error. A parent that ends first (cancelled, failed, timed
//!   out) cancels the child, and the step stays `unsettled` until the child's end — with what
//!   it spent up to its cancellation — is journaled after the parent's: `ChildFinished` on a
//!   finished run settles that cost on the step and nothing else. So the parent's record says
//!   exactly what was spent on its behalf, and replay gives the same.

use serde_json::{Value, json};

use crate::expr::{self, Scope};
use crate::ids::{RequestId, RunId, StepId};
use crate::money::Money;
use crate::run::apply::Machine;
use crate::run::requests::child_budget_request;
use crate::run::{Action, ChildAsk, ChildOutcome, ParentLink, RunState, RunStatus, StepStatus};
use crate::spec::steps::MAX_WORKFLOW_DEPTH;
use crate::spec::{StepKind, ValidatedSpec};
use crate::step::StepError;

/// The run id of the sub-workflow step `step` of run `parent` starts at `at`: a ULID with that
/// time and a random part hashed from parent and step, so the same start gives the same id.
pub fn child_run_id(parent: &RunId, step: &StepId, at: u64) -> RunId {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{parent}\0{step}").as_bytes());
    let mut r = [0u8; 16];
    r.copy_from_slice(&h[..16]);
    RunId::new(ulid::Ulid::from_parts(at, u128::from_be_bytes(r)).to_string())
}

/// A finished run's output for its parent: the outputs of its final steps (those no other
/// step needs) that succeeded, by step id.
pub fn child_output(spec: &ValidatedSpec, state: &RunState) -> Value {
    let outputs: serde_json::Map<String, Value> = state
        .steps
        .iter()
        .enumerate()
        .filter(|(i, s)| spec.dag().dependents[*i].is_empty() && s.status == StepStatus::Succeeded)
        .map(|(i, s)| (spec.step(i).id.to_string(), s.output.clone().unwrap_or(Value::Null)))
        .collect();
    json!({ "run": state.run, "workflow": spec.spec().id, "status": state.status.label(), "outputs": outputs, "cost": state.budget.spent })
}

/// The budget request a sub-workflow's run has open towards its parent, and how much it needs.
pub fn open_budget_ask(spec: &ValidatedSpec, state: &RunState) -> Option<(RequestId, Money)> {
    let request = state.budget_request.clone()?;
    let estimate = match (&state.child_ask, state.budget_blocked.first()) {
        (Some(ask), _) => ask.amount,
        (None, Some(&i)) => crate::run::apply::reservation(spec, state, crate::run::apply::blocked_slot(state, i)),
        (None, None) => return None,
    };
    asks_parent(spec, state).then(|| (request, state.budget.shortfall(estimate)))
}

/// Whether this run asks its parent, not a person, for more budget: it is a sub-workflow whose
/// cap is the budget its parent granted (not a lower cap of its own).
pub(crate) fn asks_parent(spec: &ValidatedSpec, state: &RunState) -> bool {
    let Some(granted) = state.parent.as_ref().and_then(|p| p.budget) else { return false };
    spec.spec().budget.as_ref().is_none_or(|own| own.max_cost >= granted)
}

/// Why a run's children are cancelled when it ends with `status`.
pub(crate) fn cancel_reason(status: &RunStatus) -> String {
    match status {
        RunStatus::Cancelled { by, reason } => format!("the parent run was cancelled by {by}: {reason}"),
        other => format!("the parent run ended ({})", other.label()),
    }
}

/// What a recovered finished run redoes: cancel the children it has not settled (idempotent).
pub(crate) fn cancel_unsettled(state: &RunState) -> Vec<Action> {
    let why = cancel_reason(&state.status);
    state
        .unsettled
        .iter()
        .filter_map(|&i| state.steps[i].child.clone())
        .map(|child| Action::CancelChild { child, reason: why.clone() })
        .collect()
}

/// What a recovered run redoes for step `i` waiting on its child `run`.
pub(crate) fn start_child_action(spec: &ValidatedSpec, state: &RunState, i: usize, run: &RunId) -> Option<Action> {
    let StepKind::Platform(p) = &spec.step(i).kind else { return None };
    let w = p.workflow_run()?;
    let scope = Scope { params: &state.params, steps: &state.scope };
    let params = expr::render(&Value::Object(w.params), &scope).ok()?;
    Some(Action::StartChild {
        step: spec.step(i).id.clone(),
        child: run.clone(),
        workflow: w.workflow,
        params,
        parent: link(spec, state, i),
    })
}

fn link(spec: &ValidatedSpec, state: &RunState, i: usize) -> ParentLink {
    let s = &state.steps[i];
    ParentLink {
        run: state.run.clone(),
        workflow: spec.spec().id.clone(),
        step: spec.step(i).id.clone(),
        depth: state.parent.as_ref().map_or(0, |p| p.depth) + 1,
        // What the step reserved when it started (later grants are decisions on the child's requests).
        budget: state.budget.cap.map(|_| s.reserved).or(spec.step(i).cost),
    }
}

impl Machine<'_> {
    /// Step `i` (a `workflow.run`) is ready: render its parameters, reserve its budget, and
    /// start the child.
    pub(super) fn start_child(&mut self, i: usize, ready: &mut Vec<usize>) {
        let step = self.spec.step(i);
        let StepKind::Platform(p) = &step.kind else { return };
        let Some(w) = p.workflow_run() else { return };
        let depth = self.state.parent.as_ref().map_or(0, |p| p.depth) + 1;
        if depth > MAX_WORKFLOW_DEPTH {
            let chain =
                self.state.parent.as_ref().map(|p| format!(" (called from `{}`)", p.workflow)).unwrap_or_default();
            let e = StepError::permanent(
                "recursion_limit",
                format!(
                    "sub-workflow `{}` would run {depth} levels deep{chain}; at most {MAX_WORKFLOW_DEPTH} are allowed",
                    w.workflow
                ),
            );
            return self.fail_with(i, e, ready);
        }
        let scope = Scope { params: &self.state.params, steps: &self.state.scope };
        let params = match expr::render(&Value::Object(w.params.clone()), &scope) {
            Ok(v) => v,
            Err(e) => {
                return self.fail_with(i, StepError::permanent("input_error", format!("with.params: {e}")), ready);
            }
        };
        // The step's `cost:` is what it lets the child spend, and must fit; without one the
        // child may spend whatever the parent has left.
        let b = &self.state.budget;
        let grant = match (step.cost, b.limit()) {
            (Some(cost), _) => Some(cost),
            (None, Some(limit)) => Some(limit.saturating_sub(b.spent + b.reserved)),
            (None, None) => None,
        };
        if let Some(cost) = step.cost {
            if !self.state.budget.covers(cost) {
                self.state.steps[i].status = StepStatus::Pending;
                if !self.state.budget_blocked.contains(&i) {
                    self.state.budget_blocked.push(i);
                }
                return self.ask_for_budget(crate::run::Slot::step(i));
            }
        }
        let reserved = grant.unwrap_or(Money::ZERO);
        self.state.budget.reserved += reserved;
        let child = child_run_id(&self.state.run, &step.id, self.now);
        let s = &mut self.state.steps[i];
        s.reserved = reserved;
        s.started_at.get_or_insert(self.now);
        s.child = Some(child.clone());
        s.status = StepStatus::WaitingChild { run: child.clone() };
        let mut parent = link(self.spec, self.state, i);
        parent.budget = grant;
        self.actions.push(Action::StartChild { step: step.id.clone(), child, workflow: w.workflow, params, parent });
    }

    fn fail_with(&mut self, i: usize, error: StepError, ready: &mut Vec<usize>) {
        self.state.steps[i].started_at.get_or_insert(self.now);
        self.state.steps[i].error = Some(error);
        self.fail_step(i, ready);
    }

    /// The sub-workflow of step `step` ended (or could not start): settle what it spent, take
    /// its output or its error.
    pub(super) fn child_finished(&mut self, step: &StepId, child: &RunId, outcome: &ChildOutcome, cost: Money) {
        let Some(i) = self.step_index(step) else { return };
        if !matches!(&self.state.steps[i].status, StepStatus::WaitingChild { run } if run == child) {
            return; // already settled
        }
        // Its ask is moot now, whether it waits in line or the open request is about it.
        self.state.queued_asks.retain(|a| a.step != i);
        let subject = self.state.child_ask.as_ref().is_some_and(|a| a.step == i);
        let s = &mut self.state.steps[i];
        let reserved = std::mem::take(&mut s.reserved);
        s.cost += cost;
        self.state.budget.reserved = self.state.budget.reserved.saturating_sub(reserved);
        self.state.budget.spent += cost;
        let s = &mut self.state.steps[i];
        match outcome {
            ChildOutcome::Succeeded { output } => {
                s.output = Some(output.clone());
                s.status = StepStatus::Succeeded;
            }
            ChildOutcome::Failed { error } => {
                s.error = Some(error.clone());
                s.status = StepStatus::Failed;
            }
        }
        let mut ready = Vec::new();
        if subject {
            // The open request asks about this child's need only: withdraw it, and take up what
            // waited behind it with what the child left unspent (a new request if still short).
            self.state.child_ask = None;
            if let Some(r) = self.state.budget_request.take() {
                self.actions.push(Action::WithdrawHuman { request: r });
            }
            self.take_up_waiting(&mut ready);
        }
        self.settle(i, &mut ready);
        self.consider(ready);
        self.check_done();
    }

    /// This run ended while step `step` waited on its child `child`, which it cancelled: settle
    /// what the child spent up to its end on the step (once; any outcome, the step stays
    /// cancelled).
    pub(super) fn settle_cancelled_child(&mut self, step: &StepId, child: &RunId, cost: Money) {
        let Some(i) = self.step_index(step) else { return };
        let Some(at) = self.state.unsettled.iter().position(|&u| u == i) else { return };
        if self.state.steps[i].child.as_ref() != Some(child) {
            return;
        }
        self.state.unsettled.remove(at);
        self.state.steps[i].cost += cost;
        self.state.budget.spent += cost;
    }

    /// The sub-workflow of step `step` needs `amount` more budget (its request `request`).
    pub(super) fn child_budget_asked(&mut self, step: &StepId, child: &RunId, request: &RequestId, amount: Money) {
        let Some(i) = self.step_index(step) else { return };
        if !matches!(&self.state.steps[i].status, StepStatus::WaitingChild { run } if run == child)
            || self.state.child_ask.iter().chain(&self.state.queued_asks).any(|a| a.request == *request)
        {
            return;
        }
        self.grant_or_ask(ChildAsk { step: i, child: child.clone(), request: request.clone(), amount });
    }

    /// Grant a child's ask from this run's budget if it covers it, else pause for an extension.
    /// While a request is open about something else, the ask waits for its answer.
    pub(super) fn grant_or_ask(&mut self, ask: ChildAsk) {
        if self.state.budget_request.is_some() {
            self.state.queued_asks.retain(|a| a.step != ask.step); // a newer ask of the same child
            self.state.queued_asks.push(ask);
            return;
        }
        if self.state.budget.covers(ask.amount) {
            self.state.budget.reserved += ask.amount;
            self.state.steps[ask.step].reserved += ask.amount;
            self.actions.push(Action::GrantChild { child: ask.child, request: ask.request, amount: ask.amount });
            return;
        }
        self.state.human_seq += 1;
        let id = RequestId::new(format!("{}.budget.{}", self.state.run, self.state.human_seq));
        self.state.budget_request = Some(id.clone());
        if crate::run::subworkflow::asks_parent(self.spec, self.state) {
            // This run is a sub-workflow too: its own parent decides.
            let amount = self.state.budget.shortfall(ask.amount);
            self.actions.push(Action::AskParent { request: id, amount });
        } else {
            self.actions.push(Action::RequestHuman(child_budget_request(self.spec, self.state, &ask, id)));
            self.budget_asked();
        }
        self.state.child_ask = Some(ask);
    }
}
