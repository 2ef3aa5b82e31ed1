//! The step worker: what runs when the queue delivers a job.
//!
//! Load the attempt's sealed input and the spec, run the step type's handler under its
//! timeout, record the outcome (first writer wins), THEN notify the run. The job succeeds
//! towards the queue whenever the outcome is recorded, so the queue never retries on its own;
//! the run's retry policy decides. Only a job that cannot be processed at all is rejected.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tollgate_engine::queue::StepJob;
use tollgate_engine::run::apply::DEFAULT_STEP_TIMEOUT;
use tollgate_engine::step::{StepError, StepInvocation};
use tollgate_engine::store::{OutcomeResult, StepOutcome};

use crate::notify::Notifier;
use crate::queue::{JobHandler, JobRejected};
use crate::system::{now_ms, Engine};

pub struct StepWorker {
    engine: Arc<Engine>,
    notifier: Arc<dyn Notifier>,
}

impl StepWorker {
    pub fn new(engine: Arc<Engine>, notifier: Arc<dyn Notifier>) -> Self {
        Self { engine, notifier }
    }

    pub async fn execute(&self, job: StepJob) -> Result<(), JobRejected> {
        let reject = |reason: String| JobRejected::new(format!("{}/{}#{}: {reason}", job.run, job.step, job.attempt));
        let store = &self.engine.store;
        // A duplicate delivery of an attempt already recorded: just make sure the run knows.
        match store.step_outcome(&job.workflow, &job.run, &job.step, job.attempt).await {
            Ok(Some(_)) => {
                self.notifier.step_finished(&job).await;
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return Err(reject(e.to_string())),
        }
        let meta = store.run_meta(&job.run).await.map_err(|e| reject(e.to_string()))?;
        if meta.workflow != job.workflow {
            return Err(reject("job names the wrong workflow for its run".into()));
        }
        let spec = self.engine.spec(&meta.workflow, &meta.spec_digest).await.map_err(|e| reject(e.to_string()))?;
        let Some((_, step)) = spec.step_by_id(&job.step) else {
            return Err(reject(format!("workflow has no step `{}`", job.step)));
        };
        let input = store
            .step_input(&job.workflow, &job.run, &job.step, job.attempt)
            .await
            .map_err(|e| reject(e.to_string()))?
            .ok_or_else(|| reject("attempt has no recorded input".into()))?;
        let timeout = step
            .timeout
            .or_else(|| spec.spec().defaults.as_ref().and_then(|d| d.timeout))
            .unwrap_or(DEFAULT_STEP_TIMEOUT);
        let started_at = now_ms();
        let result = match self.engine.handlers.get(&step.ty) {
            None => Err(StepError::permanent("no_handler", format!("no handler for step type `{}` in this process", step.ty.name()))),
            Some(handler) => {
                let call = StepInvocation {
                    workflow: &job.workflow,
                    run: &job.run,
                    step,
                    attempt: job.attempt,
                    inputs: &input,
                    // Same for every attempt: a retried side effect must take effect once.
                    idempotency_key: format!("{}.{}", job.run, job.step),
                    timeout,
                };
                match tokio::time::timeout(timeout + Duration::from_millis(50), handler.run(call)).await {
                    Ok(r) => r,
                    Err(_) => Err(StepError::retryable("timeout", format!("attempt did not finish within {}", humantime::format_duration(timeout)))),
                }
            }
        };
        let result = match result {
            Ok(success) => OutcomeResult::Succeeded { output: success.output, cost: success.cost, gate: None },
            Err(error) => OutcomeResult::Failed { error },
        };
        let outcome = StepOutcome { step: job.step.clone(), attempt: job.attempt, started_at, finished_at: now_ms(), result };
        if let Err(e) = store.record_outcome(&job.workflow, &job.run, &outcome).await {
            // Not recorded: the run's timeout policy will re-dispatch the attempt.
            tracing::warn!(run = %job.run, step = %job.step, "outcome not recorded: {e}");
            return Ok(());
        }
        self.notifier.step_finished(&job).await;
        Ok(())
    }
}

#[async_trait]
impl JobHandler for StepWorker {
    async fn handle(&self, job: StepJob) -> Result<(), JobRejected> {
        self.execute(job).await
    }
}
