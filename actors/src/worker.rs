//! The step worker: what runs when the queue delivers a job.
//!
//! Load the attempt's sealed input and the spec, run the step type's handler under its
//! timeout, record the outcome (first writer wins), THEN notify the run. The job succeeds
//! towards the queue whenever the outcome is recorded, so the queue never retries on its own;
//! the run's retry policy decides. Only a job that cannot be processed at all is rejected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tollgate_engine::queue::StepJob;
use tollgate_engine::run::apply::DEFAULT_STEP_TIMEOUT;
use tollgate_engine::step::{StepError, StepInvocation};
use tollgate_engine::ids::RunId;
use serde_json::Value;
use tollgate_engine::gates::{GateAction, RedactionMap};
use tollgate_engine::spec::{OnBlock, ValidatedSpec};
use tollgate_engine::step::StepSuccess;
use tollgate_engine::store::{OutcomeResult, RunMeta, StepOutcome, StoreError};

use crate::notify::Notifier;
use crate::queue::{JobHandler, JobRejected};
use crate::system::{now_ms, Engine};

pub struct StepWorker {
    engine: Arc<Engine>,
    notifier: Arc<dyn Notifier>,
    /// Run metadata is immutable: cache it (bounded) so a run's steps don't each read it.
    metas: Mutex<HashMap<RunId, Arc<RunMeta>>>,
}

/// Entries kept in the run metadata cache before it starts over.
const META_CACHE: usize = 4096;
/// Attempts to save a run's redaction map against concurrent updates.
const MAX_REDACTION_RETRIES: usize = 16;

impl StepWorker {
    pub fn new(engine: Arc<Engine>, notifier: Arc<dyn Notifier>) -> Self {
        Self { engine, notifier, metas: Mutex::new(HashMap::new()) }
    }

    async fn run_meta(&self, run: &RunId) -> Result<Arc<RunMeta>, tollgate_engine::store::StoreError> {
        if let Some(m) = self.metas.lock().unwrap_or_else(|e| e.into_inner()).get(run) {
            return Ok(m.clone());
        }
        let meta = Arc::new(self.engine.store.run_meta(run).await?);
        let mut cache = self.metas.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= META_CACHE {
            cache.clear();
        }
        cache.insert(run.clone(), meta.clone());
        Ok(meta)
    }

    /// Pass a successful output through the workflow's gate mesh, before anything can read it.
    /// Redaction placeholders come from the run's map, so they are stable across its steps;
    /// the map is saved with optimistic concurrency (another worker's update → redo).
    async fn gate(&self, job: &StepJob, spec: &ValidatedSpec, i: usize, success: StepSuccess) -> Result<OutcomeResult, StoreError> {
        let store = &self.engine.store;
        let policy = spec.gate_policy(i);
        // Most outputs have nothing to redact: a scan with a throwaway map says so without
        // touching the run's map. Only outputs with findings load and update it.
        let (verdict, _) = spec.gate_mesh().scan_json(&success.output, policy, &mut RedactionMap::new());
        if verdict.action == GateAction::Allow {
            let gate = serde_json::to_value(&verdict).expect("verdicts serialise");
            return Ok(OutcomeResult::Succeeded { output: success.output, cost: success.cost, gate: Some(gate) });
        }
        for _ in 0..MAX_REDACTION_RETRIES {
            let (len, map) = store.redactions(&job.workflow, &job.run).await?;
            let mut map = map.unwrap_or_default();
            let known = map.len();
            let (verdict, rewritten) = spec.gate_mesh().scan_json(&success.output, policy, &mut map);
            if map.len() != known {
                match store.save_redactions(&job.workflow, &job.run, len, &map).await {
                    Err(StoreError::Conflict { .. }) => continue,
                    other => other?,
                }
            }
            let gate = serde_json::to_value(&verdict).expect("verdicts serialise");
            return Ok(match verdict.action {
                GateAction::Allow => OutcomeResult::Succeeded { output: success.output, cost: success.cost, gate: Some(gate) },
                GateAction::Redact => {
                    OutcomeResult::Succeeded { output: rewritten.unwrap_or(Value::Null), cost: success.cost, gate: Some(gate) }
                }
                GateAction::Block => match spec.on_block(i) {
                    OnBlock::Fail => OutcomeResult::Failed {
                        error: StepError::permanent("gate_blocked", format!("output blocked by the gate mesh ({})", verdict.rule_ids().join(", "))),
                        gate: Some(gate),
                    },
                    OnBlock::Guidance => {
                        store.quarantine(&job.workflow, &job.run, &job.step, job.attempt, &success.output).await?;
                        OutcomeResult::Blocked { redacted: rewritten.unwrap_or(Value::Null), cost: success.cost, gate }
                    }
                },
            });
        }
        Err(StoreError::Unavailable(format!("the redaction map of run {} kept changing under concurrent updates", job.run)))
    }

    pub async fn execute(&self, job: StepJob) -> Result<(), JobRejected> {
        let reject = |reason: String| JobRejected::new(format!("{}/{}#{}: {reason}", job.run, job.step, job.attempt));
        let store = &self.engine.store;
        let meta = self.run_meta(&job.run).await.map_err(|e| reject(e.to_string()))?;
        if meta.workflow != job.workflow {
            return Err(reject("job names the wrong workflow for its run".into()));
        }
        let (recorded, input) = store
            .step_outcome_and_input(&job.workflow, &job.run, &job.step, job.attempt)
            .await
            .map_err(|e| reject(e.to_string()))?;
        // A duplicate delivery of an attempt already recorded: just make sure the run knows.
        if let Some(outcome) = recorded {
            self.notifier.step_finished(&job, &outcome).await;
            return Ok(());
        }
        let input = input.ok_or_else(|| reject("attempt has no recorded input".into()))?;
        let spec = self.engine.spec(&meta.workflow, &meta.spec_digest).await.map_err(|e| reject(e.to_string()))?;
        let Some((_, step)) = spec.step_by_id(&job.step) else {
            return Err(reject(format!("workflow has no step `{}`", job.step)));
        };
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
                    egress: spec.egress(),
                };
                match tokio::time::timeout(timeout + Duration::from_millis(50), handler.run(call)).await {
                    Ok(r) => r,
                    Err(_) => Err(StepError::retryable("timeout", format!("attempt did not finish within {}", humantime::format_duration(timeout)))),
                }
            }
        };
        let result = match result {
            Ok(success) => {
                let i = spec.dag().index_of(&job.step).expect("step exists");
                self.gate(&job, &spec, i, success).await.map_err(|e| reject(format!("gating the output: {e}")))?
            }
            Err(error) => OutcomeResult::Failed { error, gate: None },
        };
        let outcome = StepOutcome { step: job.step.clone(), attempt: job.attempt, started_at, finished_at: now_ms(), result };
        if let Err(e) = store.record_outcome(&job.workflow, &job.run, &outcome).await {
            // Not recorded: the run's timeout policy will re-dispatch the attempt.
            tracing::warn!(run = %job.run, step = %job.step, "outcome not recorded: {e}");
            return Ok(());
        }
        self.notifier.step_finished(&job, &outcome).await;
        Ok(())
    }
}

#[async_trait]
impl JobHandler for StepWorker {
    async fn handle(&self, job: StepJob) -> Result<(), JobRejected> {
        self.execute(job).await
    }
}
