//! Telling a run that one of its attempts has an outcome: in-process to the supervisor, or
//! over Redis pub/sub to whichever `serve` process drives the run. Ids only. A lost
//! notification is covered by the run actor's reconcile tick.

use async_trait::async_trait;
use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tollgate_engine::ids::{RunId, StepId};
use tollgate_engine::queue::StepJob;
use tollgate_engine::store::StepOutcome;

use crate::pubsub::{Event, Subscription};
use crate::run_actor::RunMsg;
use crate::supervisor::{LiveRuns, SupervisorMsg};

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// `outcome` is what the worker recorded; remote notifiers send ids only.
    async fn step_finished(&self, job: &StepJob, outcome: &StepOutcome);
}

/// Same-process delivery.
pub struct LocalNotifier(pub ActorRef<SupervisorMsg>);

#[async_trait]
impl Notifier for LocalNotifier {
    async fn step_finished(&self, job: &StepJob, outcome: &StepOutcome) {
        let msg = RunMsg::StepFinished {
            step: job.step.clone(),
            attempt: job.attempt,
            outcome: Some(Box::new(outcome.clone())),
        };
        let _ = self.0.send_message(SupervisorMsg::Route { run: job.run.clone(), msg });
    }
}

#[derive(Serialize, Deserialize)]
struct Finished {
    run: RunId,
    step: StepId,
    attempt: u32,
}

/// Cross-process delivery over a Redis channel.
pub struct RedisNotifier {
    conn: redis::aio::ConnectionManager,
    channel: String,
}

impl RedisNotifier {
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        Ok(Self { conn: client.get_connection_manager().await?, channel: channel(namespace) })
    }
}

fn channel(namespace: &str) -> String {
    format!("{namespace}:step-finished")
}

#[async_trait]
impl Notifier for RedisNotifier {
    async fn step_finished(&self, job: &StepJob, _outcome: &StepOutcome) {
        let payload =
            serde_json::to_string(&Finished { run: job.run.clone(), step: job.step.clone(), attempt: job.attempt })
                .expect("ids serialise");
        let mut conn = self.conn.clone();
        if let Err(e) = redis::cmd("PUBLISH").arg(&self.channel).arg(payload).query_async::<i64>(&mut conn).await {
            tracing::warn!("step-finished notification lost (reconcile will cover it): {e}");
        }
    }
}

/// A `serve` process on Redis, whose workers run attempts of its own runs and of runs other
/// processes may drive: a run driven here (a live actor) is told in-process only; any other
/// run in-process (which wakes it here if it sleeps) and over Redis.
///
/// Whether the run is driven here is decided BEFORE the in-process delivery: given the outcome,
/// the run may ask a person and passivate at once, and a publish decided after that would come
/// back through this process's own subscription and wake it again for nothing.
pub struct LocalAndFleet {
    pub local: LocalNotifier,
    pub fleet: RedisNotifier,
    pub driven_here: LiveRuns,
}

#[async_trait]
impl Notifier for LocalAndFleet {
    async fn step_finished(&self, job: &StepJob, outcome: &StepOutcome) {
        let driven_here = self.driven_here.contains(&job.run);
        self.local.step_finished(job, outcome).await;
        if !driven_here {
            self.fleet.step_finished(job, outcome).await;
        }
    }
}

/// A worker-only process on the embedded backend: no channel reaches the driving process,
/// whose run actors read the outcomes from the shared file at their reconcile tick.
pub struct ReconcileOnly;

#[async_trait]
impl Notifier for ReconcileOnly {
    async fn step_finished(&self, _job: &StepJob, _outcome: &StepOutcome) {}
}

/// Route notifications published by other processes to this process's supervisor. Fails at
/// once if Redis does not answer; after that the subscription survives Redis restarts (see
/// `crate::pubsub`): notifications published while it was down are lost, and each live run's
/// reconcile tick reads those outcomes from the store.
pub async fn subscribe(
    url: &str,
    namespace: &str,
    supervisor: ActorRef<SupervisorMsg>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let subscription = Subscription::connect(client, channel(namespace), "step outcome").await?;
    Ok(tokio::spawn(subscription.run(shutdown, move |event| {
        let Event::Message(msg) = event else { return };
        let Ok(payload) = msg.get_payload::<String>() else { return };
        let Ok(f) = serde_json::from_str::<Finished>(&payload) else { return };
        let msg = RunMsg::StepFinished { step: f.step, attempt: f.attempt, outcome: None };
        let _ = supervisor.send_message(SupervisorMsg::Route { run: f.run, msg });
    })))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use tollgate_engine::ids::{RunId, StepId};

    use super::{Finished, channel, subscribe};
    use crate::queue::tests::redis_server::RedisServer;
    use crate::supervisor::SupervisorMsg;

    /// Stands in for the supervisor: forwards the runs of routed messages.
    struct Probe;

    #[ractor::async_trait]
    impl Actor for Probe {
        type Msg = SupervisorMsg;
        type State = mpsc::UnboundedSender<RunId>;
        type Arguments = mpsc::UnboundedSender<RunId>;

        async fn pre_start(
            &self,
            _: ActorRef<SupervisorMsg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _: ActorRef<SupervisorMsg>,
            msg: SupervisorMsg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let SupervisorMsg::Route { run, .. } = msg {
                let _ = tx.send(run);
            }
            Ok(())
        }
    }

    async fn publish(conn: &mut redis::aio::MultiplexedConnection, run: &str) -> i64 {
        let payload = serde_json::to_string(&Finished { run: RunId::new(run), step: StepId::new("s"), attempt: 1 })
            .expect("json");
        redis::cmd("PUBLISH").arg(channel("ns")).arg(payload).query_async(conn).await.expect("PUBLISH")
    }

    /// Waits until the channel has a subscriber again (the relay resubscribes in the background).
    async fn wait_subscribed(conn: &mut redis::aio::MultiplexedConnection) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, n): (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(channel("ns")).query_async(conn).await.expect("PUBSUB NUMSUB");
            if n > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "never resubscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_outcome_subscription_survives_a_redis_restart() {
        let mut server = tokio::task::block_in_place(RedisServer::start);
        let (tx, mut routed) = mpsc::unbounded_channel();
        let (probe, _) = Actor::spawn(None, Probe, tx).await.expect("probe");
        let shutdown = CancellationToken::new();
        let task = subscribe(&server.url(), "ns", probe, shutdown.clone()).await.expect("subscribed");
        let client = redis::Client::open(server.url()).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        assert_eq!(publish(&mut conn, "before").await, 1);
        assert_eq!(routed.recv().await.expect("routed").as_str(), "before");

        tokio::task::block_in_place(|| {
            server.shutdown();
            server.start_again();
        });
        let mut conn = client.get_multiplexed_async_connection().await.expect("reconnect");
        wait_subscribed(&mut conn).await;
        assert_eq!(publish(&mut conn, "after").await, 1);
        let run = tokio::time::timeout(Duration::from_secs(30), routed.recv())
            .await
            .expect("routed after the restart")
            .expect("probe alive");
        assert_eq!(run.as_str(), "after");

        shutdown.cancel();
        task.await.expect("the subscription task ends at shutdown");
    }
}
