//! [`TriggerSupervisor`] (ractor): starts one [`TriggerActor`] per enabled trigger of the
//! workflows it is given, restarts one that fails with capped exponential backoff (reset after
//! a minute of healthy running), saves the triggers' state (health, counters, cursor) to
//! the store every second, so it outlives the process, and every minute removes expired
//! trigger records from a store that does not expire them itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio_util::sync::CancellationToken;
use tollgate_engine::ids::{TriggerId, WorkflowId};
use tollgate_engine::spec::ValidatedSpec;

use crate::service::Tollgate;
use crate::triggers::actor::{TriggerActor, TriggerMsg};
use crate::triggers::board::{TriggerBoard, TriggerStatus};
use crate::triggers::fire::FirePath;
use crate::triggers::source::TriggerContext;

/// Backoff between restarts of one trigger: doubles from the first, up to the last.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));
/// A trigger that ran this long before failing starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How often changed trigger states are saved.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

type Key = (WorkflowId, TriggerId);

pub struct TriggerSupervisor;

pub struct TriggerSupervisorArgs {
    pub fire_path: FirePath,
    pub board: TriggerBoard,
    pub workflows: Vec<Arc<ValidatedSpec>>,
    /// This process's id, written with saved states.
    pub holder: String,
}

pub enum TriggerSupervisorMsg {
    /// Start (or restart) a trigger.
    Start(Key),
    /// Save changed states.
    Flush,
}

struct Slot {
    spec: Arc<ValidatedSpec>,
    index: usize,
    actor: Option<(ActorRef<TriggerMsg>, CancellationToken, Instant)>,
    failures: u32,
}

pub struct TriggerSupervisorState {
    args: TriggerSupervisorArgs,
    slots: HashMap<Key, Slot>,
    by_actor: HashMap<ActorId, Key>,
}

#[ractor::async_trait]
impl Actor for TriggerSupervisor {
    type Msg = TriggerSupervisorMsg;
    type State = TriggerSupervisorState;
    type Arguments = TriggerSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: TriggerSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = args.fire_path.tollgate().engine.store.clone();
        let mut slots = HashMap::new();
        for spec in &args.workflows {
            let wf = spec.spec().id.clone();
            for (index, t) in spec.spec().triggers.iter().enumerate().filter(|(_, t)| t.enabled) {
                let id = TriggerId::new(&t.id);
                // Resume from the saved state; a store that is down now is retried by the actor.
                let saved = match store.workflow_key(&wf).await {
                    Ok(_) => store.trigger_state(&wf, &id).await.unwrap_or_else(|e| {
                        tracing::warn!(workflow = %wf, trigger = %id, error = %e, "could not read the trigger's saved state");
                        None
                    }),
                    Err(_) => None, // a workflow never registered has no state
                };
                args.board.register(&wf, &id, t.kind().name(), saved);
                slots.insert((wf.clone(), id.clone()), Slot { spec: spec.clone(), index, actor: None, failures: 0 });
                let _ = myself.send_message(TriggerSupervisorMsg::Start((wf.clone(), id)));
            }
        }
        myself.send_interval(FLUSH_EVERY, || TriggerSupervisorMsg::Flush);
        Ok(TriggerSupervisorState { args, slots, by_actor: HashMap::new() })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        flush(st).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TriggerSupervisorMsg::Start(key) => start(&myself, st, key).await,
            TriggerSupervisorMsg::Flush => flush(st).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, failure) = match &evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            _ => return Ok(()),
        };
        let Some(key) = st.by_actor.remove(&id) else { return Ok(()) };
        let Some(slot) = st.slots.get_mut(&key) else { return Ok(()) };
        let Some((_, token, since)) = slot.actor.take() else { return Ok(()) };
        if token.is_cancelled() && failure.is_none() {
            return Ok(()); // stopped on purpose
        }
        let error = failure.unwrap_or_else(|| "the trigger stopped on its own".into());
        if since.elapsed() >= HEALTHY_RUN {
            slot.failures = 0;
        }
        restart_later(&myself, st, key, &error);
        Ok(())
    }
}

async fn start(myself: &ActorRef<TriggerSupervisorMsg>, st: &mut TriggerSupervisorState, key: Key) {
    let Some(slot) = st.slots.get(&key) else { return };
    if slot.actor.is_some() {
        return;
    }
    let shutdown = CancellationToken::new();
    let ctx = TriggerContext {
        spec: slot.spec.clone(),
        trigger: slot.spec.spec().triggers[slot.index].clone(),
        fire_path: st.args.fire_path.clone(),
        board: st.args.board.clone(),
        shutdown: shutdown.clone(),
    };
    match Actor::spawn_linked(None, TriggerActor, ctx, myself.get_cell()).await {
        Ok((actor, _)) => {
            st.by_actor.insert(actor.get_id(), key.clone());
            if let Some(slot) = st.slots.get_mut(&key) {
                slot.actor = Some((actor, shutdown, Instant::now()));
            }
        }
        Err(e) => restart_later(myself, st, key, &format!("the trigger did not start: {e}")),
    }
}

fn restart_later(myself: &ActorRef<TriggerSupervisorMsg>, st: &mut TriggerSupervisorState, key: Key, error: &str) {
    let Some(slot) = st.slots.get_mut(&key) else { return };
    slot.failures = slot.failures.saturating_add(1);
    let delay = RESTART_BACKOFF.0.saturating_mul(1 << slot.failures.min(16).saturating_sub(1)).min(RESTART_BACKOFF.1);
    tracing::warn!(workflow = %key.0, trigger = %key.1, error, retry_in = ?delay, "trigger failed; restarting it");
    st.args.board.error(&key.0, &key.1, error);
    st.args.board.restarted(&key.0, &key.1);
    st.args.board.set_connected(&key.0, &key.1, false);
    myself.send_after(delay, move || TriggerSupervisorMsg::Start(key));
}

async fn flush(st: &mut TriggerSupervisorState) {
    let states = st.args.board.take_dirty(&st.args.holder);
    let store = &st.args.fire_path.tollgate().engine.store;
    for (i, state) in states.iter().enumerate() {
        if let Err(e) = store.put_trigger_state(state).await {
            tracing::debug!(error = %e, "could not save trigger states; retrying");
            st.args.board.mark_dirty(&states[i..]);
            return;
        }
    }
}

/// The running triggers of a process.
pub struct Triggers {
    pub supervisor: ActorRef<TriggerSupervisorMsg>,
    pub board: TriggerBoard,
}

impl Triggers {
    pub fn list(&self) -> Vec<TriggerStatus> {
        self.board.list()
    }

    /// Stop every trigger (each finishes the fire it is recording), then save their state.
    pub async fn shutdown(self) {
        self.supervisor.stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
        let _ = self.supervisor.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
    }
}

/// Start the triggers of `workflows` in this process.
pub async fn start_triggers(
    tollgate: &Tollgate,
    history_ttl: Duration,
    workflows: Vec<ValidatedSpec>,
) -> anyhow::Result<Triggers> {
    let board = tollgate.engine.triggers.clone();
    board.set_history_ttl(history_ttl);
    let args = TriggerSupervisorArgs {
        fire_path: FirePath::new(tollgate.clone(), history_ttl, board.clone()),
        board: board.clone(),
        workflows: workflows.into_iter().map(Arc::new).collect(),
        holder: tollgate.engine.instance.clone(),
    };
    let (supervisor, _) = Actor::spawn(None, TriggerSupervisor, args).await?;
    Ok(Triggers { supervisor, board })
}
