//! Building a run's receipt (`tollgate runs export RUN --receipt`, `GET /api/runs/{run}/receipt`):
//! the journal read with its hash chain, each entry as its detailed audit event
//! ([`crate::audit::detailed_event`]), everything from outside passed through the workflow's
//! gate mesh under a redact-everything policy with the run's redaction map (so `[EMAIL_1]` is
//! the placeholder the run view shows), signed with the service's key
//! ([`tollgate_engine::receipt`]).

use serde_json::{Value, json};
use tollgate_engine::gates::{GateAction, GateMesh, GatePolicy, RedactionMap};
use tollgate_engine::ids::RunId;
use tollgate_engine::receipt::{EntryInput, Receipt};
use tollgate_engine::run;
use tollgate_engine::store::StoreError;

use crate::service::ServiceError;
use crate::system::{Engine, now_ms};

/// The signed receipt of `run` (finished or not: it records the journal as it is now).
pub async fn build(engine: &Engine, run: &RunId) -> Result<Receipt, ServiceError> {
    let meta = engine.store.run_meta(run).await.map_err(|e| match e {
        StoreError::NotFound(_) => ServiceError::NotFound(run.to_string()),
        e => e.into(),
    })?;
    let spec = engine.spec(&meta.workflow, &meta.spec_digest).await.map_err(|e| ServiceError::Engine(e.to_string()))?;
    let (journal, chained) = engine.store.read_chained_journal(&meta.workflow, run).await?;
    engine.store.check_closed_journal(&meta.workflow, run, &journal, &chained).await?;
    let (_, map) = engine.store.redactions(&meta.workflow, run).await?;
    let mut redactor = Redactor { mesh: spec.gate_mesh(), policy: receipt_policy(), map: map.unwrap_or_default() };
    let mut redact = |v: &Value| redactor.redact(v);

    let entries: Vec<EntryInput<'_>> = journal
        .iter()
        .zip(&chained)
        .map(|(e, c)| EntryInput {
            kind: e.kind(),
            at: e.at(),
            chained: c,
            record: crate::audit::detailed_event(&spec, e, &mut redact),
        })
        .collect();
    let state = run::replay(&spec, run.clone(), &journal);
    let fire = match &meta.trigger {
        Some(t) => {
            let record = engine.store.fire_record(&meta.workflow, &t.fire).await?;
            Some(json!({
                "trigger": t.trigger,
                "fire": t.fire,
                "kind": t.kind,
                // The fire history expires; the run's metadata keeps the ids.
                "at": record.as_ref().map(|r| r.at),
                "source": record.as_ref().map(|r| redact(&json!(r.source))),
            }))
        }
        None => None,
    };
    let header = json!({
        "workflow": meta.workflow,
        "version": meta.version,
        "spec_digest": meta.spec_digest,
        "owner": meta.owner,
        "started_by": meta.started_by,
        "trigger": fire,
        "params": redact(&meta.params),
        "created_at": meta.created_at,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "status": state.status.label(),
        "failure": match &state.status {
            run::RunStatus::Failed { reason } => redact(&json!(reason)),
            _ => Value::Null,
        },
        "cost": state.budget.spent,
        "budget": state.budget.limit(),
        "steps": spec.spec().steps.iter().zip(&state.steps).map(|(s, st)| json!({"step": s.id, "type": s.ty().name(), "status": st.status.label(), "attempts": st.attempts.len()})).collect::<Vec<_>>(),
        "exported_at": now_ms(),
    });
    let signer = engine.store.receipt_signer().await?;
    Ok(Receipt::sign(&signer, run.as_str(), header, entries))
}

/// Every category the mesh knows is redacted in a receipt, whatever the workflow's policy let
/// through: a receipt is handed to people outside the run. Threat signals are not personal
/// data and stay as they are.
fn receipt_policy() -> GatePolicy {
    let mut policy = GatePolicy::default();
    for action in policy.actions.values_mut() {
        *action = GateAction::Redact;
    }
    policy.actions.insert("threat".into(), GateAction::Allow);
    policy.default_action = GateAction::Redact;
    policy.threat_action = GateAction::Allow;
    policy
}

struct Redactor<'a> {
    mesh: &'a GateMesh,
    policy: GatePolicy,
    map: RedactionMap,
}

impl Redactor<'_> {
    /// `v` with every finding replaced by its placeholder; withheld whole when the scan could
    /// not say where its findings are (oversize, time budget: fail closed).
    fn redact(&mut self, v: &Value) -> Value {
        if matches!(v, Value::Null | Value::Bool(_) | Value::Number(_)) {
            return v.clone();
        }
        let (verdict, rewritten) = self.mesh.scan_json(v, &self.policy, &mut self.map);
        match (verdict.action, rewritten) {
            (GateAction::Allow, _) => v.clone(),
            (_, Some(r)) => r,
            (_, None) => json!(format!("[withheld by the gate mesh: {}]", verdict.rule_ids().join(", "))),
        }
    }
}
