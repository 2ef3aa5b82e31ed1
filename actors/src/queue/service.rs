//! What happens to one delivered job: decode it, run the handler as a tracked task, then delete
//! the job from the backend — in that order, whatever the handler said.
//!
//! The engine owns retries, so apalis must never retry: a handler `Ok` becomes apalis success,
//! a [`JobRejected`] becomes `AbortError` (status `Killed`, never retried), and a panic is logged
//! and treated as a rejection (the engine's step timeout re-dispatches a new attempt). Either
//! way the job is deleted, because apalis's own acknowledgement is switched off in both backends
//! (`persist_results(false)`, see `sqlite.rs` and `redis.rs`).
//!
//! Each job runs as its own task on its worker's `TaskTracker` rather than inside apalis's
//! worker future: the jobs of one worker then use every core, a worker that dies on a backend
//! error does not cancel jobs half-way, and shutdown can wait for all of them.
//!
//! apalis learns the outcome as soon as the handler returns, *before* the delete. Measured
//! here: when a worker is told to stop while a fetch is in flight, apalis stops polling that
//! fetch until every in-flight job has completed, and only then drops it. On SQLite the stalled
//! fetch holds the pool's connection (or the write lock) mid-transaction, so a job whose
//! completion waited for its delete could never complete: shutdown hung until the pool's 30 s
//! acquire timeout. The delete therefore runs after apalis is told, still inside the tracked
//! task, so waiting for the tracker still waits for it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::Task;
use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::PollSemaphore;
use tokio_util::task::TaskTracker;
use tollgate_engine::queue::StepJob;

use crate::queue::error::BackendError;
use crate::queue::{JobHandler, JobRejected};

/// Removes a handled job from its backend so it is neither re-delivered nor kept.
#[async_trait]
pub(crate) trait CompleteJob: Send + Sync + 'static {
    async fn complete(&self, task_id: &str) -> Result<(), BackendError>;
}

/// The tower service an apalis worker calls for each job.
pub(crate) struct StepService {
    handler: Arc<dyn JobHandler>,
    completer: Arc<dyn CompleteJob>,
    /// One permit per running job, shared by every worker of the set: apalis only fetches when
    /// `poll_ready` says a slot is free, so this is the process's concurrency bound.
    slots: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    tasks: TaskTracker,
}

impl StepService {
    pub(crate) fn new(
        handler: Arc<dyn JobHandler>,
        completer: Arc<dyn CompleteJob>,
        slots: Arc<Semaphore>,
        tasks: TaskTracker,
    ) -> Self {
        Self { handler, completer, slots: PollSemaphore::new(slots), permit: None, tasks }
    }
}

impl tower_service::Service<Task<Value>> for StepService {
    type Response = ();
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<(), BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            match self.slots.poll_acquire(cx) {
                Poll::Ready(Some(permit)) => self.permit = Some(permit),
                Poll::Ready(None) => return Poll::Ready(Err("job slots closed".into())),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<Value>) -> Self::Future {
        // Held until the job is deleted, so deletes cannot pile up beyond the concurrency.
        let permit = self.permit.take();
        let task_id = task.ctx().task_id().map(ToString::to_string);
        let handler = Arc::clone(&self.handler);
        let completer = Arc::clone(&self.completer);
        let (report, outcome) = oneshot::channel();
        self.tasks.spawn(async move {
            let _slot = permit;
            let _ = report.send(run_handler(handler.as_ref(), task.args).await);
            match &task_id {
                Some(id) => {
                    if let Err(e) = completer.complete(id).await {
                        // The job stays claimed by this worker; it comes back through our
                        // clean-up after the worker stops or apalis's orphan recovery, which the
                        // engine tolerates (a duplicate delivery).
                        tracing::warn!(task_id = %id, error = %e, "could not delete a handled job");
                    }
                }
                None => tracing::error!("apalis delivered a job without a task id"),
            }
        });
        async move {
            match outcome.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(rejected)) => Err(Box::new(AbortError::new(rejected)) as BoxDynError),
                Err(lost) => Err(Box::new(AbortError::new(lost)) as BoxDynError),
            }
        }
        .boxed()
    }
}

async fn run_handler(handler: &dyn JobHandler, args: Value) -> Result<(), JobRejected> {
    let job: StepJob = serde_json::from_value(args).map_err(|e| {
        tracing::warn!(error = %e, "dropping a queue payload that is not a StepJob");
        JobRejected::new(format!("payload is not a StepJob: {e}"))
    })?;
    run_job(handler, job).await
}

/// Runs one decoded job, turning a panic into a rejection; logs what went wrong.
pub(crate) async fn run_job(handler: &dyn JobHandler, job: StepJob) -> Result<(), JobRejected> {
    let ids = format!("{}/{}/{}#{}", job.workflow, job.run, job.step, job.attempt);
    match AssertUnwindSafe(handler.handle(job)).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(rejected)) => {
            tracing::warn!(job = %ids, reason = %rejected.reason, "step job rejected");
            Err(rejected)
        }
        Err(_) => {
            tracing::error!(job = %ids, "step handler panicked; dropping the job");
            Err(JobRejected::new("handler panicked"))
        }
    }
}
