//! The one fire path every trigger uses.
//!
//! 1. The fire's dedup key is **claimed** atomically before any work (`SET NX PX` on Redis, an
//!    insert-if-absent row on SQLite) for the trigger's dedup window. The claim names the run
//!    this fire will start, chosen now.
//! 2. Lost claim: the fire is a duplicate, recorded `skipped_duplicate` — unless the winner's
//!    run still does not exist [`CLAIM_GRACE`] after its claim (its process died between claim
//!    and run): then this fire starts that very run id, and the store's first-writer-wins on
//!    run ids keeps it to one run.
//! 3. Won claim: the trigger's `params:` are rendered over the payload, the run is recorded
//!    (durable, with the trigger and fire that started it) and its actor asked for.
//! 4. The fire is appended to the workflow's encrypted history (started / failed /
//!    skipped_duplicate), with the history's TTL.
//! 5. Only then does [`FirePath::fire`] return, and the source acknowledge (HTTP answer, IMAP
//!    flag, file move). If the store is unavailable before the run was recorded the claim is
//!    given back and [`FireError`] returned: the source must not acknowledge, and a redelivery
//!    fires again.

use std::time::Duration;

use tollgate_engine::ids::{FireId, RunId};
use tollgate_engine::spec::ValidatedSpec;
use tollgate_engine::spec::triggers::{TriggerSpec, render_params};
use tollgate_engine::store::StoreError;
use tollgate_engine::trigger::{Fire, FireClaim, FireOutcome, FireRecord, RunTrigger};

use crate::service::{ServiceError, Tollgate};
use crate::supervisor::SupervisorMsg;
use crate::system::now_ms;
use crate::triggers::board::TriggerBoard;

/// How long a claim whose run does not exist is left to its fire before a later fire with the
/// same key finishes the job (the first fire's process died between claim and run).
pub const CLAIM_GRACE: Duration = Duration::from_secs(60);
/// Attempts at writing a history entry while the store reports itself unavailable.
const RECORD_TRIES: u32 = 4;

/// What became of a fire; each is recorded in the history before it is returned.
#[derive(Clone, Debug, PartialEq)]
pub enum FireResult {
    Started {
        fire: FireId,
        run: RunId,
    },
    Duplicate {
        fire: FireId,
        of: FireId,
    },
    /// Recorded as a failed fire (bad payload, parameters that do not bind…): a redelivery
    /// of the same key is a duplicate, not a retry.
    Failed {
        fire: FireId,
        error: String,
    },
}

impl FireResult {
    pub fn fire(&self) -> &FireId {
        match self {
            FireResult::Started { fire, .. } | FireResult::Duplicate { fire, .. } | FireResult::Failed { fire, .. } => {
                fire
            }
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            FireResult::Started { .. } => "started",
            FireResult::Duplicate { .. } => "skipped_duplicate",
            FireResult::Failed { .. } => "failed",
        }
    }
}

/// Nothing durable came of the fire (the store is unavailable): do not acknowledge it.
#[derive(Debug, thiserror::Error)]
#[error("the fire could not be recorded: {0}")]
pub struct FireError(pub String);

impl From<StoreError> for FireError {
    fn from(e: StoreError) -> Self {
        FireError(e.to_string())
    }
}

/// The fire path: shared by every trigger of a process.
#[derive(Clone)]
pub struct FirePath {
    tollgate: Tollgate,
    history_ttl: Duration,
    board: TriggerBoard,
}

impl FirePath {
    pub fn new(tollgate: Tollgate, history_ttl: Duration, board: TriggerBoard) -> Self {
        Self { tollgate, history_ttl, board }
    }

    pub fn tollgate(&self) -> &Tollgate {
        &self.tollgate
    }

    /// Fire `trigger` of `spec`: claim, start, record — then return (see the module doc).
    pub async fn fire(&self, spec: &ValidatedSpec, trigger: &TriggerSpec, fire: Fire) -> Result<FireResult, FireError> {
        let store = &self.tollgate.engine.store;
        let wf = &spec.spec().id;
        let id = FireId::generate();
        let claim = FireClaim { fire: id.clone(), run: RunId::generate(), at: now_ms() };
        let window = trigger.dedup_window.unwrap_or(self.history_ttl);
        // The workflow's key exists: the trigger's actor registered the spec when it started.
        let result = match store.claim_fire(wf, &fire.trigger, &fire.key, &claim, window).await? {
            None => self.start(spec, trigger, &fire, &id, &claim.run).await?,
            Some(first) if self.abandoned(&first).await? => {
                tracing::warn!(workflow = %wf, trigger = %fire.trigger, fire = %first.fire, "a fire's run was never recorded; starting it now");
                match self.start(spec, trigger, &fire, &id, &first.run).await? {
                    // Another fire finished the abandoned one first.
                    FireResult::Failed { error, .. } if error == RUN_EXISTS => {
                        FireResult::Duplicate { fire: id.clone(), of: first.fire }
                    }
                    other => other,
                }
            }
            Some(first) => FireResult::Duplicate { fire: id.clone(), of: first.fire },
        };
        let outcome = match &result {
            FireResult::Started { run, .. } => FireOutcome::Started { run: run.clone() },
            FireResult::Duplicate { of, .. } => FireOutcome::SkippedDuplicate { of: of.clone() },
            FireResult::Failed { error, .. } => FireOutcome::Failed { error: error.clone() },
        };
        let record = FireRecord {
            fire: id,
            workflow: wf.clone(),
            trigger: fire.trigger.clone(),
            kind: trigger.kind().name().to_string(),
            key: fire.key.clone(),
            at: fire.at,
            recorded_at: now_ms(),
            source: fire.source.clone(),
            outcome,
        };
        self.record(&record).await?;
        self.board.fired(wf, &fire.trigger, &result);
        Ok(result)
    }

    /// Write a history entry, riding out a brief store outage: once a run was recorded, a
    /// failure here makes the source retry, and the retry is then (rightly) a duplicate —
    /// but the history would lack the fire that started the run.
    async fn record(&self, record: &FireRecord) -> Result<(), FireError> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..RECORD_TRIES - 1 {
            match self.tollgate.engine.store.record_fire(record, self.history_ttl).await {
                Err(StoreError::Unavailable(e)) => tracing::debug!(error = %e, "recording a fire; retrying"),
                other => return other.map_err(Into::into),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Ok(self.tollgate.engine.store.record_fire(record, self.history_ttl).await?)
    }

    /// Record a fire that cannot start a run (its input does not parse or validate) as failed,
    /// without claiming its key: nothing was started that a redelivery could duplicate.
    pub async fn record_failed(
        &self,
        spec: &ValidatedSpec,
        trigger: &TriggerSpec,
        fire: Fire,
        error: String,
    ) -> Result<FireResult, FireError> {
        let result = FireResult::Failed { fire: FireId::generate(), error: error.clone() };
        let record = FireRecord {
            fire: result.fire().clone(),
            workflow: spec.spec().id.clone(),
            trigger: fire.trigger.clone(),
            kind: trigger.kind().name().to_string(),
            key: fire.key,
            at: fire.at,
            recorded_at: now_ms(),
            source: fire.source,
            outcome: FireOutcome::Failed { error },
        };
        self.record(&record).await?;
        self.board.fired(&spec.spec().id, &fire.trigger, &result);
        Ok(result)
    }

    /// The claim's run does not exist, and its fire had time enough to create it.
    async fn abandoned(&self, first: &FireClaim) -> Result<bool, FireError> {
        if now_ms().saturating_sub(first.at) < CLAIM_GRACE.as_millis() as u64 {
            return Ok(false);
        }
        match self.tollgate.engine.store.run_workflow(&first.run).await {
            Ok(_) => Ok(false),
            Err(StoreError::NotFound(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Render the parameters, record the run, ask for its actor.
    async fn start(
        &self,
        spec: &ValidatedSpec,
        trigger: &TriggerSpec,
        fire: &Fire,
        id: &FireId,
        run: &RunId,
    ) -> Result<FireResult, FireError> {
        let failed = |error: String| Ok(FireResult::Failed { fire: id.clone(), error });
        let params = match render_params(trigger, &fire.payload, &fire.scope(id)) {
            Ok(p) => p,
            Err(e) => return failed(format!("trigger params: {e}")),
        };
        let started_by =
            RunTrigger { trigger: fire.trigger.clone(), fire: id.clone(), kind: trigger.kind().name().to_string() };
        match self.tollgate.create_run(spec, &params, run, Some(started_by), None).await {
            Ok(()) => {}
            Err(ServiceError::Spec(e)) => {
                let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
                return failed(format!("invalid parameters: {}", problems.join("; ")));
            }
            Err(ServiceError::Store(StoreError::Forbidden(m))) if m.contains("already exists") => {
                return failed(RUN_EXISTS.into());
            }
            Err(ServiceError::Store(StoreError::Forbidden(m))) => return failed(m),
            Err(e) => {
                // Nothing was recorded: give the key back so a redelivery can fire again.
                let wf = &spec.spec().id;
                if let Err(release) = self.tollgate.engine.store.release_fire_claim(wf, &fire.trigger, &fire.key).await
                {
                    tracing::warn!(error = %release, "could not release a fire's claim; a redelivery after the grace period will start its run");
                }
                return Err(FireError(e.to_string()));
            }
        }
        // The run is durable (and listed as active): start its actor without waiting for it.
        // Should this message be lost, the next `serve` recovers the run.
        let _ = self.tollgate.supervisor.send_message(SupervisorMsg::Ensure { run: run.clone(), reply: None });
        Ok(FireResult::Started { fire: id.clone(), run: run.clone() })
    }
}

const RUN_EXISTS: &str = "the run of this fire exists already";
