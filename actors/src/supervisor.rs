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

use crate::run_actor::{RunActor, RunArgs, RunMsg};
use crate::system::{now_ms, Engine};

const MAX_RESTARTS: u32 = 3;

pub struct RunSupervisor;

pub enum SupervisorMsg {
    /// Make sure the run has a live actor (start, resume, recover).
    Ensure { run: RunId, reply: Option<RpcReplyPort<Result<(), String>>> },
    /// Deliver a message to a run, rehydrating it if it is passivated.
    Route { run: RunId, msg: RunMsg },
    /// A run actor stopped itself because it only waits; wake it at `wake_at` if set.
    Passivated { run: RunId, wake_at: Option<u64> },
    /// Number of live run actors.
    LiveCount(RpcReplyPort<usize>),
}

pub struct SupervisorState {
    engine: Arc<Engine>,
    live: HashMap<RunId, ActorRef<RunMsg>>,
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
                let result = ensure_live(&myself, st, &run).await.map(|_| ());
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else if let Err(e) = result {
                    tracing::warn!(%run, "cannot start run actor: {e}");
                }
            }
            SupervisorMsg::Route { run, msg } => match ensure_live(&myself, st, &run).await {
                Ok(actor) => {
                    let _ = actor.send_message(msg);
                }
                Err(e) => tracing::warn!(%run, "message for run not delivered: {e}"),
            },
            SupervisorMsg::Passivated { run, wake_at } => {
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
                    st.live.remove(&run);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(run) = st.by_actor.remove(&cell.get_id()) else { return Ok(()) };
                st.live.remove(&run);
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

async fn ensure_live(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, run: &RunId) -> Result<ActorRef<RunMsg>, String> {
    if let Some(a) = st.live.get(run) {
        return Ok(a.clone());
    }
    if let Some(w) = st.wakeups.remove(run) {
        w.abort();
    }
    let args = RunArgs { engine: st.engine.clone(), supervisor: myself.clone(), run: run.clone() };
    let (actor, _) = Actor::spawn_linked(None, RunActor, args, myself.get_cell()).await.map_err(|e| e.to_string())?;
    st.by_actor.insert(actor.get_id(), run.clone());
    st.live.insert(run.clone(), actor.clone());
    Ok(actor)
}
