//! Telling a run that one of its attempts has an outcome: in-process to the supervisor, or
//! over Redis pub/sub to whichever `serve` process drives the run. Ids only. A lost
//! notification is covered by the run actor's reconcile tick.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tollgate_engine::ids::{RunId, StepId};
use tollgate_engine::queue::StepJob;

use crate::run_actor::RunMsg;
use crate::supervisor::SupervisorMsg;

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn step_finished(&self, job: &StepJob);
}

/// Same-process delivery.
pub struct LocalNotifier(pub ActorRef<SupervisorMsg>);

#[async_trait]
impl Notifier for LocalNotifier {
    async fn step_finished(&self, job: &StepJob) {
        let msg = RunMsg::StepFinished { step: job.step.clone(), attempt: job.attempt };
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
    async fn step_finished(&self, job: &StepJob) {
        let payload = serde_json::to_string(&Finished { run: job.run.clone(), step: job.step.clone(), attempt: job.attempt })
            .expect("ids serialise");
        let mut conn = self.conn.clone();
        if let Err(e) = redis::cmd("PUBLISH").arg(&self.channel).arg(payload).query_async::<i64>(&mut conn).await {
            tracing::warn!("step-finished notification lost (reconcile will cover it): {e}");
        }
    }
}

/// Both: a `serve` process that also runs workers delivers locally and tells the fleet.
pub struct Fanout(pub Vec<Arc<dyn Notifier>>);

#[async_trait]
impl Notifier for Fanout {
    async fn step_finished(&self, job: &StepJob) {
        for n in &self.0 {
            n.step_finished(job).await;
        }
    }
}

/// Route notifications published by other processes to this process's supervisor.
pub async fn subscribe(url: &str, namespace: &str, supervisor: ActorRef<SupervisorMsg>, shutdown: CancellationToken) -> Result<tokio::task::JoinHandle<()>, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel(namespace)).await?;
    Ok(tokio::spawn(async move {
        let mut stream = pubsub.on_message();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    let Ok(f) = serde_json::from_str::<Finished>(&payload) else { continue };
                    let msg = RunMsg::StepFinished { step: f.step, attempt: f.attempt };
                    let _ = supervisor.send_message(SupervisorMsg::Route { run: f.run, msg });
                }
            }
        }
    }))
}
