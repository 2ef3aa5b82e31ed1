//! `RunActor`: one per live run. Owns the run's state, journals each event before performing
//! the actions `apply` returns, arms timers, reconciles with the store, and passivates
//! itself when the run only waits for a human, an event or a distant timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tollgate_engine::events::{EventName, waiters_key};
use tollgate_engine::expr::Scope;
use tollgate_engine::ids::{RequestId, RunId, StepId, WorkflowId};
use tollgate_engine::queue::StepJob;
use tollgate_engine::run::{self, Action, Decision, Event, RunState, Slot, StepStatus, Timer};
use tollgate_engine::spec::steps::EventStep;
use tollgate_engine::spec::{StepKind, ValidatedSpec};
use tollgate_engine::store::{
    AttemptAbandoned, AttemptClaim, ChainLink, HumanDecisionRecord, HumanRequestRecord, JournalHead, Lease,
    OutcomeResult, RunClosed, RunSummary, StepOutcome,
};

use crate::lease;
use crate::subworkflows;
use crate::supervisor::SupervisorMsg;
use crate::system::{Engine, RunUpdate, now_ms};

/// A live run stays in memory this long past its last activity when it only waits.
const PASSIVATE_IF_NEXT_TIMER_BEYOND: Duration = Duration::from_secs(5);
/// How long past an attempt's start-to-close timeout the run driver declares it timed out
/// itself, when its worker is alive but has recorded nothing (workers enforce the timeout and
/// record the failure; this only covers a worker that cannot).
const TIMEOUT_BACKSTOP_GRACE: Duration = Duration::from_secs(10);

pub struct RunActor;

pub struct RunArgs {
    pub engine: Arc<Engine>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub run: RunId,
    pub inbox: Inbox,
}

/// Finished attempts waiting for the run actor. A burst of outcomes (a wide fan-out) becomes
/// one journal append and one batch of dispatches instead of one of each per step.
#[derive(Clone, Default)]
pub struct Inbox(Arc<std::sync::Mutex<Vec<(StepId, u32, Option<Box<StepOutcome>>)>>>);

impl Inbox {
    /// Add a finished attempt; true if the inbox was empty (the caller then sends `Drain`).
    pub fn push(&self, step: StepId, attempt: u32, outcome: Option<Box<StepOutcome>>) -> bool {
        let mut items = self.0.lock().unwrap_or_else(|e| e.into_inner());
        items.push((step, attempt, outcome));
        items.len() == 1
    }

    fn take(&self) -> Vec<(StepId, u32, Option<Box<StepOutcome>>)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[derive(Debug)]
pub enum RunMsg {
    /// A worker recorded the outcome of an attempt (the outcome itself when the worker is in
    /// this process; otherwise the actor reads it from the store).
    StepFinished {
        step: StepId,
        attempt: u32,
        outcome: Option<Box<StepOutcome>>,
    },
    /// Outcomes are waiting in the run's [`Inbox`]: take them all, journal them in one append.
    Drain,
    TimerFired(Timer),
    /// A decision already recorded (first-writer-wins) in the store.
    HumanDecided {
        request: RequestId,
        decision: HumanDecisionRecord,
    },
    Cancel {
        by: String,
        reason: String,
    },
    /// A retry's backoff is over: enqueue the attempt now.
    Due {
        step: StepId,
        attempt: u32,
        input: serde_json::Value,
    },
    /// Events were published under a name the run waits for: look for a match.
    EventsArrived,
    /// A sub-workflow's run finished or asks for budget: read how the children stand.
    ChildChanged,
    /// Periodic: step timeouts, outcomes and decisions we were not told about, lease renewal.
    Reconcile,
    GetState(RpcReplyPort<RunState>),
    /// A message routed by the supervisor (counted, see `SupervisorMsg::Passivated`).
    Routed(Box<RunMsg>),
}

pub struct RunActorState {
    engine: Arc<Engine>,
    supervisor: ActorRef<SupervisorMsg>,
    spec: Arc<ValidatedSpec>,
    wf: WorkflowId,
    state: RunState,
    /// Where the journal ends (length and hash-chain link): the next append follows it.
    journal: JournalHead,
    timers: HashMap<Timer, JoinHandle<()>>,
    /// Dispatches held back by the in-flight cap, in order, with the slot each is for.
    held: std::collections::VecDeque<(Slot, Held)>,
    ticker: Option<JoinHandle<()>>,
    inbox: Inbox,
    /// Routed messages processed.
    routed: u64,
    /// The run's lease: renewed on every reconcile tick, carried by every journal append.
    lease: Lease,
    /// Events a wait found on the bus while its actions were performed, to journal next.
    found: Vec<Event>,
    /// The run's metadata (owner, starter: what its sub-workflows inherit).
    meta: tollgate_engine::store::RunMeta,
    /// The `waiting` flag of the summary this actor last recorded (`None`: none yet).
    summary_waiting: Option<bool>,
    /// Whether any step of the workflow waits for an event.
    event_waits: bool,
    /// Each step's status as watchers were last told (see `publish_changes`).
    labels: Vec<&'static str>,
    /// The journal length the run was last closed with (a finished run that waits for its
    /// cancelled children's spend is closed again once that is journaled).
    closed_at: Option<u64>,
}

#[ractor::async_trait]
impl Actor for RunActor {
    type Msg = RunMsg;
    type State = RunActorState;
    type Arguments = RunArgs;

    async fn pre_start(&self, myself: ActorRef<RunMsg>, args: RunArgs) -> Result<RunActorState, ActorProcessingErr> {
        let engine = args.engine;
        let lease = match lease::acquire(engine.store.backend().as_ref(), &engine.liveness, &args.run, engine.lease_ttl)
            .await?
        {
            Ok(lease) => lease,
            Err(held) => return Err(format!("run {} is driven by another process ({})", args.run, held.holder).into()),
        };
        let meta = engine.store.run_meta(&args.run).await?;
        let spec = engine.spec(&meta.workflow, &meta.spec_digest).await?;
        let (journal, chained) = engine.store.read_chained_journal(&meta.workflow, &args.run).await?;
        let head = JournalHead {
            len: journal.len() as u64,
            link: chained.last().map_or_else(|| ChainLink::genesis(&args.run), |e| e.link),
        };
        let state = run::replay(&spec, args.run.clone(), &journal);
        let labels = state.steps.iter().map(|s| s.status.label()).collect();
        let event_waits =
            spec.spec().steps.iter().any(|s| matches!(&s.kind, StepKind::Event(EventStep { wait: Some(_), .. })));
        let mut st = RunActorState {
            engine: engine.clone(),
            supervisor: args.supervisor,
            spec,
            wf: meta.workflow.clone(),
            state,
            journal: head,
            timers: HashMap::new(),
            held: Default::default(),
            ticker: None,
            inbox: args.inbox,
            routed: 0,
            lease,
            found: Vec::new(),
            meta: meta.clone(),
            summary_waiting: None,
            event_waits,
            labels,
            closed_at: None,
        };
        if journal.is_empty() {
            // The `llm` steps' prices are quoted now and journaled: replay reserves the same.
            let quotes = engine.models.quotes(&st.spec);
            let event =
                Event::RunStarted { at: now_ms(), params: meta.params.clone(), quotes, parent: meta.parent.clone() };
            process(&myself, &mut st, vec![event]).await?;
            save_summary(&mut st).await?;
        } else {
            // Recovery: first settle what happened to the attempts in flight (finished, started
            // by a process that died, fenced), then redo what the journal says is outstanding.
            // Re-enqueueing an attempt is safe: only one delivery can claim it.
            let queued: Vec<Slot> = queued_steps(&st.state).collect();
            let events = check_attempts(&mut st, &queued, now_ms()).await?;
            if !events.is_empty() {
                process(&myself, &mut st, events).await?;
            }
            let actions = run::outstanding(&st.spec, &st.state);
            perform(&myself, &mut st, actions).await?;
            let found = std::mem::take(&mut st.found);
            if !found.is_empty() {
                process(&myself, &mut st, found).await?;
            }
            // Woken from passivation: listings say running again (or finished, written below).
            if !st.state.status.is_finished() {
                save_summary(&mut st).await?;
            }
        }
        if !st.state.status.is_finished() {
            if let Some(c) = engine.store.cancel_request(&st.wf, &st.state.run).await? {
                myself.send_message(RunMsg::Cancel { by: c.by, reason: c.reason })?;
            } else if let Some(p) = &st.state.parent {
                // A sub-workflow whose parent ended meanwhile (its cancellation was lost to a crash).
                if let Some(closed) = engine.store.run_closed(&p.workflow, &p.run).await? {
                    let reason = format!("the parent run ended ({})", closed.status);
                    myself.send_message(RunMsg::Cancel { by: format!("run {}", p.run), reason })?;
                }
            }
        }
        // A first reconcile once the messages above are handled: it also stops an actor whose
        // run is finished or only waiting.
        myself.send_message(RunMsg::Reconcile)?;
        let interval = engine.reconcile_interval;
        st.ticker = Some(tokio::spawn({
            let me = myself.clone();
            async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if me.send_message(RunMsg::Reconcile).is_err() {
                        break;
                    }
                }
            }
        }));
        Ok(st)
    }

    async fn post_stop(&self, _myself: ActorRef<RunMsg>, st: &mut RunActorState) -> Result<(), ActorProcessingErr> {
        for (_, t) in st.timers.drain() {
            t.abort();
        }
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        let _ = lease::release(st.engine.store.backend().as_ref(), &st.lease).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RunMsg>,
        msg: RunMsg,
        st: &mut RunActorState,
    ) -> Result<(), ActorProcessingErr> {
        let msg = match msg {
            RunMsg::Routed(inner) => {
                st.routed += 1;
                *inner
            }
            msg => msg,
        };
        match msg {
            RunMsg::Routed(_) => {}
            RunMsg::StepFinished { step, attempt, outcome } => {
                if let Some(event) = outcome_event(st, &step, attempt, outcome).await? {
                    process(&myself, st, vec![event]).await?;
                }
            }
            RunMsg::Drain => {
                let mut events = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for (step, attempt, outcome) in st.inbox.take() {
                    if seen.insert(step.clone()) {
                        events.extend(outcome_event(st, &step, attempt, outcome).await?);
                    }
                }
                if !events.is_empty() {
                    process(&myself, st, events).await?;
                }
            }
            RunMsg::TimerFired(timer) => {
                st.timers.remove(&timer);
                process(&myself, st, vec![Event::TimerFired { timer, at: now_ms() }]).await?;
            }
            RunMsg::HumanDecided { request, decision } => {
                if is_open_request(&st.state, &request) {
                    // A decision on an output the gate mesh blocked: release the held output
                    // on approval; in every case the held copy is discarded afterwards.
                    let held = st.state.slots().find_map(|(slot, s)| match &s.status {
                        StepStatus::WaitingHuman { request: r } if *r == request && s.blocked.is_some() => {
                            Some((slot.id(&st.spec), s.attempts.len() as u32))
                        }
                        _ => None,
                    });
                    let released = match (&held, &decision.decision) {
                        (Some((step, attempt)), Decision::Approve) => {
                            st.engine.store.quarantined(&st.wf, &st.state.run, step, *attempt).await?
                        }
                        _ => None,
                    };
                    let event = Event::HumanDecided {
                        request,
                        decision: decision.decision,
                        by: decision.by,
                        comment: decision.comment,
                        released,
                        by_policy: decision.by_policy,
                        at: now_ms().max(decision.at),
                    };
                    process(&myself, st, vec![event]).await?;
                    if let Some((step, attempt)) = held {
                        st.engine.store.discard_quarantined(&st.state.run, &step, attempt).await?;
                    }
                }
            }
            RunMsg::Cancel { by, reason } => {
                // Asked for more than once (routed, and seen in the store): journal it once.
                if !st.state.status.is_finished() {
                    process(&myself, st, vec![Event::Cancelled { by, reason, at: now_ms() }]).await?;
                }
            }
            RunMsg::Due { step, attempt, input } => {
                let still_due = Slot::of(&st.spec, &step).is_some_and(|slot| st.state.is_queued(slot, attempt));
                if still_due {
                    enqueue(st, vec![(step, attempt, input)]).await?;
                }
            }
            RunMsg::EventsArrived => {
                let mut found = Vec::new();
                for i in 0..st.state.steps.len() {
                    found.extend(find_event(st, i).await?);
                }
                if !found.is_empty() {
                    process(&myself, st, found).await?;
                }
            }
            RunMsg::ChildChanged => {
                let found = children_events(st).await?;
                if !found.is_empty() {
                    process(&myself, st, found).await?;
                }
            }
            RunMsg::Reconcile => reconcile(&myself, st).await?,
            RunMsg::GetState(reply) => {
                let _ = reply.send(st.state.clone());
            }
        }
        Ok(())
    }
}

fn is_open_request(state: &RunState, request: &RequestId) -> bool {
    state.budget_request.as_ref() == Some(request)
        || state.slots().any(|(_, s)| matches!(&s.status, StepStatus::WaitingHuman { request: r } if r == request))
}

/// The event for a recorded outcome, if the attempt is still in flight for this run. An
/// outcome handed over in-process was recorded before it was sent; otherwise read it.
async fn outcome_event(
    st: &RunActorState,
    step: &StepId,
    attempt: u32,
    given: Option<Box<StepOutcome>>,
) -> Result<Option<Event>, ActorProcessingErr> {
    let Some(slot) = Slot::of(&st.spec, step) else { return Ok(None) };
    if !st.state.wants_outcome(slot, attempt) {
        return Ok(None);
    }
    let outcome = match given.filter(|o| o.step == *step && o.attempt == attempt) {
        Some(o) => *o,
        None => match st.engine.store.step_outcome(&st.wf, &st.state.run, step, attempt).await? {
            Some(o) => o,
            None => return Ok(None),
        },
    };
    Ok(Some(outcome_to_event(outcome)))
}

fn outcome_to_event(o: StepOutcome) -> Event {
    match o.result {
        OutcomeResult::Succeeded { output, cost, gate } => Event::StepSucceeded {
            step: o.step,
            attempt: o.attempt,
            at: o.finished_at,
            started_at: o.started_at,
            output,
            cost,
            gate,
        },
        OutcomeResult::Failed { error, gate } => Event::StepFailed {
            step: o.step,
            attempt: o.attempt,
            at: o.finished_at,
            started_at: Some(o.started_at),
            error,
            gate,
        },
        OutcomeResult::PromptHeld { hold } => {
            Event::PromptHeld { step: o.step, attempt: o.attempt, at: o.finished_at, started_at: o.started_at, hold }
        }
        OutcomeResult::AwaitingAuthorisation { ask, cost } => Event::ToolAuthorisationAsked {
            step: o.step,
            attempt: o.attempt,
            at: o.finished_at,
            started_at: o.started_at,
            ask,
            cost,
        },
        OutcomeResult::Blocked { redacted, cost, gate } => Event::StepBlocked {
            step: o.step,
            attempt: o.attempt,
            at: o.finished_at,
            started_at: o.started_at,
            redacted,
            cost,
            gate,
        },
    }
}

/// Journal `events`, then perform what they call for; then finish or passivate.
///
/// `apply` runs first, in memory, so that the inputs of the attempts the events dispatch can
/// be written in the same durable write as the events. Nothing outside the actor sees the
/// new state before that write: if it fails, the actor fails and is rehydrated from the
/// journal, which does not hold the events.
async fn process(
    myself: &ActorRef<RunMsg>,
    st: &mut RunActorState,
    mut events: Vec<Event>,
) -> Result<(), ActorProcessingErr> {
    // A wait that starts may find its event on the bus at once: journal that too, before
    // deciding whether to passivate.
    while !events.is_empty() {
        let mut actions = Vec::new();
        for event in &events {
            actions.extend(run::apply(&st.spec, &mut st.state, event));
        }
        let plan = plan(st, actions);
        let inputs: Vec<(StepId, u32, &serde_json::Value)> =
            plan.ready.iter().map(|(s, a, i)| (s.clone(), *a, i)).collect();
        // Fenced: refused if another process took the run over (the actor then fails, and its
        // successor here finds the lease held and stops).
        st.journal =
            st.engine.store.append_events(&st.wf, &st.state.run, &st.journal, &events, &inputs, &st.lease).await?;
        // Durable now: perform. Watchers hear of a dispatch once its job is in the queue.
        enqueue_recorded(st, plan.ready).await?;
        let changed = publish_changes(st);
        publish_notifications(st, &events);
        forget_finished_waits(st, &changed).await?;
        for (ready, at) in plan.deferred {
            defer(myself, ready, at);
        }
        perform(myself, st, plan.other).await?;
        events = std::mem::take(&mut st.found);
    }
    after_change(myself, st).await
}

/// Register the run as waiting for events named `name`, then look on the bus for one that is
/// already there (from the wait's lookback on). In that order, an event is either found here
/// or routed to the run by the dispatcher afterwards.
async fn await_event(st: &mut RunActorState, step: &StepId, name: &str) -> Result<(), ActorProcessingErr> {
    let Some(bus) = st.engine.events.clone() else {
        return Err(format!("run {} waits for an event but this process has no event bus", st.state.run).into());
    };
    st.engine
        .store
        .backend()
        .index_add(
            &waiters_key(&bus.name_id(EventName::new(st.spec.spec().owner.as_str(), name))),
            st.state.run.as_str(),
        )
        .await?;
    if let Some((i, _)) = st.spec.step_by_id(step) {
        st.found.extend(find_event(st, i).await?);
    }
    Ok(())
}

/// Events a wait looks through at most in one look.
const EVENT_SCAN_LIMIT: usize = 10_000;

/// The first event on the bus that step `i`'s wait is for, if the step waits.
async fn find_event(st: &RunActorState, i: usize) -> Result<Option<Event>, ActorProcessingErr> {
    let StepStatus::WaitingEvent { from, .. } = st.state.steps[i].status else { return Ok(None) };
    let StepKind::Event(EventStep { wait: Some(wait), .. }) = &st.spec.step(i).kind else { return Ok(None) };
    let Some(bus) = &st.engine.events else { return Ok(None) };
    let scope = Scope { params: &st.state.params, steps: &st.state.scope };
    for event in
        bus.read_since(EventName::new(st.spec.spec().owner.as_str(), &wait.name), from, EVENT_SCAN_LIMIT).await?
    {
        let received = event.to_value();
        match wait.matches(&received, &scope) {
            Ok(true) => {
                return Ok(Some(Event::EventReceived { step: st.spec.step(i).id.clone(), received, at: now_ms() }));
            }
            Ok(false) => {}
            // An event of the name with another shape (a missing field): not this wait's.
            Err(e) => {
                tracing::debug!(run = %st.state.run, step = %st.spec.step(i).id, "event {} does not correlate: {e}", event.id)
            }
        }
    }
    Ok(None)
}

/// Steps that stopped waiting for an event: the run no longer needs to hear of their name
/// (unless another step still waits for it).
async fn forget_finished_waits(
    st: &RunActorState,
    changed: &[(usize, &'static str)],
) -> Result<(), ActorProcessingErr> {
    let Some(bus) = st.engine.events.as_ref().filter(|_| st.event_waits) else { return Ok(()) };
    let wait_name = |i: usize| match &st.spec.step(i).kind {
        StepKind::Event(EventStep { wait: Some(w), .. }) => Some(w.name.as_str()),
        _ => None,
    };
    let stopped: Vec<usize> = changed
        .iter()
        .filter(|&&(i, before)| {
            before == "waiting_event" && !matches!(st.state.steps[i].status, StepStatus::WaitingEvent { .. })
        })
        .map(|&(i, _)| i)
        .collect();
    if stopped.is_empty() {
        return Ok(());
    }
    let still: Vec<&str> = (0..st.state.steps.len())
        .filter(|&i| matches!(st.state.steps[i].status, StepStatus::WaitingEvent { .. }))
        .filter_map(wait_name)
        .collect();
    for i in stopped {
        if let Some(name) = wait_name(i).filter(|n| !still.contains(n)) {
            st.engine
                .store
                .backend()
                .index_remove(
                    &waiters_key(&bus.name_id(EventName::new(st.spec.spec().owner.as_str(), name))),
                    st.state.run.as_str(),
                )
                .await?;
        }
    }
    Ok(())
}

/// What a batch of actions means for dispatching: attempts to enqueue now, attempts waiting
/// out a backoff, and everything else.
struct Plan {
    ready: Vec<Ready>,
    deferred: Vec<(Ready, u64)>,
    other: Vec<Action>,
}

/// Sort actions without performing any: dispatches beyond the in-flight cap are held (and
/// held ones released as capacity allows).
///
/// The number in flight is derived from the state every time (attempts the run waits for,
/// minus those still held), so no path — timeouts, retries, interruptions, late results —
/// can make it drift.
fn plan(st: &mut RunActorState, actions: Vec<Action>) -> Plan {
    let mut p = Plan { ready: Vec::new(), deferred: Vec::new(), other: Vec::new() };
    for action in actions {
        match action {
            Action::Dispatch { step, attempt, not_before, input } => match Slot::of(&st.spec, &step) {
                Some(slot) => st.held.push_back((slot, Held { step, attempt, not_before, input })),
                None => tracing::error!(run = %st.state.run, %step, "a dispatch names no step of the workflow"),
            },
            other => p.other.push(other),
        }
    }
    // A held attempt the run has moved past (its step timed out in the queue, or ended).
    let state = &st.state;
    st.held.retain(|(slot, h)| state.is_queued(*slot, h.attempt));
    let mut in_flight = queued_steps(&st.state).count().saturating_sub(st.held.len());
    while in_flight < st.engine.max_in_flight_per_run {
        let Some((_, Held { step, attempt, not_before, input })) = st.held.pop_front() else { break };
        in_flight += 1;
        match not_before.filter(|&t| t > now_ms()) {
            Some(at) => p.deferred.push(((step, attempt, input), at)),
            None => p.ready.push((step, attempt, input)),
        }
    }
    p
}

/// A dispatch held back by the in-flight cap.
struct Held {
    step: StepId,
    attempt: u32,
    not_before: Option<u64>,
    input: serde_json::Value,
}

/// Tell watchers of every step whose status changed since they were last told (one pass over
/// the steps against the statuses kept from the last batch); returns those steps with the
/// status each had before.
fn publish_changes(st: &mut RunActorState) -> Vec<(usize, &'static str)> {
    let mut changed = Vec::new();
    for ((i, s), told) in st.state.steps.iter().enumerate().zip(st.labels.iter_mut()) {
        let now = s.status.label();
        if now != *told {
            changed.push((i, *told));
            *told = now;
            st.engine.publish(RunUpdate::Step {
                run: st.state.run.clone(),
                step: st.spec.step(i).id.clone(),
                status: now,
                attempt: s.attempts.len() as u32,
            });
        }
    }
    changed
}

/// Tell live consoles of the notifications `notify` steps just recorded (ids only).
fn publish_notifications(st: &RunActorState, events: &[Event]) {
    for e in events {
        if let Event::StepSucceeded { output, .. } = e {
            if output["kind"] == tollgate_connectors::steps::platform::NOTIFY_OUTPUT_KIND {
                if let (Some(id), Some(to)) = (output["notification"].as_str(), output["recipients"].as_array()) {
                    let recipients = to.iter().filter_map(|r| r.as_str().map(String::from)).collect();
                    st.engine.publish(RunUpdate::Notified {
                        run: st.state.run.clone(),
                        notification: id.to_string(),
                        recipients,
                    });
                }
            }
        }
    }
}

/// Perform actions other than dispatches (see [`plan`]); recovery also sends dispatches here.
async fn perform(
    myself: &ActorRef<RunMsg>,
    st: &mut RunActorState,
    actions: Vec<Action>,
) -> Result<(), ActorProcessingErr> {
    let mut dispatches = Vec::new();
    for action in actions {
        match action {
            Action::Dispatch { .. } => dispatches.push(action),
            Action::ArmTimer { timer, at } => arm(myself, st, timer, at),
            Action::RequestHuman(request) => {
                let record = HumanRequestRecord {
                    workflow: st.wf.clone(),
                    run: st.state.run.clone(),
                    request: request.clone(),
                    created_at: now_ms(),
                    escalated_to: Vec::new(),
                };
                st.engine.store.put_human_request(&record).await?;
                // A decision may already be recorded (by another process, or before a crash).
                if let Some(d) = st.engine.store.human_decision(&st.wf, &request.id).await? {
                    myself.send_message(RunMsg::HumanDecided { request: request.id.clone(), decision: d })?;
                }
                st.engine.publish(RunUpdate::HumanRequested { run: st.state.run.clone(), request });
            }
            Action::WithdrawHuman { request } => st.engine.store.withdraw_human_request(&request).await?,
            Action::PageHuman { request, to, .. } => {
                st.engine.store.add_request_assignee(&st.wf, &request, &to).await?;
                st.engine.publish(RunUpdate::HumanPaged { run: st.state.run.clone(), request, to });
            }
            Action::DecideByPolicy { request, decision, reason } => {
                let d = HumanDecisionRecord {
                    decision,
                    by: POLICY.into(),
                    comment: Some(reason),
                    by_policy: true,
                    at: now_ms(),
                };
                if st.engine.store.decide(&st.wf, &request, &d).await? {
                    st.engine.publish(RunUpdate::Decided {
                        run: st.state.run.clone(),
                        request: request.clone(),
                        by: d.by.clone(),
                        by_policy: true,
                    });
                }
                // Whichever decision won (a person's, at the same moment, or the policy's).
                if let Some(d) = st.engine.store.human_decision(&st.wf, &request).await? {
                    myself.send_message(RunMsg::HumanDecided { request, decision: d })?;
                }
            }
            Action::AwaitEvent { step, name, .. } => await_event(st, &step, &name).await?,
            Action::StartChild { step, child, workflow, params, parent } => {
                let found = subworkflows::start_child(
                    &st.engine,
                    &st.supervisor,
                    &st.meta,
                    &step,
                    &child,
                    &workflow,
                    &params,
                    parent,
                )
                .await?;
                let found = news(st, found);
                st.found.extend(found);
            }
            Action::CancelChild { child, reason } => {
                subworkflows::cancel_child(&st.engine, &st.supervisor, &st.state.run, &child, &reason).await?
            }
            Action::GrantChild { child, request, amount } => {
                subworkflows::grant_child(&st.engine, &st.supervisor, &st.state.run, &child, &request, amount).await?
            }
            Action::AskParent { .. } => {
                if let Some(p) = &st.state.parent {
                    subworkflows::tell_parent(&st.engine, &st.supervisor, p).await?;
                }
            }
            // Journaled with the next batch (`process` loops over what was found).
            Action::ResolveItems { step, items } => {
                st.found.push(Event::ItemsResolved { step, items, limit: st.engine.for_each_max_items, at: now_ms() })
            }
            Action::Finish => {}
        }
    }
    if !dispatches.is_empty() {
        let plan = plan(st, dispatches);
        enqueue(st, plan.ready).await?;
        for (ready, at) in plan.deferred {
            defer(myself, ready, at);
        }
    }
    Ok(())
}

type Ready = (StepId, u32, serde_json::Value);

/// Enqueue an attempt once its backoff is over. The actor holds back-off itself rather than
/// using the queue's scheduling, which apalis keeps in whole seconds; the journal already says
/// the attempt is queued, so a crash during the wait re-dispatches it on recovery.
fn defer(myself: &ActorRef<RunMsg>, (step, attempt, input): Ready, at: u64) {
    let me = myself.clone();
    let delay = Duration::from_millis(at.saturating_sub(now_ms()));
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = me.send_message(RunMsg::Due { step, attempt, input });
    });
}

/// Record the attempts' inputs (one write), then enqueue their jobs.
async fn enqueue(st: &mut RunActorState, ready: Vec<Ready>) -> Result<(), ActorProcessingErr> {
    if ready.is_empty() {
        return Ok(());
    }
    let inputs: Vec<(StepId, u32, &serde_json::Value)> = ready.iter().map(|(s, a, i)| (s.clone(), *a, i)).collect();
    st.engine.store.put_step_inputs(&st.wf, &st.state.run, &inputs).await?;
    enqueue_recorded(st, ready).await
}

/// Enqueue jobs (ids only) for attempts whose inputs are recorded.
async fn enqueue_recorded(st: &mut RunActorState, ready: Vec<Ready>) -> Result<(), ActorProcessingErr> {
    if ready.is_empty() {
        return Ok(());
    }
    let jobs = ready
        .into_iter()
        .map(|(step, attempt, _)| StepJob { workflow: st.wf.clone(), run: st.state.run.clone(), step, attempt })
        .collect();
    st.engine.queue.enqueue_many(jobs).await?;
    Ok(())
}

fn arm(myself: &ActorRef<RunMsg>, st: &mut RunActorState, timer: Timer, at: u64) {
    let delay = Duration::from_millis(at.saturating_sub(now_ms()));
    let me = myself.clone();
    let t = timer.clone();
    let handle = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = me.send_message(RunMsg::TimerFired(t));
    });
    if let Some(old) = st.timers.insert(timer, handle) {
        old.abort();
    }
}

/// Who an escalation's `default` is recorded as deciding (not a valid user name, so no person
/// can be confused with it).
pub const POLICY: &str = "escalation policy";

/// Finished: tell the store and the supervisor, stop — once what the sub-workflows it cancelled
/// spent is journaled (until then it stays, closed to its attempts, and reads its children on
/// every reconcile tick). Only waiting: passivate.
async fn after_change(myself: &ActorRef<RunMsg>, st: &mut RunActorState) -> Result<(), ActorProcessingErr> {
    if st.state.status.is_finished() {
        if st.closed_at != Some(st.journal.len) {
            // Workers start none of its attempts any more and abandon the ones they run.
            let closed = RunClosed {
                status: st.state.status.label().to_string(),
                at: now_ms(),
                journal: Some((st.journal.len, st.journal.link.to_hex())),
                settling: !st.state.unsettled.is_empty(),
            };
            st.engine.store.close_run(&st.wf, &st.state.run, &closed).await?;
            save_summary(st).await?;
            st.engine.publish(RunUpdate::Finished { run: st.state.run.clone(), status: st.state.status.clone() });
            st.closed_at = Some(st.journal.len);
        }
        if !st.state.unsettled.is_empty() {
            return Ok(());
        }
        st.engine.store.mark_run_finished(&st.state.run).await?;
        if let Some(p) = &st.state.parent {
            subworkflows::tell_parent(&st.engine, &st.supervisor, p).await?;
        }
        myself.stop(Some("finished".into()));
        return Ok(());
    }
    if st.state.is_waiting() && st.held.is_empty() {
        // Listings and waiters see the run as waiting without reading its journal, also while
        // it stays in memory for a near timer.
        if st.summary_waiting != Some(true) {
            save_summary(st).await?;
        }
        let next_timer = next_timer_at(&st.spec, &st.state);
        let far = next_timer.is_none_or(|at| at > now_ms() + PASSIVATE_IF_NEXT_TIMER_BEYOND.as_millis() as u64);
        if far && !has_pending_input(st).await? {
            let _ = st.supervisor.send_message(SupervisorMsg::Passivated {
                run: st.state.run.clone(),
                wake_at: next_timer,
                routed: st.routed,
            });
            myself.stop(Some("passivated".into()));
        }
    } else if st.summary_waiting == Some(true) {
        // At work again (a decision, an event, a timer): no longer listed as waiting.
        save_summary(st).await?;
    }
    Ok(())
}

/// Record the run's summary (what listings show, and what `wait_settled` looks at before it
/// reads a journal): written when the run starts, starts or stops waiting, and finishes.
async fn save_summary(st: &mut RunActorState) -> Result<(), ActorProcessingErr> {
    let summary = RunSummary::of(&st.state);
    st.engine.store.put_run_summary(&st.wf, &st.state.run, &summary).await?;
    st.summary_waiting = Some(summary.waiting);
    Ok(())
}

/// Whether the store holds a decision or a cancellation the run has not applied yet. Such a
/// run must not passivate: the message that applies it may be waiting in the mailbox, and
/// stopping would drop it.
async fn has_pending_input(st: &RunActorState) -> Result<bool, ActorProcessingErr> {
    let open = st.state.slots().filter_map(|(_, s)| match &s.status {
        StepStatus::WaitingHuman { request } => Some(request),
        _ => None,
    });
    for request in open.chain(st.state.budget_request.as_ref()) {
        if st.engine.store.human_decision(&st.wf, request).await?.is_some() {
            return Ok(true);
        }
    }
    // A sub-workflow that finished or asks for budget since the run last looked.
    if !children_events(st).await?.is_empty() {
        return Ok(true);
    }
    Ok(st.engine.store.cancel_request(&st.wf, &st.state.run).await?.is_some())
}

/// The earliest durable timer of a waiting run (delays, event waits, run timeout).
fn next_timer_at(spec: &ValidatedSpec, state: &RunState) -> Option<u64> {
    let delays = state.steps.iter().filter_map(|s| match s.status {
        StepStatus::Delaying { until } | StepStatus::WaitingEvent { until, .. } => Some(until),
        _ => None,
    });
    let run_timeout = spec.spec().timeout.map(|t| state.started_at + t.as_millis() as u64);
    let escalations = tollgate_engine::run::escalation_timers(spec, state).map(|(_, at)| at);
    delays.chain(run_timeout).chain(escalations).min()
}

/// Steps and `for_each` items whose current attempt is in flight (enqueued, held, backing
/// off or running).
fn queued_steps(state: &RunState) -> impl Iterator<Item = Slot> + '_ {
    state.slots().filter(|(_, s)| matches!(s.status, StepStatus::Queued { .. })).map(|(slot, _)| slot)
}

/// What became of the current attempts of steps `due`, read from their claims and outcomes
/// in one batch: finished (its outcome), started by a process that has died (interrupted),
/// started and long past its start-to-close timeout (the backstop), or never started and past
/// its queue deadline — then fenced here, first writer wins against any worker, so it can
/// never start afterwards.
async fn check_attempts(st: &mut RunActorState, due: &[Slot], now: u64) -> Result<Vec<Event>, ActorProcessingErr> {
    let current: Vec<(usize, StepId, u32, Option<u64>)> = due
        .iter()
        .filter_map(|&slot| match st.state.slot(slot)?.status {
            StepStatus::Queued { attempt, queue_deadline, .. } => {
                Some((slot.step, slot.id(&st.spec), attempt, queue_deadline))
            }
            _ => None,
        })
        .collect();
    if current.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<(StepId, u32)> = current.iter().map(|(_, step, attempt, _)| (step.clone(), *attempt)).collect();
    let found = st.engine.store.attempt_states(&st.wf, &st.state.run, &keys).await?;
    let mut events = Vec::new();
    for ((i, step, attempt, deadline), (claim, outcome)) in current.into_iter().zip(found) {
        if let Some(o) = outcome {
            events.push(outcome_to_event(o));
            continue;
        }
        match claim {
            // Giving up on a claimed attempt, the driver first tells its worker to stop, in case
            // that worker is only paused: it must not run on beside the next attempt.
            Some(AttemptClaim::Started { worker, at, .. }) => {
                if !st.engine.liveness.is_alive(&worker).await? {
                    let why =
                        AttemptAbandoned { reason: format!("interrupted: its process {worker} looked dead"), at: now };
                    st.engine.store.abandon_attempt(&st.wf, &st.state.run, &step, attempt, &why).await?;
                    events.push(Event::AttemptInterrupted { step, attempt, at: now, started_at: at, worker });
                } else if at
                    + run::apply::step_timeout(&st.spec, i).as_millis() as u64
                    + TIMEOUT_BACKSTOP_GRACE.as_millis() as u64
                    <= now
                {
                    let why = AttemptAbandoned { reason: "timed out without a result".into(), at: now };
                    st.engine.store.abandon_attempt(&st.wf, &st.state.run, &step, attempt, &why).await?;
                    events.push(Event::TimerFired { timer: Timer::StepTimeout { step, attempt }, at: now });
                }
            }
            Some(AttemptClaim::Fenced { .. }) => {
                events.push(Event::TimerFired { timer: Timer::QueueTimeout { step, attempt }, at: now })
            }
            None if deadline.is_some_and(|d| d <= now) => {
                let fence = AttemptClaim::Fenced { at: now, reason: "queue_timeout".into() };
                // Lost: a worker started it just now, and its start-to-close clock runs.
                if st.engine.store.claim_attempt(&st.wf, &st.state.run, &step, attempt, &fence).await?.is_none() {
                    events.push(Event::TimerFired { timer: Timer::QueueTimeout { step, attempt }, at: now });
                }
            }
            None => {}
        }
    }
    Ok(events)
}

async fn reconcile(myself: &ActorRef<RunMsg>, st: &mut RunActorState) -> Result<(), ActorProcessingErr> {
    let now = now_ms();
    // Fails (StoreError::Fenced) once another process holds the lease: stop driving the run.
    lease::renew(st.engine.store.backend().as_ref(), &st.lease, st.engine.lease_ttl).await?;
    if st.state.status.is_finished() {
        // Only the spend of the children it cancelled is left to journal.
        let events = children_events(st).await?;
        return if events.is_empty() { after_change(myself, st).await } else { process(myself, st, events).await };
    }
    // Attempts in flight for a while (a notification may have been lost, their worker may
    // have died) or past their queue deadline.
    let stale_after = st.engine.reconcile_interval.as_millis() as u64 * 2;
    let due: Vec<Slot> = queued_steps(&st.state)
        .filter(|&slot| {
            let Some(s) = st.state.slot(slot) else { return false };
            let dispatched = s.attempts.last().map_or(0, |a| a.dispatched_at);
            let past_deadline = matches!(s.status, StepStatus::Queued { queue_deadline: Some(d), .. } if d <= now);
            past_deadline || now.saturating_sub(dispatched) >= stale_after
        })
        .collect();
    let events = check_attempts(st, &due, now).await?;
    for (_, s) in st.state.slots() {
        if let StepStatus::WaitingHuman { request } = &s.status {
            if let Some(d) = st.engine.store.human_decision(&st.wf, request).await? {
                myself.send_message(RunMsg::HumanDecided { request: request.clone(), decision: d })?;
            }
        }
    }
    if let Some(request) = &st.state.budget_request {
        if let Some(d) = st.engine.store.human_decision(&st.wf, request).await? {
            myself.send_message(RunMsg::HumanDecided { request: request.clone(), decision: d })?;
        }
    }
    // A cancellation asked for by another process.
    if let Some(c) = st.engine.store.cancel_request(&st.wf, &st.state.run).await? {
        myself.send_message(RunMsg::Cancel { by: c.by, reason: c.reason })?;
    }
    let mut events = events;
    events.extend(children_events(st).await?);
    if events.is_empty() { after_change(myself, st).await } else { process(myself, st, events).await }
}

/// A child's event, unless the run knows it already: a budget ask it has asked a person about,
/// or that waits behind another request, is found again on every look until it is answered.
fn news(st: &RunActorState, event: Option<Event>) -> Option<Event> {
    match event {
        Some(Event::ChildBudgetAsked { request, .. })
            if st.state.child_ask.iter().chain(&st.state.queued_asks).any(|a| a.request == request) =>
        {
            None
        }
        other => other,
    }
}

/// How the run's sub-workflows stand, for the steps waiting on them (see `subworkflows`) — and,
/// once the run has ended, the end of each child it cancelled and has not settled yet.
async fn children_events(st: &RunActorState) -> Result<Vec<Event>, ActorProcessingErr> {
    let mut out = Vec::new();
    for (i, s) in st.state.steps.iter().enumerate() {
        if let StepStatus::WaitingChild { run } = &s.status {
            out.extend(news(st, subworkflows::child_event(&st.engine, &st.spec.step(i).id, run).await?));
        }
    }
    for &i in &st.state.unsettled {
        if let Some(child) = &st.state.steps[i].child {
            out.extend(subworkflows::cancelled_child_end(&st.engine, &st.spec.step(i).id, child).await?);
        }
    }
    Ok(out)
}
