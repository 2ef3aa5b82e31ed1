//! `apply`: how each event advances a run, and the actions it calls for.
//!
//! Readiness is tracked incrementally (`remaining_needs`, a worklist over `dependents`) so an
//! event costs O(its step's fan-out), not O(steps) — a 10,000-step fan-out stays linear.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::conversation::{PromptHold, ToolAsk, ToolGrant};
use crate::expr::{self, Scope};
use crate::ids::{RequestId, RunId, StepId};
use crate::llm::ModelQuote;
use crate::money::Money;
use crate::run::requests::{
    approval_request, budget_escalation_at, budget_request, defaults_due, escalation_at, escalation_timers,
    guidance_request, policy_decision, policy_reason, prompt_guidance_request, slot_mode, tool_authorisation_request,
};
use crate::run::state::{AttemptRecord, AttemptStatus, Slot, StepDecision};
use crate::run::{
    Action, BudgetState, Decision, Event, FailReason, RunState, RunStatus, StepState, StepStatus, Timer,
    retry_after_failure,
};
use crate::spec::steps::{EventStep, OnTimeout, PlatformAction, WaitSpec};
use crate::spec::{Join, JoinVerdict, NeedOutcome, StepKind, StepType, ValidatedSpec};
use crate::step::StepError;

/// Per-attempt limit when neither the step nor the workflow's defaults set one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// A step whose attempts were interrupted this many times (their processes died while running
/// them) fails instead of being tried again: the step itself may be what kills the process.
pub const MAX_INTERRUPTIONS: usize = 3;

/// A new run's initial state, before `RunStarted` is applied.
pub fn start(spec: &ValidatedSpec, run: RunId) -> RunState {
    let steps: Vec<StepState> = spec.dag().needs.iter().map(|needs| StepState::new(needs.len() as u32)).collect();
    RunState {
        run,
        status: RunStatus::Pending,
        params: Value::Null,
        started_at: 0,
        finished_at: None,
        open_steps: steps.len(),
        steps,
        budget: BudgetState { cap: spec.spec().budget.as_ref().map(|b| b.max_cost), ..Default::default() },
        budget_request: None,
        budget_asked: None,
        budget_asked_at: None,
        budget_escalated: 0,
        budget_blocked: Vec::new(),
        human_seq: 0,
        scope: json!({}),
        quotes: BTreeMap::new(),
        parent: None,
        child_ask: None,
        queued_asks: Vec::new(),
        unsettled: Vec::new(),
    }
}

/// Fold a journal into a state. Actions are discarded: [`outstanding`] says what to redo.
pub fn replay<'a>(spec: &ValidatedSpec, run: RunId, events: impl IntoIterator<Item = &'a Event>) -> RunState {
    let mut state = start(spec, run);
    for e in events {
        apply(spec, &mut state, e);
    }
    state
}

/// Advance `state` by `event`; returns what must be done, in order.
pub fn apply(spec: &ValidatedSpec, state: &mut RunState, event: &Event) -> Vec<Action> {
    let mut m = Machine { spec, state, actions: Vec::new(), now: event.at() };
    if m.state.status.is_finished() {
        // Late facts about a finished run change nothing — but what a sub-workflow it cancelled
        // spent up to then is settled on its step.
        if let Event::ChildFinished { step, child, cost, .. } = event {
            m.settle_cancelled_child(step, child, *cost);
        }
        return m.actions;
    }
    match event {
        Event::RunStarted { at, params, quotes, parent } => m.run_started(*at, params, quotes, parent.as_ref()),
        Event::StepSucceeded { step, attempt, started_at, output, cost, gate, .. } => {
            m.step_succeeded(step, *attempt, *started_at, output, *cost, gate)
        }
        Event::StepFailed { step, attempt, started_at, error, gate, .. } => {
            if let Some(i) = m.step_index(step).filter(|_| gate.is_some()) {
                m.state.steps[i].gate = gate.clone();
            }
            m.step_failed(step, *attempt, *started_at, error)
        }
        Event::StepBlocked { step, attempt, started_at, redacted, cost, gate, .. } => {
            m.step_blocked(step, *attempt, *started_at, redacted, *cost, gate)
        }
        Event::ToolAuthorisationAsked { step, attempt, started_at, ask, cost, .. } => {
            m.tool_authorisation_asked(step, *attempt, *started_at, ask, *cost)
        }
        Event::PromptHeld { step, attempt, started_at, hold, .. } => m.prompt_held(step, *attempt, *started_at, hold),
        Event::TimerFired { timer, .. } => m.timer_fired(timer),
        Event::AttemptInterrupted { step, attempt, started_at, worker, .. } => {
            m.attempt_interrupted(step, *attempt, *started_at, worker)
        }
        Event::HumanDecided { request, decision, by, comment, released, by_policy, at } => m.human_decided(
            StepDecision {
                request: request.clone(),
                decision: decision.clone(),
                by: by.clone(),
                comment: comment.clone(),
                by_policy: *by_policy,
                at: *at,
            },
            released.as_ref(),
        ),
        Event::Cancelled { by, reason, .. } => {
            m.finish(RunStatus::Cancelled { by: by.clone(), reason: reason.clone() })
        }
        Event::EventReceived { step, received, .. } => m.event_received(step, received),
        Event::ChildFinished { step, child, outcome, cost, .. } => m.child_finished(step, child, outcome, *cost),
        Event::ChildBudgetAsked { step, child, request, amount, .. } => {
            m.child_budget_asked(step, child, request, *amount)
        }
        Event::ItemsResolved { step, items, limit, .. } => m.items_resolved(step, *items, *limit),
    }
    m.actions
}

/// Actions a recovered run must (re)perform: in-flight dispatches, armed timers, open requests.
/// All are idempotent on the actor's side.
pub fn outstanding(spec: &ValidatedSpec, state: &RunState) -> Vec<Action> {
    let mut out = Vec::new();
    if state.status.is_finished() {
        // The sub-workflows it cancelled and has not settled: cancelled again (a no-op if done).
        return crate::run::subworkflow::cancel_unsettled(state);
    }
    if let Some(t) = spec.spec().timeout {
        out.push(Action::ArmTimer { timer: Timer::RunTimeout, at: state.started_at + t.as_millis() as u64 });
    }
    for (slot, s) in state.slots() {
        let i = slot.step;
        let step = &slot.id(spec);
        match &s.status {
            StepStatus::Queued { attempt, not_before, .. } => {
                let input = render_input(spec, state, slot).unwrap_or(Value::Null);
                out.push(Action::Dispatch { step: step.clone(), attempt: *attempt, not_before: *not_before, input });
            }
            StepStatus::Expanding => {
                let items = resolve_items(spec, state, i).map_or(0, |l| l.len().min(u32::MAX as usize) as u32);
                out.push(Action::ResolveItems { step: step.clone(), items });
            }
            StepStatus::Delaying { until } => {
                out.push(Action::ArmTimer { timer: Timer::Delay { step: step.clone() }, at: *until })
            }
            StepStatus::WaitingEvent { from, until } => {
                if let StepKind::Event(EventStep { wait: Some(w), .. }) = &spec.step(i).kind {
                    out.push(Action::ArmTimer { timer: Timer::EventWait { step: step.clone() }, at: *until });
                    out.push(Action::AwaitEvent { step: step.clone(), name: w.name.clone(), from: *from });
                }
            }
            StepStatus::WaitingHuman { request } if s.prompt_hold.is_some() => {
                let hold = s.prompt_hold.as_ref().expect("checked");
                out.push(Action::RequestHuman(prompt_guidance_request(spec, slot, hold, request.clone())))
            }
            StepStatus::WaitingHuman { request } if s.tool_ask.is_some() => {
                let ask = s.tool_ask.as_ref().expect("checked");
                out.push(Action::RequestHuman(tool_authorisation_request(spec, slot, ask, request.clone())))
            }
            StepStatus::WaitingChild { run } => {
                if let Some(a) = crate::run::subworkflow::start_child_action(spec, state, i, run) {
                    out.push(a);
                }
            }
            StepStatus::WaitingHuman { request } if s.blocked.is_some() => {
                out.push(Action::RequestHuman(guidance_request(spec, state, slot, request.clone())))
            }
            StepStatus::WaitingHuman { request } => {
                out.push(Action::RequestHuman(approval_request(spec, state, i, request.clone())))
            }
            _ => {}
        }
    }
    if let Some(req) = &state.budget_request {
        if let Some((request, amount)) = crate::run::subworkflow::open_budget_ask(spec, state) {
            out.push(Action::AskParent { request, amount });
        } else if let Some(ask) = &state.child_ask {
            out.push(Action::RequestHuman(crate::run::requests::child_budget_request(spec, state, ask, req.clone())));
        } else if let Some(&i) = state.budget_blocked.first() {
            out.push(Action::RequestHuman(budget_request(spec, state, blocked_slot(state, i), req.clone())));
        }
    }
    out.extend(escalation_timers(spec, state).map(|(timer, at)| Action::ArmTimer { timer, at }));
    // A default that fired but whose decision is not journaled yet (the store keeps whichever
    // decision won, so doing it again is harmless).
    out.extend(defaults_due(spec, state).into_iter().map(|(request, decision, reason)| Action::DecideByPolicy {
        request,
        decision,
        reason,
    }));
    out
}

pub(super) struct Machine<'a> {
    pub(super) spec: &'a ValidatedSpec,
    pub(super) state: &'a mut RunState,
    pub(super) actions: Vec<Action>,
    pub(super) now: u64,
}

/// The start-to-close limit of one attempt of step `i` (what the worker enforces).
pub fn step_timeout(spec: &ValidatedSpec, i: usize) -> Duration {
    spec.step(i)
        .timeout
        .or_else(|| spec.spec().defaults.as_ref().and_then(|d| d.timeout))
        .unwrap_or(DEFAULT_STEP_TIMEOUT)
}

/// The schedule-to-start limit of one attempt of step `i`, if any.
pub fn queue_timeout(spec: &ValidatedSpec, i: usize) -> Option<Duration> {
    spec.step(i).queue_timeout.or_else(|| spec.spec().defaults.as_ref().and_then(|d| d.queue_timeout))
}

/// The resolved input of a slot (a step, or an item of a `for_each` step): its inputs and,
/// for `api_call`, its request (for `research`, its query or documents; for `connector`, its
/// `with`), templates evaluated. An item's
/// templates also see `item` (its element of the list) and `item_index`.
fn render_input(spec: &ValidatedSpec, state: &RunState, slot: Slot) -> Result<Value, StepError> {
    let step = spec.step(slot.step);
    let item = match slot.item {
        Some(k) => Some((state.slot(slot).and_then(|s| s.item.clone()).unwrap_or(Value::Null), json!(k))),
        None => None,
    };
    let mut vars: Vec<(&str, &Value)> = vec![("params", &state.params), ("steps", &state.scope)];
    if let Some((item, index)) = &item {
        vars.push(("item", item));
        vars.push(("item_index", index));
    }
    let render = |v: &Value| expr::render_vars(v, &vars);
    let bad = |e: expr::ExprError| StepError::permanent("input_error", e.to_string());
    let inputs = render(&serde_json::to_value(&step.inputs).expect("inputs are JSON")).map_err(bad)?;
    let mut input = json!({ "inputs": inputs });
    if let StepKind::ApiCall(call) = &step.kind {
        input["request"] = render(&serde_json::to_value(&call.request).expect("request is JSON")).map_err(bad)?;
    }
    if let StepKind::Research(r) = &step.kind {
        match &r.ingest {
            Some(docs) => input["ingest"] = render(docs).map_err(bad)?,
            None => input["query"] = render(&Value::String(r.query.clone())).map_err(bad)?,
        }
    }
    // A model conversation: an `llm` step's, or a `research` step's summary (whose templates
    // also see the rendered `query`; the handler appends the hits).
    if let Some(llm) = step.kind.model_step() {
        let mut scope = json!({ "params": state.params, "steps": state.scope, "inputs": input["inputs"] });
        if let Some(query) = input.get("query") {
            scope["query"] = query.clone();
        }
        if let Some((item, index)) = &item {
            scope["item"] = item.clone();
            scope["item_index"] = index.clone();
        }
        input["llm"] = llm.render(&scope).map_err(|e| StepError::permanent("template_error", e))?;
        let s = state.slot(slot).expect("a slot of the run");
        // The slot's turn journal (an item of a `for_each` has its own), and which conversation
        // the attempt continues: a new one after each permanent failure (a retry of the step is
        // a fresh try), else the one its turn journal holds.
        input["llm"]["slot"] = json!(slot.id(spec));
        input["llm"]["conversation"] = json!(conversation_of(s));
        if let Some(quote) = state.quotes.get(&step.id) {
            // What the attempt may spend at most: the handler checks each call against it.
            input["llm"]["reserved"] = json!(quote.reservation_from(prompt_bytes(&input), s.turns_done));
        }
        if s.prompt_released {
            input["llm"]["prompt_released"] = json!(true);
        }
        if !llm.tools.is_empty() {
            // The human answers so far, so the attempt runs (or tells the model of) the calls
            // they decided; tool templates see `params`.
            input["llm"]["grants"] = json!({ "calls": s.tool_grants, "run": s.tools_allowed });
            input["params"] = state.params.clone();
        }
        if step.checks.is_some() {
            // CEL checks see `params`; the handler evaluates them for `on_block: retry`.
            input["params"] = state.params.clone();
        }
    }
    if let StepKind::Connector(c) = &step.kind {
        input["with"] = render(&Value::Object(c.with.clone())).map_err(bad)?;
    }
    if let StepKind::Event(EventStep { emit: Some(emit), .. }) = &step.kind {
        input["event"] = render(&json!({ "name": emit.name, "payload": emit.payload })).map_err(bad)?;
    }
    if let StepKind::Platform(p) = &step.kind {
        input["action"] = json!(p.action.name());
        input["with"] = render(&Value::Object(p.with.clone())).map_err(bad)?;
    }
    if let Some((item, index)) = item {
        input["item"] = item;
        input["item_index"] = index;
    }
    Ok(input)
}

/// The list a `for_each` step fans out over, resolved from journaled data (parameters and
/// upstream outputs), so replay resolves the same list.
pub fn resolve_items(spec: &ValidatedSpec, state: &RunState, i: usize) -> Result<Vec<Value>, StepError> {
    let Some(list) = &spec.step(i).for_each else {
        return Err(StepError::permanent("for_each_error", "the step has no `for_each`"));
    };
    let scope = Scope { params: &state.params, steps: &state.scope };
    match expr::render(list, &scope) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(other) => Err(StepError::permanent(
            "for_each_error",
            format!("`for_each` must give a list, but gave {}", json_kind(&other)),
        )),
        Err(e) => Err(StepError::permanent("for_each_error", format!("`for_each` could not be resolved: {e}"))),
    }
}

fn json_kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The conversation (turn journal) an attempt of a slot continues: one per permanent failure.
fn conversation_of(s: &StepState) -> u32 {
    let permanent = |a: &AttemptRecord| {
        a.status == AttemptStatus::Failed
            && a.error.as_ref().is_some_and(|e| e.class == crate::step::ErrorClass::Permanent)
    };
    s.attempts.iter().filter(|a| permanent(a)).count() as u32
}

/// The size of an `llm` attempt's rendered prompt, in bytes (bytes bound tokens).
fn prompt_bytes(input: &Value) -> u64 {
    let messages = input.pointer("/llm/messages").and_then(Value::as_array);
    messages.into_iter().flatten().map(|m| m["content"].as_str().map_or(0, |c| c.len() as u64)).sum()
}

/// The slot a budget block of step `i` is about: its first item still waiting for budget if
/// it fans out, else the step.
pub(crate) fn blocked_slot(state: &RunState, i: usize) -> Slot {
    state.steps[i]
        .items
        .iter()
        .position(|it| it.status == StepStatus::Pending)
        .map_or(Slot::step(i), |k| Slot::item(i, k as u32))
}

/// What one attempt of step `i` reserves: its estimate (for an `llm` step without one, the
/// worst case of its model calls from the run's quote and the rendered prompt), or more after
/// an overrun.
pub(crate) fn reservation(spec: &ValidatedSpec, state: &RunState, slot: Slot) -> Money {
    let step = spec.step(slot.step);
    let quoted = || {
        let quote = state.quotes.get(&step.id)?;
        let input = render_input(spec, state, slot).ok()?;
        Some(quote.reservation_from(prompt_bytes(&input), state.slot(slot)?.turns_done))
    };
    let est = step.cost.or_else(quoted).unwrap_or(Money::ZERO);
    state.slot(slot).and_then(|s| s.overrun_cost).map_or(est, |o| o.max(est))
}

impl Machine<'_> {
    pub(super) fn step_index(&self, id: &StepId) -> Option<usize> {
        self.spec.dag().index_of(id)
    }

    fn run_started(
        &mut self,
        at: u64,
        params: &Value,
        quotes: &BTreeMap<StepId, ModelQuote>,
        parent: Option<&crate::run::ParentLink>,
    ) {
        if self.state.status != RunStatus::Pending {
            return;
        }
        if let Some(p) = parent {
            // A sub-workflow spends from its parent's budget: what it was granted is its cap.
            if let Some(granted) = p.budget {
                self.state.budget.cap = Some(self.state.budget.cap.map_or(granted, |own| own.min(granted)));
            }
            self.state.parent = Some(p.clone());
        }
        self.state.quotes = quotes.clone();
        self.state.status = RunStatus::Running;
        self.state.started_at = at;
        self.state.params = params.clone();
        if let Some(t) = self.spec.spec().timeout {
            self.actions.push(Action::ArmTimer { timer: Timer::RunTimeout, at: at + t.as_millis() as u64 });
        }
        let roots: Vec<usize> =
            self.spec.dag().topo.iter().copied().filter(|&i| self.spec.dag().needs[i].is_empty()).collect();
        self.consider(roots);
        self.check_done();
    }

    /// Decide each newly ready step: skip, resolve locally, or dispatch; cascades.
    pub(super) fn consider(&mut self, ready: Vec<usize>) {
        // FIFO, so steps start in the order they became ready (declaration order among equals).
        let mut queue: std::collections::VecDeque<usize> = ready.into();
        let mut ready = Vec::new();
        loop {
            queue.extend(ready.drain(..));
            let Some(i) = queue.pop_front() else { break };
            if self.state.steps[i].status != StepStatus::Pending {
                continue;
            }
            if let Some((reason, upstream_failed)) = self.skip_reason(i) {
                self.state.steps[i].status = StepStatus::Skipped { reason, upstream_failed };
                self.settle(i, &mut ready);
                continue;
            }
            let step = self.spec.step(i);
            if step.for_each.is_some() {
                self.expand(i, &mut ready);
                continue;
            }
            match &step.kind {
                StepKind::Condition(condition) => {
                    let scope = Scope { params: &self.state.params, steps: &self.state.scope };
                    match condition.evaluate(&scope) {
                        Ok(b) => {
                            let s = &mut self.state.steps[i];
                            s.output = Some(Value::Bool(b));
                            s.started_at = Some(self.now);
                            s.status = StepStatus::Succeeded;
                        }
                        Err(e) => {
                            self.state.steps[i].error = Some(StepError::permanent("condition_error", e.to_string()));
                            self.state.steps[i].status = StepStatus::Failed;
                        }
                    }
                    self.settle(i, &mut ready);
                }
                StepKind::Delay(delay) => {
                    let until = delay.deadline(self.now);
                    self.state.steps[i].started_at = Some(self.now);
                    self.state.steps[i].status = StepStatus::Delaying { until };
                    self.actions.push(Action::ArmTimer { timer: Timer::Delay { step: step.id.clone() }, at: until });
                }
                StepKind::Event(EventStep { wait: Some(w), .. }) => {
                    let until = self.now.saturating_add(w.timeout.as_millis() as u64);
                    let from = self.now.saturating_sub(w.lookback().as_millis() as u64);
                    self.state.steps[i].started_at = Some(self.now);
                    self.state.steps[i].status = StepStatus::WaitingEvent { from, until };
                    self.actions
                        .push(Action::ArmTimer { timer: Timer::EventWait { step: step.id.clone() }, at: until });
                    self.actions.push(Action::AwaitEvent { step: step.id.clone(), name: w.name.clone(), from });
                }
                StepKind::Approval(_) => {
                    self.state.human_seq += 1;
                    let id = RequestId::for_step(&self.state.run, &step.id, self.state.human_seq);
                    self.state.steps[i].started_at = Some(self.now);
                    self.state.steps[i].status = StepStatus::WaitingHuman { request: id.clone() };
                    self.actions.push(Action::RequestHuman(approval_request(self.spec, self.state, i, id)));
                    self.asked(Slot::step(i));
                }
                StepKind::Platform(p) if p.action == PlatformAction::WorkflowRun => self.start_child(i, &mut ready),
                _ => self.dispatch(Slot::step(i), 1, None, &mut ready),
            }
        }
    }

    /// A `for_each` step is ready: resolve its list and have its length journaled
    /// (`ResolveItems` → `ItemsResolved`); its items start when that is applied.
    fn expand(&mut self, i: usize, ready: &mut Vec<usize>) {
        match resolve_items(self.spec, self.state, i) {
            Ok(items) => {
                let s = &mut self.state.steps[i];
                s.started_at = Some(self.now);
                s.status = StepStatus::Expanding;
                let items = items.len().min(u32::MAX as usize) as u32;
                self.actions.push(Action::ResolveItems { step: self.spec.step(i).id.clone(), items });
            }
            Err(e) => {
                self.state.steps[i].error = Some(e);
                self.state.steps[i].status = StepStatus::Failed;
                self.settle(i, ready);
            }
        }
    }

    /// The journaled length of a `for_each` step's list: start one attempt series per item
    /// (or fail the step if the list is longer than the run's limit).
    fn items_resolved(&mut self, step: &StepId, items: u32, limit: u32) {
        let Some(i) = self.step_index(step) else { return };
        if self.state.steps[i].status != StepStatus::Expanding {
            return;
        }
        let mut ready = Vec::new();
        let list = resolve_items(self.spec, self.state, i).and_then(|list| {
            if list.len() != items as usize {
                Err(StepError::permanent(
                    "for_each_error",
                    format!("`for_each` resolved to {} items, but the journal recorded {items}", list.len()),
                ))
            } else if items > limit {
                Err(StepError::permanent(
                    "for_each_error",
                    format!("`for_each` gave {items} items; a step may fan out over at most {limit} (the engine's `for_each_max_items`)"),
                ))
            } else {
                Ok(list)
            }
        });
        match list {
            Err(e) => {
                self.state.steps[i].error = Some(e);
                self.fail_step(i, &mut ready);
            }
            Ok(list) if list.is_empty() => {
                let s = &mut self.state.steps[i];
                s.output = Some(Value::Array(Vec::new()));
                s.status = StepStatus::Succeeded;
                self.settle(i, &mut ready);
            }
            Ok(list) => {
                let s = &mut self.state.steps[i];
                s.status = StepStatus::Mapping { items };
                s.items = list.into_iter().map(|item| StepState { item: Some(item), ..StepState::new(0) }).collect();
                for k in 0..items {
                    self.dispatch(Slot::item(i, k), 1, None, &mut ready);
                }
            }
        }
        self.consider(ready);
        self.check_done();
    }

    /// An item of `for_each` step `i` reached a terminal state: once every item has, the step
    /// succeeds with their outputs in list order, or fails naming the first item that failed.
    fn item_settled(&mut self, i: usize, k: u32, ready: &mut Vec<usize>) {
        let now = self.now;
        let s = &mut self.state.steps[i];
        s.items[k as usize].finished_at.get_or_insert(now);
        if !s.items.iter().all(|it| it.status.is_terminal()) || !matches!(s.status, StepStatus::Mapping { .. }) {
            return;
        }
        let n = s.items.len();
        let failed = s.items.iter().enumerate().find(|(_, it)| it.status == StepStatus::Failed);
        if let Some((k, it)) = failed {
            let e = it.error.clone().unwrap_or_else(|| StepError::permanent("step_failed", "failed"));
            s.error = Some(StepError { message: format!("item {k} of {n} failed: {}", e.message), ..e });
            s.status = StepStatus::Failed;
        } else {
            s.output = Some(Value::Array(s.items.iter().map(|it| it.output.clone().unwrap_or(Value::Null)).collect()));
            s.status = StepStatus::Succeeded;
        }
        self.settle(i, ready);
    }

    /// A slot reached a terminal state: a step settles; an item may settle its step.
    fn settle_slot(&mut self, slot: Slot, ready: &mut Vec<usize>) {
        match slot.item {
            None => self.settle(slot.step, ready),
            Some(k) => self.item_settled(slot.step, k, ready),
        }
    }

    fn slot_of(&self, id: &StepId) -> Option<Slot> {
        Slot::of(self.spec, id)
    }

    fn at(&mut self, slot: Slot) -> &mut StepState {
        let s = &mut self.state.steps[slot.step];
        match slot.item {
            None => s,
            Some(k) => &mut s.items[k as usize],
        }
    }

    /// How a finished need looks to its dependents' joins, and why, in words.
    fn need_outcome(&self, n: usize) -> (NeedOutcome, String) {
        let id = &self.spec.step(n).id;
        let s = &self.state.steps[n];
        match &s.status {
            StepStatus::Succeeded
                if self.spec.step(n).ty() == StepType::Condition && s.output == Some(Value::Bool(false)) =>
            {
                (NeedOutcome::Skipped, format!("condition `{id}` is false"))
            }
            StepStatus::Succeeded => (NeedOutcome::Succeeded, format!("`{id}` succeeded")),
            StepStatus::Failed => (NeedOutcome::Failed, format!("upstream step `{id}` failed")),
            StepStatus::Skipped { upstream_failed: true, .. } => {
                (NeedOutcome::Failed, format!("upstream step `{id}` was skipped after a failure"))
            }
            StepStatus::Skipped { .. } => (NeedOutcome::Skipped, format!("upstream step `{id}` was skipped")),
            _ => (NeedOutcome::Failed, format!("upstream step `{id}` was cancelled")),
        }
    }

    /// Why step `i` (all needs finished) must be skipped, if it must, and whether because a
    /// need failed. The step's join decides; the reason names it.
    fn skip_reason(&self, i: usize) -> Option<(String, bool)> {
        let needs = &self.spec.dag().needs[i];
        let join = self.spec.step(i).join.unwrap_or_default();
        if let JoinVerdict::Skip { upstream_failed } = join.verdict(needs.iter().map(|&n| self.need_outcome(n).0)) {
            let outcomes = needs.iter().map(|&n| self.need_outcome(n));
            let why: Vec<String> = match join {
                // Every need counts: say what each did.
                Join::AnySucceeded => outcomes.map(|(_, why)| why).collect(),
                // The first need that broke the join (a failure before a skip).
                _ => {
                    let culprit = if upstream_failed { NeedOutcome::Failed } else { NeedOutcome::Skipped };
                    outcomes.filter(|(o, _)| *o == culprit).map(|(_, why)| why).take(1).collect()
                }
            };
            let prefix = if join == Join::AnySucceeded { "no need succeeded: " } else { "" };
            return Some((format!("{prefix}{} (join {})", why.join(", "), join.name()), upstream_failed));
        }
        let when = self.spec.step(i).when.as_deref()?;
        let scope = Scope { params: &self.state.params, steps: &self.state.scope };
        match expr::eval_bool(when, &scope) {
            Ok(true) => None,
            Ok(false) => Some((format!("`when` is false: {when}"), false)),
            Err(e) => Some((format!("`when` could not be evaluated: {e}"), false)),
        }
    }

    /// Step `i` reached a terminal state: publish it to expressions, wake its dependents.
    pub(super) fn settle(&mut self, i: usize, ready: &mut Vec<usize>) {
        let s = &mut self.state.steps[i];
        s.finished_at.get_or_insert(self.now);
        self.state.open_steps -= 1;
        let id = self.spec.step(i).id.as_str();
        self.state.scope[id] = json!({ "output": s.output.clone().unwrap_or(Value::Null), "status": s.status.label() });
        for &d in &self.spec.dag().dependents[i] {
            let dep = &mut self.state.steps[d];
            dep.remaining_needs -= 1;
            if dep.remaining_needs == 0 {
                ready.push(d);
            }
        }
    }

    fn dispatch(&mut self, slot: Slot, attempt: u32, not_before: Option<u64>, ready: &mut Vec<usize>) {
        let i = slot.step;
        if slot.item.is_none()
            && matches!(&self.spec.step(i).kind, StepKind::Platform(p) if p.action == PlatformAction::WorkflowRun)
        {
            return self.start_child(i, ready); // after a budget extension
        }
        let input = match render_input(self.spec, self.state, slot) {
            Ok(v) => v,
            Err(e) => {
                self.at(slot).error = Some(e);
                self.at(slot).status = StepStatus::Failed;
                self.settle_slot(slot, ready);
                return;
            }
        };
        let estimate = reservation(self.spec, self.state, slot);
        if !self.state.budget.covers(estimate) {
            let s = self.at(slot);
            s.status = StepStatus::Pending;
            s.attempts.truncate(attempt as usize - 1);
            if !self.state.budget_blocked.contains(&i) {
                self.state.budget_blocked.push(i);
            }
            self.ask_for_budget(slot);
            return;
        }
        self.state.budget.reserved += estimate;
        let start = not_before.unwrap_or(self.now).max(self.now);
        let queue_deadline = queue_timeout(self.spec, i).map(|q| start + q.as_millis() as u64);
        let now = self.now;
        let s = self.at(slot);
        s.reserved = estimate;
        s.started_at.get_or_insert(now);
        s.attempts.push(AttemptRecord {
            attempt,
            status: AttemptStatus::Queued,
            dispatched_at: now,
            started_at: None,
            finished_at: None,
            worker: None,
            error: None,
            late_result: None,
        });
        s.status = StepStatus::Queued { attempt, not_before, queue_deadline };
        self.actions.push(Action::Dispatch { step: slot.id(self.spec), attempt, not_before, input });
    }

    /// `slot` (its step held in `budget_blocked`) cannot be covered: ask for an extension — a human, or
    /// for a sub-workflow spending its parent's budget, the parent — unless a request is open.
    pub(super) fn ask_for_budget(&mut self, slot: Slot) {
        if self.state.budget_request.is_some() {
            return;
        }
        self.state.human_seq += 1;
        let id = RequestId::new(format!("{}.budget.{}", self.state.run, self.state.human_seq));
        self.state.budget_request = Some(id.clone());
        if crate::run::subworkflow::asks_parent(self.spec, self.state) {
            let amount = self.state.budget.shortfall(reservation(self.spec, self.state, slot));
            self.actions.push(Action::AskParent { request: id, amount });
        } else {
            self.actions.push(Action::RequestHuman(budget_request(self.spec, self.state, slot, id)));
            self.budget_asked();
        }
    }

    /// A request for `slot` was just made: its escalation starts now.
    fn asked(&mut self, slot: Slot) {
        let now = self.now;
        let s = self.at(slot);
        if let StepStatus::WaitingHuman { request } = &s.status {
            s.asked = Some(request.clone());
        }
        s.asked_at = Some(now);
        s.escalated = 0;
        if let Some(at) = escalation_at(self.spec, self.state, slot, 0) {
            self.actions.push(Action::ArmTimer { timer: Timer::Escalate { step: slot.id(self.spec), level: 0 }, at });
        }
    }

    /// A budget extension was just asked of a person: its escalation starts now.
    pub(super) fn budget_asked(&mut self) {
        self.state.budget_asked = self.state.budget_request.clone();
        self.state.budget_asked_at = Some(self.now);
        self.state.budget_escalated = 0;
        if let Some(at) = budget_escalation_at(self.spec, self.state, 0) {
            self.actions.push(Action::ArmTimer { timer: Timer::EscalateBudget { level: 0 }, at });
        }
    }

    /// Settle the reservation of the attempt in flight with its actual cost (an item's cost
    /// also counts on its step); a step that reports no cost of its own (and every failed
    /// attempt) is charged its estimate: fail closed.
    fn settle_cost(&mut self, slot: Slot, actual: Money) {
        self.settle_cost_as(slot, actual, false)
    }

    /// A finished attempt of a step that calls a model (`llm`, a summarised `research`)
    /// reports exactly what its model calls cost — zero when it made none (it went on from its
    /// turn journal, or found no hits to summarise) — so it is charged that, even when zero.
    fn settle_reported_cost(&mut self, slot: Slot, actual: Money) {
        let exact = self.spec.step(slot.step).kind.model_step().is_some();
        self.settle_cost_as(slot, actual, exact)
    }

    fn settle_cost_as(&mut self, slot: Slot, actual: Money, exact: bool) {
        let s = self.at(slot);
        let reserved = std::mem::take(&mut s.reserved);
        let actual = if actual.is_zero() && !exact { reserved } else { actual };
        if actual > reserved {
            s.overrun_cost = Some(actual);
        }
        s.cost += actual;
        if slot.item.is_some() {
            self.state.steps[slot.step].cost += actual;
        }
        self.state.budget.reserved = self.state.budget.reserved.saturating_sub(reserved);
        self.state.budget.spent += actual;
    }

    /// Whether `attempt` is the one `slot` waits for. If it is not, its result is late: the
    /// run moved past it (it was interrupted, timed out or cancelled), so the result is kept
    /// on its audit record as superseded and never used.
    fn is_current(&mut self, slot: Slot, attempt: u32, started_at: Option<u64>, result: &str) -> bool {
        if self.state.is_queued(slot, attempt) {
            return true;
        }
        let now = self.now;
        if let Some(a) = self.at(slot).attempts.iter_mut().find(|a| a.attempt == attempt) {
            if matches!(a.status, AttemptStatus::Interrupted | AttemptStatus::TimedOut | AttemptStatus::Cancelled) {
                a.status = AttemptStatus::Superseded;
                a.started_at = started_at.or(a.started_at);
                a.finished_at = Some(now);
                a.late_result = Some(result.to_string());
            }
        }
        false
    }

    /// Close the current attempt of `slot` with its result.
    fn close_attempt(
        &mut self,
        slot: Slot,
        attempt: u32,
        status: AttemptStatus,
        started_at: Option<u64>,
        error: Option<&StepError>,
    ) {
        let now = self.now;
        if let Some(a) = self.at(slot).attempts.iter_mut().find(|a| a.attempt == attempt) {
            a.status = status;
            a.started_at = started_at.or(a.started_at);
            a.finished_at = Some(now);
            a.error = error.cloned();
        }
    }

    fn step_succeeded(
        &mut self,
        step: &StepId,
        attempt: u32,
        started_at: u64,
        output: &Value,
        cost: Money,
        gate: &Option<Value>,
    ) {
        let Some(slot) = self.slot_of(step) else { return };
        if !self.is_current(slot, attempt, Some(started_at), "succeeded") {
            return;
        }
        self.settle_reported_cost(slot, cost);
        self.close_attempt(slot, attempt, AttemptStatus::Succeeded, Some(started_at), None);
        let s = self.at(slot);
        s.output = Some(output.clone());
        s.gate = gate.clone();
        s.error = None;
        s.status = StepStatus::Succeeded;
        let mut ready = Vec::new();
        self.settle_slot(slot, &mut ready);
        self.consider(ready);
        self.check_done();
    }

    fn step_blocked(
        &mut self,
        step: &StepId,
        attempt: u32,
        started_at: u64,
        redacted: &Value,
        cost: Money,
        gate: &Value,
    ) {
        let Some(slot) = self.slot_of(step) else { return };
        if !self.is_current(slot, attempt, Some(started_at), "blocked") {
            return;
        }
        self.settle_reported_cost(slot, cost);
        self.close_attempt(slot, attempt, AttemptStatus::Blocked, Some(started_at), None);
        self.state.human_seq += 1;
        let id = RequestId::for_step(&self.state.run, step, self.state.human_seq);
        let s = self.at(slot);
        s.gate = Some(gate.clone());
        s.blocked = Some(redacted.clone());
        s.status = StepStatus::WaitingHuman { request: id.clone() };
        self.actions.push(Action::RequestHuman(guidance_request(self.spec, self.state, slot, id)));
        self.asked(slot);
    }

    /// An `llm` attempt stopped before a tool call that needs authorisation: ask the human.
    fn tool_authorisation_asked(&mut self, step: &StepId, attempt: u32, started_at: u64, ask: &ToolAsk, cost: Money) {
        let Some(slot) = self.slot_of(step) else { return };
        if !self.is_current(slot, attempt, Some(started_at), "suspended") {
            return;
        }
        self.settle_cost_as(slot, cost, true);
        self.close_attempt(slot, attempt, AttemptStatus::Suspended, Some(started_at), None);
        self.state.human_seq += 1;
        let id = RequestId::for_step(&self.state.run, step, self.state.human_seq);
        let s = self.at(slot);
        s.tool_ask = Some(ask.clone());
        s.turns_done = ask.turn;
        s.status = StepStatus::WaitingHuman { request: id.clone() };
        self.actions.push(Action::RequestHuman(tool_authorisation_request(self.spec, slot, ask, id)));
        self.asked(slot);
    }

    /// An `llm` attempt stopped before any call: its prompt was flagged and the step asks for
    /// guidance.
    fn prompt_held(&mut self, step: &StepId, attempt: u32, started_at: u64, hold: &PromptHold) {
        let Some(slot) = self.slot_of(step) else { return };
        if !self.is_current(slot, attempt, Some(started_at), "suspended") {
            return;
        }
        self.settle_cost_as(slot, Money::ZERO, true);
        self.close_attempt(slot, attempt, AttemptStatus::Suspended, Some(started_at), None);
        self.state.human_seq += 1;
        let id = RequestId::for_step(&self.state.run, step, self.state.human_seq);
        let s = self.at(slot);
        s.prompt_hold = Some(hold.clone());
        s.status = StepStatus::WaitingHuman { request: id.clone() };
        self.actions.push(Action::RequestHuman(prompt_guidance_request(self.spec, slot, hold, id)));
        self.asked(slot);
    }

    /// Guidance on a flagged prompt: released (the call is made, in a new attempt), replaced by
    /// a value for the step's output, or the run aborted.
    fn prompt_decided(&mut self, slot: Slot, d: StepDecision) {
        let s = self.at(slot);
        s.prompt_hold = None;
        s.decision = Some(d.clone());
        let mut ready = Vec::new();
        match d.decision {
            Decision::Approve => {
                s.prompt_released = true;
                s.status = StepStatus::Pending;
                let attempt = s.attempts.len() as u32 + 1;
                self.dispatch(slot, attempt, None, &mut ready);
            }
            Decision::Modify { value } => {
                s.output = Some(value);
                s.status = StepStatus::Succeeded;
                self.settle_slot(slot, &mut ready);
            }
            Decision::Reject => {
                // Guidance nobody gave in time (the escalation policy's `fail`): the step fails.
                s.error = Some(StepError::permanent(
                    "guidance_timed_out",
                    format!(
                        "its prompt was flagged and {}",
                        d.comment.as_deref().unwrap_or("nobody gave guidance in time")
                    ),
                ));
                s.status = StepStatus::Failed;
                self.settle_slot(slot, &mut ready);
            }
            _ => {
                return self
                    .finish(RunStatus::Cancelled { by: d.by, reason: d.comment.unwrap_or_else(|| "aborted".into()) });
            }
        }
        self.consider(ready);
        self.check_done();
    }

    /// The human answered a tool-authorisation request: keep the answer for the slot's later
    /// attempts and continue the conversation with a new attempt (abort ends the run).
    fn tool_decided(&mut self, slot: Slot, d: StepDecision) {
        let s = self.at(slot);
        let ask = s.tool_ask.take().expect("a tool-authorisation request");
        s.decision = Some(d.clone());
        let grant = match d.decision {
            Decision::AllowOnce | Decision::Approve => ToolGrant::Allow { by: d.by.clone() },
            Decision::AllowForRun => {
                s.tools_allowed.insert(ask.tool.clone(), d.by.clone());
                ToolGrant::Allow { by: d.by.clone() }
            }
            Decision::Deny { reason } => ToolGrant::Deny { by: d.by.clone(), reason },
            Decision::Reject => {
                ToolGrant::Deny { by: d.by.clone(), reason: d.comment.clone().unwrap_or_else(|| "denied".into()) }
            }
            Decision::Abort | Decision::Modify { .. } | Decision::Extend { .. } => {
                return self
                    .finish(RunStatus::Cancelled { by: d.by, reason: d.comment.unwrap_or_else(|| "aborted".into()) });
            }
        };
        s.tool_grants.insert(ask.call_id, grant);
        s.status = StepStatus::Pending;
        let attempt = s.attempts.len() as u32 + 1;
        let mut ready = Vec::new();
        self.dispatch(slot, attempt, None, &mut ready);
        self.consider(ready);
        self.check_done();
    }

    fn step_failed(&mut self, step: &StepId, attempt: u32, started_at: Option<u64>, error: &StepError) {
        let Some(slot) = self.slot_of(step) else { return };
        if !self.is_current(slot, attempt, started_at, &format!("failed: {}", error.code)) {
            return;
        }
        self.attempt_failed(slot, attempt, AttemptStatus::Failed, started_at, error);
    }

    /// The current attempt of `slot` ended without a result: settle it, then retry as the
    /// step's policy allows, or fail it.
    fn attempt_failed(
        &mut self,
        slot: Slot,
        attempt: u32,
        status: AttemptStatus,
        started_at: Option<u64>,
        error: &StepError,
    ) {
        let spec = self.spec;
        let i = slot.step;
        // Jitter keyed by the slot, so a fan-out's items do not retry in lockstep.
        let key = slot.id(spec);
        self.settle_cost(slot, Money::ZERO);
        self.close_attempt(slot, attempt, status, started_at, Some(error));
        if status == AttemptStatus::Failed && error.class == crate::step::ErrorClass::Permanent {
            self.at(slot).turns_done = 0; // a retry starts a new conversation
        }
        let counted = self.at(slot).attempts.iter().filter(|a| a.counts_towards_retries()).count() as u32;
        self.at(slot).error = Some(error.clone());
        let mut ready = Vec::new();
        let retry =
            spec.step(i).retry.as_ref().or_else(|| spec.spec().defaults.as_ref().and_then(|d| d.retry.as_ref()));
        match retry.and_then(|r| retry_after_failure(r, error, self.state.run.as_str(), key.as_str(), counted)) {
            None => self.fail_slot(slot, &mut ready),
            Some(delay) => {
                self.at(slot).status = StepStatus::Pending;
                self.dispatch(slot, attempt + 1, Some(self.now + delay), &mut ready);
            }
        }
        self.consider(ready);
        self.check_done();
    }

    /// The current attempt's process died while it may have been running it: close it as
    /// interrupted and run the step again at once (same idempotency key), unless it keeps
    /// being interrupted.
    fn attempt_interrupted(&mut self, step: &StepId, attempt: u32, started_at: u64, worker: &str) {
        let Some(slot) = self.slot_of(step) else { return };
        if !self.state.is_queued(slot, attempt) {
            return;
        }
        // It may have run: charge its reservation (fail closed), like a step reporting no cost.
        self.settle_cost(slot, Money::ZERO);
        let error = StepError::retryable(
            "interrupted",
            format!("the process running attempt {attempt} ({worker}) died before it finished"),
        );
        self.close_attempt(slot, attempt, AttemptStatus::Interrupted, Some(started_at), Some(&error));
        if let Some(a) = self.at(slot).attempts.iter_mut().find(|a| a.attempt == attempt) {
            a.worker = Some(worker.to_string());
        }
        let interruptions = self.at(slot).attempts.iter().filter(|a| a.status == AttemptStatus::Interrupted).count();
        let mut ready = Vec::new();
        if interruptions >= MAX_INTERRUPTIONS {
            self.at(slot).error = Some(StepError::permanent(
                "interrupted",
                format!("{interruptions} attempts were interrupted by their process dying; not trying again"),
            ));
            self.fail_slot(slot, &mut ready);
        } else {
            self.at(slot).status = StepStatus::Pending;
            self.dispatch(slot, attempt + 1, None, &mut ready);
        }
        self.consider(ready);
        self.check_done();
    }

    pub(super) fn fail_step(&mut self, i: usize, ready: &mut Vec<usize>) {
        self.fail_slot(Slot::step(i), ready);
    }

    fn fail_slot(&mut self, slot: Slot, ready: &mut Vec<usize>) {
        self.at(slot).status = StepStatus::Failed;
        self.settle_slot(slot, ready);
    }

    fn timer_fired(&mut self, timer: &Timer) {
        match timer {
            Timer::QueueTimeout { step, attempt } => {
                let Some(slot) = self.slot_of(step) else { return };
                if self.state.is_queued(slot, *attempt) {
                    let limit = queue_timeout(self.spec, slot.step).unwrap_or_default();
                    let error = StepError::retryable(
                        "queue_timeout",
                        format!(
                            "attempt {attempt} was not started by a worker within {}",
                            humantime::format_duration(limit)
                        ),
                    );
                    self.attempt_failed(slot, *attempt, AttemptStatus::NotStarted, None, &error);
                }
            }
            Timer::StepTimeout { step, attempt } => {
                let Some(slot) = self.slot_of(step) else { return };
                if self.state.is_queued(slot, *attempt) {
                    let limit = step_timeout(self.spec, slot.step);
                    let error = StepError::retryable(
                        "timeout",
                        format!("attempt {attempt} did not finish within {}", humantime::format_duration(limit)),
                    );
                    self.attempt_failed(slot, *attempt, AttemptStatus::TimedOut, None, &error);
                }
            }
            Timer::Delay { step } => {
                let Some(i) = self.step_index(step) else { return };
                if let StepStatus::Delaying { until } = self.state.steps[i].status {
                    if self.now + 5 < until {
                        return; // fired early (clock skew between processes): the actor re-arms
                    }
                    let s = &mut self.state.steps[i];
                    s.output = Some(json!({ "waited_ms": until - s.started_at.unwrap_or(until) }));
                    s.status = StepStatus::Succeeded;
                    let mut ready = Vec::new();
                    self.settle(i, &mut ready);
                    self.consider(ready);
                    self.check_done();
                }
            }
            Timer::Escalate { step, level } => self.escalate(step, *level),
            Timer::EscalateBudget { level } => self.escalate_budget(*level),
            Timer::EventWait { step } => {
                let Some(i) = self.step_index(step) else { return };
                let StepStatus::WaitingEvent { until, .. } = self.state.steps[i].status else { return };
                if self.now + 5 < until {
                    return; // fired early (clock skew between processes): the actor re-arms
                }
                let StepKind::Event(EventStep { wait: Some(w), .. }) = &self.spec.step(i).kind else { return };
                let mut ready = Vec::new();
                match w.on_timeout {
                    OnTimeout::Fail => {
                        let limit = humantime::format_duration(w.timeout);
                        let error = StepError::permanent(
                            "event_timeout",
                            format!("no `{}` event matched within {limit}", w.name),
                        );
                        self.state.steps[i].error = Some(error);
                        self.state.steps[i].status = StepStatus::Failed;
                    }
                    OnTimeout::Succeed => {
                        self.state.steps[i].output = Some(w.timed_out());
                        self.state.steps[i].status = StepStatus::Succeeded;
                    }
                    OnTimeout::Skip => {
                        let reason = format!("no `{}` event within {}", w.name, humantime::format_duration(w.timeout));
                        self.state.steps[i].status = StepStatus::Skipped { reason, upstream_failed: false };
                    }
                }
                self.settle(i, &mut ready);
                self.consider(ready);
                self.check_done();
            }
            Timer::RunTimeout => {
                let limit = self.spec.spec().timeout.unwrap_or_default();
                self.finish(RunStatus::Failed {
                    reason: FailReason {
                        code: "timed_out".into(),
                        message: format!("the run did not finish within {}", humantime::format_duration(limit)),
                    },
                })
            }
        }
    }

    /// Escalation `level` of the request a step or item waits on is due: page its `to`, or
    /// apply its `default` (through the store, first writer wins, so a human deciding at the
    /// same moment is not overruled). Fired levels are counted, so a replayed or repeated timer
    /// does nothing.
    fn escalate(&mut self, step: &StepId, level: u32) {
        let Some(slot) = self.slot_of(step) else { return };
        let Some(s) = self.state.slot(slot) else { return };
        let (Some(mode), StepStatus::WaitingHuman { request }) = (slot_mode(self.spec, slot.step, s), &s.status) else {
            return;
        };
        if s.escalated != level {
            return;
        }
        let Some(at) = escalation_at(self.spec, self.state, slot, level) else { return };
        if self.now + 5 < at {
            return; // fired early (clock skew between processes): the actor re-arms
        }
        let request = request.clone();
        let e = &self.spec.step(slot.step).escalate[level as usize];
        self.at(slot).escalated = level + 1;
        if let Some(to) = &e.to {
            self.actions.push(Action::PageHuman { request, to: to.clone(), level });
            if let Some(at) = escalation_at(self.spec, self.state, slot, level + 1) {
                self.actions
                    .push(Action::ArmTimer { timer: Timer::Escalate { step: step.clone(), level: level + 1 }, at });
            }
        } else if let Some(d) = &e.default {
            self.actions.push(Action::DecideByPolicy {
                request,
                decision: policy_decision(d, mode),
                reason: policy_reason(e, d, mode),
            });
        }
    }

    /// Escalation `level` of the open budget-extension request is due (as [`Self::escalate`]).
    fn escalate_budget(&mut self, level: u32) {
        let Some(request) = self.state.budget_request.clone() else { return };
        if self.state.budget_escalated != level {
            return;
        }
        let Some(at) = budget_escalation_at(self.spec, self.state, level) else { return };
        if self.now + 5 < at {
            return;
        }
        let Some(e) = self.spec.spec().budget.as_ref().and_then(|b| b.escalate.get(level as usize)) else { return };
        self.state.budget_escalated = level + 1;
        if let Some(to) = &e.to {
            self.actions.push(Action::PageHuman { request, to: to.clone(), level });
            if let Some(at) = budget_escalation_at(self.spec, self.state, level + 1) {
                self.actions.push(Action::ArmTimer { timer: Timer::EscalateBudget { level: level + 1 }, at });
            }
        } else if let Some(d) = &e.default {
            let mode = crate::run::HumanMode::BudgetExtension;
            self.actions.push(Action::DecideByPolicy {
                request,
                decision: policy_decision(d, mode),
                reason: policy_reason(e, d, mode),
            });
        }
    }

    /// A waiting `event` step received its event (the driver checked name and correlation).
    fn event_received(&mut self, step: &StepId, event: &Value) {
        let Some(i) = self.step_index(step) else { return };
        if !matches!(self.state.steps[i].status, StepStatus::WaitingEvent { .. }) {
            return; // already received, or timed out
        }
        let s = &mut self.state.steps[i];
        s.output = Some(WaitSpec::received(event));
        s.status = StepStatus::Succeeded;
        let mut ready = Vec::new();
        self.settle(i, &mut ready);
        self.consider(ready);
        self.check_done();
    }

    fn human_decided(&mut self, d: StepDecision, released: Option<&Value>) {
        if self.state.budget_request.as_ref() == Some(&d.request) {
            return self.budget_decided(d);
        }
        let Some(slot) = self
            .state
            .slots()
            .find(|(_, s)| matches!(&s.status, StepStatus::WaitingHuman { request } if *request == d.request))
            .map(|(slot, _)| slot)
        else {
            return; // unknown or already answered: decisions are first-writer-wins upstream
        };
        if self.state.slot(slot).is_some_and(|s| s.tool_ask.is_some()) {
            return self.tool_decided(slot, d);
        }
        if self.state.slot(slot).is_some_and(|s| s.prompt_hold.is_some()) {
            return self.prompt_decided(slot, d);
        }
        let mut ready = Vec::new();
        let decision = d.decision.clone();
        let s = self.at(slot);
        s.decision = Some(d.clone());
        let was_blocked = s.blocked.take().is_some();
        match decision {
            Decision::Approve if was_blocked => {
                // Released as is: the held output, brought back by the actor with the decision.
                s.output = Some(released.cloned().unwrap_or(Value::Null));
                s.status = StepStatus::Succeeded;
                self.settle_slot(slot, &mut ready);
            }
            Decision::Approve => {
                let mut output = json!({ "approved": true, "by": d.by, "comment": d.comment });
                if d.by_policy {
                    output["by_policy"] = json!(true);
                }
                s.output = Some(output);
                s.status = StepStatus::Succeeded;
                self.settle_slot(slot, &mut ready);
            }
            Decision::Modify { value } => {
                s.output = Some(value);
                s.status = StepStatus::Succeeded;
                self.settle_slot(slot, &mut ready);
            }
            Decision::Reject if was_blocked && d.by_policy => {
                // Guidance nobody gave in time: the step fails, saying so.
                s.error = Some(StepError::permanent(
                    "guidance_timed_out",
                    format!(
                        "its output was blocked and {}",
                        d.comment.as_deref().unwrap_or("nobody gave guidance in time")
                    ),
                ));
                s.status = StepStatus::Failed;
                self.settle_slot(slot, &mut ready);
            }
            Decision::Reject
            | Decision::Extend { .. }
            | Decision::AllowOnce
            | Decision::AllowForRun
            | Decision::Deny { .. } => {
                s.error = Some(StepError::permanent(
                    "rejected",
                    format!(
                        "rejected by {}{}",
                        d.by,
                        d.comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
                    ),
                ));
                s.status = StepStatus::Failed;
                self.settle_slot(slot, &mut ready);
            }
            Decision::Abort => {
                return self
                    .finish(RunStatus::Cancelled { by: d.by, reason: d.comment.unwrap_or_else(|| "aborted".into()) });
            }
        }
        self.consider(ready);
        self.check_done();
    }

    fn budget_decided(&mut self, d: StepDecision) {
        let needed = match (&self.state.child_ask, self.state.budget_blocked.first()) {
            (Some(ask), _) => self.state.budget.shortfall(ask.amount),
            (None, Some(&first)) => {
                self.state.budget.shortfall(reservation(self.spec, self.state, blocked_slot(self.state, first)))
            }
            (None, None) => return,
        };
        let amount = match d.decision {
            Decision::Approve => needed,
            Decision::Extend { amount } if !amount.is_zero() => amount,
            _ => {
                let cap = self.state.budget.limit().unwrap_or(Money::ZERO);
                return self.finish(RunStatus::Failed {
                    reason: FailReason {
                        code: "budget_exhausted".into(),
                        message: match (d.by_policy, &d.comment) {
                            (true, Some(why)) => format!("budget of {cap} exhausted; extension refused: {why}"),
                            _ => format!("budget of {cap} exhausted; extension refused by {}", d.by),
                        },
                    },
                });
            }
        };
        self.state.budget.extended += amount;
        self.state.budget_request = None;
        let mut ready = Vec::new();
        self.take_up_waiting(&mut ready);
        self.consider(ready);
        self.check_done();
    }

    /// The budget request was answered or withdrawn: take up what waited on it — its subject
    /// first (a sub-workflow's ask, or the first step held back), then the rest in order. The
    /// first that still does not fit opens the next request, and whatever follows it waits again.
    pub(super) fn take_up_waiting(&mut self, ready: &mut Vec<usize>) {
        if let Some(ask) = self.state.child_ask.take() {
            self.grant_or_ask(ask);
            self.take_up_asks();
            self.take_up_blocked(ready);
        } else {
            self.take_up_blocked(ready);
            self.take_up_asks();
        }
    }

    fn take_up_asks(&mut self) {
        for ask in std::mem::take(&mut self.state.queued_asks) {
            self.grant_or_ask(ask);
        }
    }

    /// Dispatch the steps (and `for_each` items) held back for budget, in order, while no
    /// request is open; those that come after one that blocks again stay held back.
    fn take_up_blocked(&mut self, ready: &mut Vec<usize>) {
        let blocked = std::mem::take(&mut self.state.budget_blocked);
        for i in blocked {
            if self.state.budget_request.is_some() {
                // Still short: the new request covers it too.
                if !self.state.budget_blocked.contains(&i) {
                    self.state.budget_blocked.push(i);
                }
                continue;
            }
            // A `for_each` step's items held back, in order (one may block again), or the step.
            let held: Vec<Slot> = match self.state.steps[i].status {
                StepStatus::Mapping { .. } => (0..self.state.steps[i].items.len() as u32)
                    .filter(|&k| self.state.steps[i].items[k as usize].status == StepStatus::Pending)
                    .map(|k| Slot::item(i, k))
                    .collect(),
                _ => vec![Slot::step(i)],
            };
            for slot in held {
                if self.state.budget_request.is_some() {
                    break; // blocked again: dispatch put the step back on the list
                }
                let attempt = self.state.slot(slot).map_or(0, |s| s.attempts.len() as u32) + 1;
                self.dispatch(slot, attempt, None, ready);
            }
        }
    }

    pub(super) fn check_done(&mut self) {
        if self.state.open_steps > 0 || self.state.status.is_finished() {
            return;
        }
        let failed = self.state.steps.iter().enumerate().find(|(_, s)| s.status == StepStatus::Failed);
        let status = match failed {
            None => RunStatus::Succeeded,
            Some((i, s)) => {
                let code =
                    if s.error.as_ref().is_some_and(|e| e.code == "rejected") { "rejected" } else { "step_failed" };
                RunStatus::Failed {
                    reason: FailReason {
                        code: code.into(),
                        message: format!(
                            "step `{}` failed: {}",
                            self.spec.step(i).id,
                            s.error.as_ref().map_or("unknown error".to_string(), |e| e.to_string())
                        ),
                    },
                }
            }
        };
        self.finish(status);
    }

    /// End the run: cancel what is not finished (sub-workflows too), withdraw open requests.
    pub(super) fn finish(&mut self, status: RunStatus) {
        let why = crate::run::subworkflow::cancel_reason(&status);
        let now = self.now;
        let state = &mut *self.state;
        for (i, s) in state.steps.iter_mut().enumerate() {
            if let StepStatus::WaitingChild { run } = &s.status {
                self.actions.push(Action::CancelChild { child: run.clone(), reason: why.clone() });
                // Its spend so far is settled when it has ended (`settle_cancelled_child`).
                state.unsettled.push(i);
            }
            for item in &mut s.items {
                cancel_open(item, now, &mut self.actions);
            }
            cancel_open(s, now, &mut self.actions);
        }
        if let Some(req) = self.state.budget_request.take() {
            self.actions.push(Action::WithdrawHuman { request: req });
        }
        self.state.budget.reserved = Money::ZERO;
        self.state.open_steps = 0;
        self.state.status = status;
        self.state.finished_at = Some(self.now);
        self.actions.push(Action::Finish);
    }
}

/// At the end of a run: withdraw a step's (or item's) open request, cancel its attempt in
/// flight, and cancel it if it had not finished.
fn cancel_open(s: &mut StepState, now: u64, actions: &mut Vec<Action>) {
    if let StepStatus::WaitingHuman { request } = &s.status {
        actions.push(Action::WithdrawHuman { request: request.clone() });
    }
    if let StepStatus::Queued { attempt, .. } = s.status {
        if let Some(a) = s.attempts.iter_mut().find(|a| a.attempt == attempt) {
            a.status = AttemptStatus::Cancelled;
            a.finished_at = Some(now);
        }
    }
    if !s.status.is_terminal() {
        s.status = StepStatus::Cancelled;
        s.finished_at.get_or_insert(now);
        s.reserved = Money::ZERO;
    }
}
