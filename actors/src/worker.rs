//! The step worker: what runs when the queue delivers a job.
//!
//! Load the attempt's sealed input and the spec, CLAIM the attempt (first writer wins against
//! other deliveries and the run driver's fence: an attempt runs at most once, and never once
//! it was superseded or its run ended), run the step type's handler under its start-to-close
//! timeout while watching for the run's cancellation, record the outcome (first writer wins),
//! THEN notify the run. The job succeeds
//! towards the queue whenever the outcome is recorded, so the queue never retries on its own;
//! the run's retry policy decides. Only a job that cannot be processed at all is rejected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tollgate_engine::checks::{self, CheckOnBlock, CheckResult};
use tollgate_engine::conversation::{Suspension, ToolAsk};
use tollgate_engine::gates::{GateAction, GatePolicy, RedactionMap};
use tollgate_engine::ids::RunId;
use tollgate_engine::queue::StepJob;
use tollgate_engine::run::apply::step_timeout;
use tollgate_engine::spec::{OnBlock, ValidatedSpec};
use tollgate_engine::step::StepSuccess;
use tollgate_engine::step::{StepError, StepInvocation};
use tollgate_engine::store::{AttemptClaim, OutcomeResult, RunMeta, StepOutcome, StoreError};

use crate::notify::Notifier;
use crate::queue::{JobHandler, JobRejected};
use crate::system::{Engine, now_ms};

pub struct StepWorker {
    engine: Arc<Engine>,
    notifier: Arc<dyn Notifier>,
    /// Ends store retries when the process shuts down.
    shutdown: CancellationToken,
    /// Run metadata is immutable: cache it (bounded) so a run's steps don't each read it.
    metas: Mutex<HashMap<RunId, Arc<RunMeta>>>,
}

/// Entries kept in the run metadata cache before it starts over.
const META_CACHE: usize = 4096;
/// Attempts to save a run's redaction map against concurrent updates.
const MAX_REDACTION_RETRIES: usize = 16;
/// How often a running attempt checks whether its run was cancelled or has finished.
const STOP_POLL: Duration = Duration::from_millis(250);
/// Backoff bounds while the store is unavailable.
const STORE_RETRY_MIN: Duration = Duration::from_millis(50);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

impl StepWorker {
    pub fn new(engine: Arc<Engine>, notifier: Arc<dyn Notifier>, shutdown: CancellationToken) -> Self {
        Self { engine, notifier, shutdown, metas: Mutex::new(HashMap::new()) }
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
    /// the map is saved with optimistic concurrency (another worker's update → redo). `hold`:
    /// a blocked output is held or fails the step as `on_block` says; otherwise it is only
    /// rewritten (for text shown to a person, not recorded as an output).
    async fn gate(
        &self,
        job: &StepJob,
        spec: &ValidatedSpec,
        i: usize,
        success: StepSuccess,
        hold: bool,
        policy: &GatePolicy,
    ) -> Result<OutcomeResult, StoreError> {
        let store = &self.engine.store;
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
                GateAction::Allow => {
                    OutcomeResult::Succeeded { output: success.output, cost: success.cost, gate: Some(gate) }
                }
                GateAction::Redact => OutcomeResult::Succeeded {
                    output: rewritten.unwrap_or(Value::Null),
                    cost: success.cost,
                    gate: Some(gate),
                },
                GateAction::Block if !hold => {
                    OutcomeResult::Blocked { redacted: rewritten.unwrap_or(Value::Null), cost: success.cost, gate }
                }
                GateAction::Block => match spec.on_block(i) {
                    OnBlock::Fail => OutcomeResult::Failed {
                        error: StepError::permanent(
                            "gate_blocked",
                            format!("output blocked by the gate mesh ({})", verdict.rule_ids().join(", ")),
                        ),
                        gate: Some(gate),
                    },
                    OnBlock::Guidance => {
                        store.quarantine(&job.workflow, &job.run, &job.step, job.attempt, &success.output).await?;
                        OutcomeResult::Blocked { redacted: rewritten.unwrap_or(Value::Null), cost: success.cost, gate }
                    }
                },
            });
        }
        Err(StoreError::Unavailable(format!(
            "the redaction map of run {} kept changing under concurrent updates",
            job.run
        )))
    }

    /// The tool call a human is asked to authorise, as they may see it: its arguments and the
    /// model's stated reason through the step's gate mesh (redacted; what the mesh would block
    /// is shown as its placeholders too, since the call has not run and the person decides on it).
    async fn gate_ask(
        &self,
        job: &StepJob,
        spec: &ValidatedSpec,
        i: usize,
        mut ask: ToolAsk,
    ) -> Result<ToolAsk, StoreError> {
        let gated = self
            .redact(
                job,
                spec,
                i,
                serde_json::json!({ "arguments": ask.arguments, "reason": ask.reason }),
                spec.gate_policy(i),
            )
            .await?;
        ask.arguments = gated["arguments"].clone();
        ask.reason = gated["reason"].as_str().unwrap_or_default().to_owned();
        Ok(ask)
    }

    /// `shown` as a person may see it: through the step's gate mesh, redacted (what the mesh
    /// would block is shown as its placeholders too).
    async fn redact(
        &self,
        job: &StepJob,
        spec: &ValidatedSpec,
        i: usize,
        shown: Value,
        policy: &GatePolicy,
    ) -> Result<Value, StoreError> {
        Ok(match self.gate(job, spec, i, StepSuccess::new(shown.clone(), Default::default()), false, policy).await? {
            OutcomeResult::Succeeded { output, .. } => output,
            OutcomeResult::Blocked { redacted, .. } => redacted,
            _ => shown,
        })
    }

    /// Put the check results on the step's audit record (beside the gate verdict) and, when a
    /// check failed, hold the output for guidance or fail the step, as `on_block` says.
    async fn apply_checks(
        &self,
        job: &StepJob,
        gated: OutcomeResult,
        on_block: CheckOnBlock,
        results: Vec<CheckResult>,
    ) -> Result<OutcomeResult, StoreError> {
        let passed = checks::all_passed(&results);
        let failures = checks::describe_failures(&results);
        let with = |gate: Option<Value>| {
            let mut gate = gate.unwrap_or_else(|| serde_json::json!({ "action": "allow", "findings": [] }));
            gate["checks"] = serde_json::to_value(&results).expect("check results serialise");
            gate
        };
        Ok(match gated {
            OutcomeResult::Succeeded { output, cost, gate } if !passed => match on_block {
                CheckOnBlock::Guidance => {
                    // What is held is what the mesh let through (placeholders for its findings),
                    // and that is also what the human sees.
                    self.engine.store.quarantine(&job.workflow, &job.run, &job.step, job.attempt, &output).await?;
                    OutcomeResult::Blocked { redacted: output, cost, gate: with(gate) }
                }
                CheckOnBlock::Retry | CheckOnBlock::Fail => OutcomeResult::Failed {
                    error: StepError::permanent("check_failed", format!("failed checks: {failures}")),
                    gate: Some(with(gate)),
                },
            },
            OutcomeResult::Succeeded { output, cost, gate } => {
                OutcomeResult::Succeeded { output, cost, gate: Some(with(gate)) }
            }
            OutcomeResult::Blocked { redacted, cost, gate } => {
                OutcomeResult::Blocked { redacted, cost, gate: with(Some(gate)) }
            }
            OutcomeResult::Failed { error, gate } => OutcomeResult::Failed { error, gate: Some(with(gate)) },
            held @ (OutcomeResult::AwaitingAuthorisation { .. } | OutcomeResult::PromptHeld { .. }) => held,
        })
    }

    pub async fn execute(&self, job: StepJob) -> Result<(), JobRejected> {
        let reject = |reason: String| JobRejected::new(format!("{}/{}#{}: {reason}", job.run, job.step, job.attempt));
        let store = &self.engine.store;
        let meta =
            self.retrying("reading the run", || self.run_meta(&job.run)).await.map_err(|e| reject(e.to_string()))?;
        if meta.workflow != job.workflow {
            return Err(reject("job names the wrong workflow for its run".into()));
        }
        let pre = self
            .retrying("reading the attempt", || {
                store.attempt_preflight(&job.workflow, &job.run, &job.step, job.attempt)
            })
            .await
            .map_err(|e| reject(e.to_string()))?;
        // A duplicate delivery of an attempt already recorded: make sure the run knows — unless
        // a delivery in this process recorded it (eager dispatch runs an attempt while the
        // queue still holds its job): that one tells the run right after recording, and telling
        // it again would wake a run that has since gone to sleep waiting for a person.
        if let Some(outcome) = pre.outcome {
            let ours =
                matches!(&pre.claim, Some(AttemptClaim::Started { worker, .. }) if *worker == self.engine.instance);
            if !ours {
                self.notifier.step_finished(&job, &outcome).await;
            }
            return Ok(());
        }
        // Claimed by another delivery of this job, or fenced by the run driver: not ours to run.
        if let Some(claim) = pre.claim {
            tracing::debug!(run = %job.run, step = %job.step, attempt = job.attempt, ?claim, "attempt already claimed; not started");
            return Ok(());
        }
        if let Some(reason) = pre.stop {
            tracing::debug!(run = %job.run, step = %job.step, attempt = job.attempt, "not started: {reason}");
            return Ok(());
        }
        let input = pre.input.ok_or_else(|| reject("attempt has no recorded input".into()))?;
        let spec = self.engine.spec(&meta.workflow, &meta.spec_digest).await.map_err(|e| reject(e.to_string()))?;
        // A step, or an item of a `for_each` step (`step.k`): it runs as its step does.
        let Some(i) = tollgate_engine::run::Slot::of(&spec, &job.step).map(|slot| slot.step) else {
            return Err(reject(format!("workflow has no step `{}`", job.step)));
        };
        let step = spec.step(i);
        // Claim the attempt (first writer wins): from here on it has started, and its
        // start-to-close clock runs. Losing means another delivery or the run driver's fence won.
        let started_at = now_ms();
        let claim = AttemptClaim::Started {
            worker: self.engine.instance.clone(),
            at: started_at,
            token: ulid::Ulid::generate().to_string(),
        };
        let lost = self
            .retrying("claiming the attempt", || {
                store.claim_attempt(&job.workflow, &job.run, &job.step, job.attempt, &claim)
            })
            .await
            .map_err(|e| reject(e.to_string()))?;
        // Our own claim, written before its reply was lost to an outage, is found on the retry.
        if let Some(winner) = lost.filter(|winner| *winner != claim) {
            tracing::debug!(run = %job.run, step = %job.step, attempt = job.attempt, ?winner, "lost the claim; not started");
            return Ok(());
        }
        let timeout = step_timeout(&spec, i);
        let result = match self.engine.handlers.get(&step.ty()) {
            None => Err(StepError::permanent(
                "no_handler",
                format!("no handler for step type `{}` in this process", step.ty().name()),
            )),
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
                // The handler's future is dropped (its HTTP request aborted, its script
                // interrupted) when the attempt times out or its run is cancelled or finishes.
                tokio::select! {
                    r = tokio::time::timeout(timeout, handler.run(call)) => match r {
                        Ok(r) => r,
                        Err(_) => Err(StepError::retryable("timeout", format!("attempt did not finish within {}", humantime::format_duration(timeout)))),
                    },
                    reason = self.stopped(&job) => Err(StepError::permanent("cancelled", format!("abandoned: {reason}"))),
                }
            }
        };
        let result = match result {
            Ok(StepSuccess { suspend: Some(Suspension::ToolAuthorisation(ask)), cost, .. }) => {
                // A tool call waits for a human: what the request shows (the arguments and the
                // model's reason) passes the gate mesh first, with the run's redaction map.
                let ask = self
                    .gate_ask(&job, &spec, i, ask)
                    .await
                    .map_err(|e| reject(format!("gating the tool call: {e}")))?;
                OutcomeResult::AwaitingAuthorisation { ask, cost }
            }
            Ok(StepSuccess { suspend: Some(Suspension::PromptGuidance(mut hold)), .. }) => {
                // The flagged text is shown to a person: through the gate mesh first — personal
                // data and secrets redacted, the injection itself left readable (it is what the
                // person judges).
                let policy = GatePolicy { threat_action: GateAction::Allow, ..spec.gate_policy(i).clone() };
                let shown = self
                    .redact(&job, &spec, i, serde_json::json!(hold.flagged), &policy)
                    .await
                    .map_err(|e| reject(format!("gating the prompt finding: {e}")))?;
                hold.flagged = serde_json::from_value(shown).unwrap_or_default();
                OutcomeResult::PromptHeld { hold }
            }
            Ok(success) => {
                // Checks look at the output as the step produced it; the gate mesh then decides
                // what of it may be recorded, and a failed check holds or fails that.
                let checks = step.evaluate_checks(&success.output, &meta.params, spec.gate_mesh(), spec.gate_policy(i));
                let gated = self
                    .gate(&job, &spec, i, success, true, spec.gate_policy(i))
                    .await
                    .map_err(|e| reject(format!("gating the output: {e}")))?;
                match checks {
                    None => gated,
                    Some((on_block, results)) => self
                        .apply_checks(&job, gated, on_block, results)
                        .await
                        .map_err(|e| reject(format!("holding the output: {e}")))?,
                }
            }
            Err(error) => OutcomeResult::Failed { error: gate_error_text(&spec, i, error), gate: None },
        };
        let outcome =
            StepOutcome { step: job.step.clone(), attempt: job.attempt, started_at, finished_at: now_ms(), result };
        // Never dropped: a store outage delays the outcome, it does not lose it. Only a shutdown
        // ends the wait, and then the run driver closes the attempt as interrupted.
        self.retrying("recording the outcome", || store.record_outcome(&job.workflow, &job.run, &outcome))
            .await
            .map_err(|e| reject(format!("recording the outcome: {e}")))?;
        self.notifier.step_finished(&job, &outcome).await;
        Ok(())
    }

    /// Resolves when the attempt's run is cancelled or has finished, or the run gave up on the
    /// attempt (polled from the store, so it works whichever process drives the run; a paused
    /// process sees it at its first poll after waking). Never resolves if the store cannot say.
    async fn stopped(&self, job: &StepJob) -> String {
        loop {
            tokio::time::sleep(STOP_POLL).await;
            if let Ok(Some(reason)) =
                self.engine.store.attempt_stop_reason(&job.workflow, &job.run, &job.step, job.attempt).await
            {
                return reason;
            }
        }
    }

    /// Run a store operation, retrying while the store is unavailable (with backoff, until
    /// the process shuts down). Other errors are returned at once.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut delay = STORE_RETRY_MIN;
        let mut warned = false;
        loop {
            match op().await {
                Err(StoreError::Unavailable(e)) => {
                    if !warned {
                        tracing::warn!("store unavailable while {what}; retrying until it is back: {e}");
                        warned = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.cancelled() => return Err(StoreError::Unavailable(format!("{e} (shutting down)"))),
                    }
                    delay = (delay * 2).min(STORE_RETRY_MAX);
                }
                other => {
                    if warned {
                        tracing::info!("store available again; {what} done");
                    }
                    return other;
                }
            }
        }
    }
}

/// Error text (HTTP response bodies, script console output) passes the step's gate mesh
/// before it is journaled or shown: findings are replaced by their placeholders, and text
/// the mesh cannot vouch for (oversize, time budget) is withheld.
fn gate_error_text(spec: &ValidatedSpec, i: usize, mut error: StepError) -> StepError {
    let out = spec.gate_mesh().scan_text(&error.message, spec.gate_policy(i), &mut RedactionMap::new());
    if out.verdict.action != GateAction::Allow {
        error.message = out.redacted.unwrap_or_else(|| {
            format!("[error text withheld by the gate mesh: {}]", out.verdict.rule_ids().join(", "))
        });
    }
    error
}

#[async_trait]
impl JobHandler for StepWorker {
    async fn handle(&self, job: StepJob) -> Result<(), JobRejected> {
        self.execute(job).await
    }
}
