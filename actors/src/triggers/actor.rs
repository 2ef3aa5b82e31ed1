//! [`TriggerActor`]: one per running trigger. `pre_start` registers the workflow (its key must
//! exist before anything is sealed) and starts the trigger's source as a task tied to the
//! actor; when the source fails, the actor fails, and the [`TriggerSupervisor`] restarts it
//! with backoff. Stopping the actor stops the source.
//!
//! [`TriggerSupervisor`]: crate::triggers::TriggerSupervisor

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::triggers::source::{TriggerContext, source_for};

/// How long a stopping source gets to finish what it is doing (a fire being recorded).
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct TriggerActor;

/// The context the source runs with (its `shutdown` is the actor's own token).
pub type TriggerArgs = TriggerContext;

pub enum TriggerMsg {
    /// The source's task ended, with its error if it failed.
    SourceEnded(Result<(), String>),
}

pub struct TriggerState {
    ctx: TriggerContext,
    task: Option<JoinHandle<()>>,
}

#[ractor::async_trait]
impl Actor for TriggerActor {
    type Msg = TriggerMsg;
    type State = TriggerState;
    type Arguments = TriggerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TriggerMsg>,
        ctx: TriggerContext,
    ) -> Result<TriggerState, ActorProcessingErr> {
        ctx.store().register_workflow(ctx.spec.spec()).await?;
        let source = source_for(&ctx.trigger);
        let run_ctx = ctx.clone();
        let task = tokio::spawn(async move {
            let result = source.run(&run_ctx).await.map_err(|e| e.to_string());
            let _ = myself.send_message(TriggerMsg::SourceEnded(result));
        });
        Ok(TriggerState { ctx, task: Some(task) })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TriggerMsg>,
        msg: TriggerMsg,
        st: &mut TriggerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TriggerMsg::SourceEnded(Ok(())) if st.ctx.shutdown.is_cancelled() => Ok(()),
            TriggerMsg::SourceEnded(Ok(())) => Err("the trigger's source stopped on its own".into()),
            TriggerMsg::SourceEnded(Err(e)) => {
                st.ctx.error(&e);
                Err(e.into())
            }
        }
    }

    async fn post_stop(&self, _myself: ActorRef<TriggerMsg>, st: &mut TriggerState) -> Result<(), ActorProcessingErr> {
        st.ctx.shutdown.cancel();
        if let Some(task) = st.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        st.ctx.set_connected(false);
        Ok(())
    }
}
