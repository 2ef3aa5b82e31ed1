//! `RunSupervisor`: spawns, routes to, restarts and wakes run actors.
//!
//! Starting a run actor is slow — its `pre_start` takes the lease and reads the run's journal —
//! so it never runs inside the supervisor's message loop: actors are spawned with
//! `spawn_linked_instant`, which hands back the actor's reference at once while `pre_start` runs
//! in the background. Messages routed meanwhile wait in the new actor's mailbox (counted like
//! any other, see [`SupervisorMsg::Passivated`]); a task reports the startup's result back as
//! [`SupervisorMsg::Started`]. So recovering 10,000 runs after a restart never holds up a new
//! start or a decision, and recoveries go [`RECOVERY_CONCURRENCY`] at a time so that they do not
//! swamp the store either.
//!
//! ractor 0.16 has no restart strategies, so the policy lives here: a run actor that fails, or
//! fails to start, because the store or the queue is unavailable is started again with capped
//! exponential backoff for as long as it takes — an outage of Redis must not leave runs without
//! a driver. Any other failure is retried `MAX_RESTARTS` times; after that the run stays active
//! in the store for the next process start to recover. Passivated runs with a durable timer
//! get a wake-up here instead of a live actor.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, ActorRuntime, RpcReplyPort, SpawnErr, SupervisionEvent};
use tokio::task::JoinHandle;
use tollgate_engine::ids::RunId;
use tollgate_engine::queue::QueueError;
use tollgate_engine::store::StoreError;

use crate::run_actor::{Inbox, RunActor, RunArgs, RunMsg};
use crate::system::{Engine, EngineError, now_ms};

/// Restarts of a run actor that failed for a reason other than an unavailable store or queue.
const MAX_RESTARTS: u32 = 3;
/// Backoff between restarts of one run's actor: doubles from the first, up to the last.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));
/// An actor that ran this long before failing starts its run's backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Recoveries ([`SupervisorMsg::Recover`]) starting at once.
pub(crate) const RECOVERY_CONCURRENCY: usize = 32;
/// The stop reason a run actor gives when it passivates; it sends
/// [`SupervisorMsg::Passivated`] just before it stops.
const PASSIVATED: &str = "passivated";

pub struct RunSupervisor;

pub enum SupervisorMsg {
    /// Make sure the run has a live actor (start, resume). The reply comes once the actor has
    /// started, or failed to.
    Ensure { run: RunId, reply: Option<RpcReplyPort<Result<(), String>>> },
    /// Start the run's actor when a recovery slot is free (after a process start); an
    /// `Ensure` or a routed message for the run starts it at once.
    Recover { run: RunId },
    /// Deliver a message to a run, rehydrating it if it is passivated.
    Route { run: RunId, msg: RunMsg },
    /// A run actor stopped itself because it only waits; wake it at `wake_at` if set.
    /// `routed` is how many routed messages it had processed: if fewer than were routed to it,
    /// some arrived after it decided to stop and a fresh actor takes over at once. The actor
    /// stops with the reason `"passivated"` right after sending this.
    Passivated { run: RunId, wake_at: Option<u64>, routed: u64 },
    /// The startup of the run actor `actor` finished (sent by the supervisor's own spawn task).
    Started { run: RunId, actor: ActorId, result: Result<(), StartError> },
    /// Number of live (or starting) run actors.
    LiveCount(RpcReplyPort<usize>),
}

/// Why a run actor did not start.
#[derive(Debug)]
pub struct StartError {
    message: String,
    /// The store or the queue was unavailable: worth trying again.
    transient: bool,
}

pub struct SupervisorState {
    engine: Arc<Engine>,
    live: HashMap<RunId, Live>,
    by_actor: HashMap<ActorId, RunId>,
    wakeups: HashMap<RunId, JoinHandle<()>>,
    /// Consecutive failures per run (reset by a clean stop or a long healthy run).
    failures: HashMap<RunId, u32>,
    /// Runs waiting for a recovery slot, and the recoveries starting now (by actor).
    recover_queue: VecDeque<RunId>,
    recovering: HashSet<ActorId>,
}

/// The runs this process drives — their actor has started, so it holds the run's lease —
/// readable outside the supervisor's message loop: a worker of this process whose run is
/// driven here needs to tell no other process of its outcomes.
#[derive(Clone, Debug, Default)]
pub struct LiveRuns(Arc<std::sync::RwLock<HashSet<RunId>>>);

impl LiveRuns {
    pub fn contains(&self, run: &RunId) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).contains(run)
    }

    fn insert(&self, run: RunId) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(run);
    }

    fn remove(&self, run: &RunId) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).remove(run);
    }
}

impl SupervisorState {
    /// Every live entry leaves through here, so [`LiveRuns`] never names a run without one.
    fn remove_live(&mut self, run: &RunId) -> Option<Live> {
        self.engine.live_runs.remove(run);
        self.live.remove(run)
    }
}

/// A live run actor as the supervisor knows it, from the moment it is spawned.
struct Live {
    actor: ActorRef<RunMsg>,
    inbox: Inbox,
    /// Messages routed to it so far (see `SupervisorMsg::Passivated`).
    routed: u64,
    /// `pre_start` has finished.
    started: bool,
    /// Callers of `Ensure` waiting for the startup's result.
    waiters: Vec<RpcReplyPort<Result<(), String>>>,
    since: Instant,
}

impl Live {
    /// The entry is going away: whoever waits for the startup learns its outcome.
    fn settle(self, result: Result<(), String>) {
        for w in self.waiters {
            let _ = w.send(result.clone());
        }
    }
}

#[ractor::async_trait]
impl Actor for RunSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Engine>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        engine: Arc<Engine>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            engine,
            live: HashMap::new(),
            by_actor: HashMap::new(),
            wakeups: HashMap::new(),
            failures: HashMap::new(),
            recover_queue: VecDeque::new(),
            recovering: HashSet::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for (_, w) in st.wakeups.drain() {
            w.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Ensure { run, reply } => match ensure_live(&myself, st, &run, false) {
                Ok(live) => match reply {
                    Some(reply) if live.started => {
                        let _ = reply.send(Ok(()));
                    }
                    Some(reply) => live.waiters.push(reply),
                    None => {}
                },
                Err(e) => match reply {
                    Some(reply) => {
                        let _ = reply.send(Err(e));
                    }
                    None => tracing::warn!(%run, "cannot start run actor: {e}"),
                },
            },
            SupervisorMsg::Recover { run } => {
                st.recover_queue.push_back(run);
                pump_recoveries(&myself, st);
            }
            SupervisorMsg::Route { run, msg } => route(&myself, st, run, msg),
            SupervisorMsg::Passivated { run, wake_at, routed } => passivated(&myself, st, run, wake_at, routed),
            SupervisorMsg::Started { run, actor, result } => started(&myself, st, run, actor, result),
            SupervisorMsg::LiveCount(reply) => {
                let _ = reply.send(st.live.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let id = cell.get_id();
                let Some(run) = st.by_actor.remove(&id) else { return Ok(()) };
                // Supervision events overtake ordinary messages: the `Passivated` this actor
                // sent before stopping may still be queued, and it needs the entry's count.
                if reason.as_deref() == Some(PASSIVATED) && st.live.get(&run).is_some_and(|l| l.actor.get_id() == id) {
                    return Ok(());
                }
                st.failures.remove(&run);
                forget(st, &run, id, Ok(()));
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let id = cell.get_id();
                let Some(run) = st.by_actor.remove(&id) else { return Ok(()) };
                let healthy =
                    st.live.get(&run).is_some_and(|l| l.actor.get_id() == id && l.since.elapsed() >= HEALTHY_RUN);
                forget(st, &run, id, Err(format!("run actor failed: {err}")));
                if healthy {
                    st.failures.remove(&run);
                }
                restart_later(&myself, st, run, is_transient(&*err), &format!("run actor failed: {err}"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Drop the live entry of `run` if it is still the actor `id` (a successor may have taken
/// over already), answering whoever waits for its startup.
fn forget(st: &mut SupervisorState, run: &RunId, id: ActorId, result: Result<(), String>) {
    if st.live.get(run).is_some_and(|l| l.actor.get_id() == id)
        && let Some(live) = st.remove_live(run)
    {
        live.settle(result);
    }
}

/// Try again after a failure: with backoff for as long as it takes if `transient`, else up to
/// `MAX_RESTARTS` times.
fn restart_later(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, run: RunId, transient: bool, why: &str) {
    let n = st.failures.entry(run.clone()).or_default();
    *n += 1;
    let n = *n;
    if !transient && n > MAX_RESTARTS {
        tracing::error!(%run, "{why}; failed {MAX_RESTARTS} times, leaving the run for recovery at the next start");
        st.failures.remove(&run);
        return;
    }
    let delay = RESTART_BACKOFF.0.saturating_mul(1 << (n - 1).min(16)).min(RESTART_BACKOFF.1);
    if n == 1 || !transient {
        tracing::warn!(%run, attempt = n, "{why}; rehydrating from its journal in {delay:?}");
    } else {
        tracing::debug!(%run, attempt = n, "{why}; rehydrating from its journal in {delay:?}");
    }
    let me = myself.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = me.send_message(SupervisorMsg::Ensure { run, reply: None });
    });
}

/// Deliver a message to a run's actor, starting one if needed. Outcomes go through the run's
/// inbox, so a burst is handled as one batch. Every message sent to the actor is counted, as
/// the actor counts what it receives: an outcome added to an inbox whose `Drain` is already on
/// its way is not a message (that `Drain` takes it), so a run that drained a burst in one batch
/// and then passivates is not mistaken for one that missed a message and woken again.
fn route(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, run: RunId, msg: RunMsg) {
    let live = match ensure_live(myself, st, &run, false) {
        Ok(live) => live,
        Err(e) => {
            tracing::warn!(%run, "message for run not delivered (the store keeps what it carried): {e}");
            return;
        }
    };
    let msg = match msg {
        RunMsg::StepFinished { step, attempt, outcome } => {
            if !live.inbox.push(step, attempt, outcome) {
                return;
            }
            RunMsg::Drain
        }
        msg => msg,
    };
    live.routed += 1;
    let sent = live.actor.send_message(RunMsg::Routed(Box::new(msg))).is_ok();
    if !sent {
        // The actor has stopped. The message is counted, so its `Passivated` (on the way)
        // starts a fresh actor; a failed actor is restarted and a finished run needs none.
        // Either way the fresh actor reads what the message carried from the store.
        tracing::debug!(%run, "routed to a stopped run actor");
    }
}

/// The run's entry, spawning its actor if it has none. Never waits for the actor's startup.
fn ensure_live<'s>(
    myself: &ActorRef<SupervisorMsg>,
    st: &'s mut SupervisorState,
    run: &RunId,
    recovery: bool,
) -> Result<&'s mut Live, String> {
    if !st.live.contains_key(run) {
        if let Some(w) = st.wakeups.remove(run) {
            w.abort();
        }
        let inbox = Inbox::default();
        let args =
            RunArgs { engine: st.engine.clone(), supervisor: myself.clone(), run: run.clone(), inbox: inbox.clone() };
        let (actor, startup) =
            ActorRuntime::spawn_linked_instant(None, RunActor, args, myself.get_cell()).map_err(|e| e.to_string())?;
        let id = actor.get_id();
        let (me, r) = (myself.clone(), run.clone());
        tokio::spawn(async move {
            let result = match startup.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(start_error(&e)),
                Err(e) => Err(StartError { message: format!("run actor startup task failed: {e}"), transient: false }),
            };
            let _ = me.send_message(SupervisorMsg::Started { run: r, actor: id, result });
        });
        if recovery {
            st.recovering.insert(id);
        }
        st.by_actor.insert(id, run.clone());
        st.live.insert(
            run.clone(),
            Live { actor, inbox, routed: 0, started: false, waiters: Vec::new(), since: Instant::now() },
        );
    }
    Ok(st.live.get_mut(run).expect("inserted above"))
}

fn started(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    run: RunId,
    actor: ActorId,
    result: Result<(), StartError>,
) {
    if st.recovering.remove(&actor) {
        pump_recoveries(myself, st);
    }
    match result {
        Ok(()) => {
            if let Some(live) = st.live.get_mut(&run).filter(|l| l.actor.get_id() == actor) {
                live.started = true;
                st.engine.live_runs.insert(run.clone());
                for w in live.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
        }
        Err(e) => {
            // Not linked, so no supervision event follows: clean up here.
            st.by_actor.remove(&actor);
            forget(st, &run, actor, Err(e.message.clone()));
            if e.transient {
                restart_later(myself, st, run, true, &format!("run actor did not start: {}", e.message));
            } else {
                tracing::warn!(%run, "cannot start run actor: {}", e.message);
            }
        }
    }
}

fn passivated(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    run: RunId,
    wake_at: Option<u64>,
    routed: u64,
) {
    let Some(live) = st.remove_live(&run) else { return };
    // The entry is this actor's: nothing replaces it before this message is handled (see
    // `PASSIVATED`). Its termination event may not have been handled yet.
    st.by_actor.remove(&live.actor.get_id());
    st.failures.remove(&run);
    let lost = live.routed > routed;
    live.settle(Ok(()));
    if lost {
        // Messages routed after the actor decided to stop were dropped with it; what they
        // carried is in the store (outcomes, decisions, cancellations), which a fresh actor
        // reads when it starts.
        if let Err(e) = ensure_live(myself, st, &run, false) {
            tracing::warn!(%run, "cannot start run actor: {e}");
        }
        return;
    }
    if let Some(at) = wake_at {
        let me = myself.clone();
        let r = run.clone();
        let delay = Duration::from_millis(at.saturating_sub(now_ms()));
        let handle = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.send_message(SupervisorMsg::Ensure { run: r, reply: None });
        });
        if let Some(old) = st.wakeups.insert(run, handle) {
            old.abort();
        }
    }
}

/// Start queued recoveries while slots are free.
fn pump_recoveries(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState) {
    while st.recovering.len() < RECOVERY_CONCURRENCY {
        let Some(run) = st.recover_queue.pop_front() else { break };
        if st.live.contains_key(&run) {
            continue;
        }
        if let Err(e) = ensure_live(myself, st, &run, true) {
            tracing::warn!(%run, "cannot start run actor: {e}");
        }
    }
}

fn start_error(e: &SpawnErr) -> StartError {
    let transient = match e {
        SpawnErr::StartupFailed(err) => is_transient(&**err),
        _ => false,
    };
    StartError { message: e.to_string(), transient }
}

/// Whether an actor's error says the store or the queue was unavailable (or written
/// concurrently): trying again later is expected to work.
fn is_transient(err: &(dyn std::error::Error + 'static)) -> bool {
    let store = |e: &StoreError| matches!(e, StoreError::Unavailable(_) | StoreError::Conflict { .. });
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<StoreError>().is_some_and(store)
            || e.downcast_ref::<EngineError>().is_some_and(|e| matches!(e, EngineError::Store(s) if store(s)))
            || e.downcast_ref::<QueueError>().is_some()
        {
            return true;
        }
        next = e.source();
    }
    false
}
