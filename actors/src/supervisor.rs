//! `RunSupervisor`: spawns, routes to, restarts and wakes run actors.
//!
//! ractor 0.16 has no restart strategies, so the policy lives in `handle_supervisor_evt`: a
//! run actor that fails is rehydrated from its journal up to `MAX_RESTARTS` times; after that
//! the run stays active in the store for the next process start to recover. Passivated runs
//! with a durable timer get a wake-up here instead of a live actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;
use tollgate_engine::ids::RunId;

use crate::run_actor::{Inbox, RunActor, RunArgs, RunMsg};
use crate::system::{now_ms, Engine};

const MAX_RESTARTS: u32 = 3;

pub struct RunSupervisor;

pub enum SupervisorMsg {
    /// Make sure the run has a live actor (start, resume, recover).
    Ensure { run: RunId, reply: Option<RpcReplyPort<Result<(), String>>> },
    /// Deliver a message to a run, rehydrating it if it is passivated.
    Route { run: RunId, msg: RunMsg },
    /// A run actor stopped itself because it only waits; wake it at `wake_at` if set.
    /// `routed` is how many routed messages it had processed: if fewer than were routed to it,
    /// some arrived after it decided to stop and a fresh actor takes over at once.
    Passivated { run: RunId, wake_at: Option<u64>, routed: u64 },
    /// Number of live run actors.
    LiveCount(RpcReplyPort<usize>),
}

pub struct SupervisorState {
    engine: Arc<Engine>,
    live: HashMap<RunId, Live>,
    by_actor: HashMap<ActorId, RunId>,
    wakeups: HashMap<RunId, JoinHandle<()>>,
    restarts: HashMap<RunId, u32>,
}

#[ractor::async_trait]
impl Actor for RunSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Engine>;

    async fn pre_start(&self, _myself: ActorRef<SupervisorMsg>, engine: Arc<Engine>) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            engine,
            live: HashMap::new(),
            by_actor: HashMap::new(),
            wakeups: HashMap::new(),
            restarts: HashMap::new(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<SupervisorMsg>, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        for (_, w) in st.wakeups.drain() {
            w.abort();
        }
        Ok(())
    }

    async fn handle(&self, myself: ActorRef<SupervisorMsg>, msg: SupervisorMsg, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Ensure { run, reply } => {
                let result = ensure_live(&myself, st, &run).await;
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else if let Err(e) = result {
                    tracing::warn!(%run, "cannot start run actor: {e}");
                }
            }
            SupervisorMsg::Route { run, msg } => route(&myself, st, run, msg).await,
            SupervisorMsg::Passivated { run, wake_at, routed } => {
                let lost = st.live.get(&run).is_some_and(|l| l.routed > routed);
                st.live.remove(&run);
                if lost {
                    // Messages routed after the actor decided to stop were dropped with it;
                    // what they carried is in the store (outcomes, decisions, cancellations),
                    // which a fresh actor reads when it starts.
                    let _ = myself.send_message(SupervisorMsg::Ensure { run, reply: None });
                    return Ok(());
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
            SupervisorMsg::LiveCount(reply) => {
                let _ = reply.send(st.live.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, myself: ActorRef<SupervisorMsg>, evt: SupervisionEvent, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(run) = st.by_actor.remove(&cell.get_id()) {
                    forget(st, &run, cell.get_id());
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(run) = st.by_actor.remove(&cell.get_id()) else { return Ok(()) };
                forget(st, &run, cell.get_id());
                let n = st.restarts.entry(run.clone()).or_default();
                *n += 1;
                if *n <= MAX_RESTARTS {
                    tracing::warn!(%run, attempt = *n, "run actor failed, rehydrating from its journal: {err}");
                    let me = myself.clone();
                    let delay = Duration::from_millis(100 * 2u64.pow(*n));
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = me.send_message(SupervisorMsg::Ensure { run, reply: None });
                    });
                } else {
                    tracing::error!(%run, "run actor failed {MAX_RESTARTS} times; leaving the run for recovery at next start: {err}");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Drop the live entry of `run` if it is still the actor `id` (a successor may have taken
/// over already, e.g. after a passivation that raced with a routed message).
fn forget(st: &mut SupervisorState, run: &RunId, id: ActorId) {
    if st.live.get(run).is_some_and(|l| l.actor.get_id() == id) {
        st.live.remove(run);
    }
}

/// A live run actor as the supervisor knows it.
struct Live {
    actor: ActorRef<RunMsg>,
    inbox: Inbox,
    /// Messages routed to it so far (see `SupervisorMsg::Passivated`).
    routed: u64,
}

/// Deliver a message to a run's actor, starting one if needed. Outcomes go through the run's
/// inbox, so a burst is handled as one batch. Every routed message is counted.
async fn route(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, run: RunId, msg: RunMsg) {
    if let Err(e) = ensure_live(myself, st, &run).await {
        tracing::warn!(%run, "message for run not delivered (the store keeps what it carried): {e}");
        return;
    }
    let live = st.live.get_mut(&run).expect("ensured live");
    live.routed += 1;
    let sent = match msg {
        RunMsg::StepFinished { step, attempt, outcome } => {
            !live.inbox.push(step, attempt, outcome) || live.actor.send_message(RunMsg::Routed(Box::new(RunMsg::Drain))).is_ok()
        }
        msg => live.actor.send_message(RunMsg::Routed(Box::new(msg))).is_ok(),
    };
    if !sent {
        // The actor is stopping: a fresh one reads what the message carried from the store.
        st.live.remove(&run);
        let _ = myself.send_message(SupervisorMsg::Ensure { run, reply: None });
    }
}

async fn ensure_live(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, run: &RunId) -> Result<(), String> {
    if st.live.contains_key(run) {
        return Ok(());
    }
    if let Some(w) = st.wakeups.remove(run) {
        w.abort();
    }
    let inbox = Inbox::default();
    let args = RunArgs { engine: st.engine.clone(), supervisor: myself.clone(), run: run.clone(), inbox: inbox.clone() };
    let (actor, _) = Actor::spawn_linked(None, RunActor, args, myself.get_cell()).await.map_err(|e| e.to_string())?;
    st.by_actor.insert(actor.get_id(), run.clone());
    st.live.insert(run.clone(), Live { actor, inbox, routed: 0 });
    Ok(())
}
