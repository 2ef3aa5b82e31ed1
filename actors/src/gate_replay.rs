//! Gate-policy replay over the store (`tollgate gates replay`): every gated output recorded in
//! the runs chosen (a workflow, a time window) is decided again under a new policy
//! ([`tollgate_engine::gates::replay`]); outputs are opened in memory only, and the report
//! holds ids, actions, categories and rule ids — never a value.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use tollgate_engine::gates::replay::{ReplayedVerdict, replay};
use tollgate_engine::gates::{GateAction, GatePolicy, GateVerdict};
use tollgate_engine::ids::{RunId, WorkflowId};
use tollgate_engine::run::Event;

use crate::service::ServiceError;
use crate::system::Engine;

/// Which runs to replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayScope {
    pub workflow: Option<WorkflowId>,
    /// Runs created at or after this time (ms since the epoch).
    pub since: Option<u64>,
}

/// One recorded output whose verdict the new policy changes.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayChange {
    pub run: RunId,
    pub workflow: WorkflowId,
    pub step: String,
    pub attempt: u32,
    #[serde(flatten)]
    pub verdict: ReplayedVerdict,
}

/// How a step's recorded outputs fare, old policy against new.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepReplay {
    pub workflow: String,
    pub step: String,
    pub outputs: usize,
    /// Counts of `allow`, `redact`, `block` as recorded and as replayed.
    pub recorded: BTreeMap<GateAction, usize>,
    pub replayed: BTreeMap<GateAction, usize>,
    pub changed: usize,
    /// Outputs not kept (blocked ones that failed their step): only their findings were re-decided.
    pub findings_only: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    pub runs: usize,
    pub outputs: usize,
    pub steps: Vec<StepReplay>,
    pub changes: Vec<ReplayChange>,
}

/// Replay `policy` over the recorded outputs of the runs in `scope`, newest run first.
pub async fn replay_policy(
    engine: &Engine,
    policy: &GatePolicy,
    scope: &ReplayScope,
) -> Result<ReplayReport, ServiceError> {
    let mut report = ReplayReport::default();
    let mut steps: BTreeMap<(String, String), StepReplay> = BTreeMap::new();
    let mut after: Option<RunId> = None;
    'pages: loop {
        let page = engine.store.run_page(after.as_ref(), 200).await?;
        for listing in &page.runs {
            let meta = &listing.meta;
            // Newest first: the window ends at the first older run.
            if scope.since.is_some_and(|since| meta.created_at < since) {
                break 'pages;
            }
            if scope.workflow.as_ref().is_some_and(|w| w != &meta.workflow) {
                continue;
            }
            let spec = engine
                .spec(&meta.workflow, &meta.spec_digest)
                .await
                .map_err(|e| ServiceError::Engine(e.to_string()))?;
            let journal = engine.store.read_journal(&meta.workflow, &meta.run).await?;
            report.runs += 1;
            for event in &journal {
                let Some((step, attempt, output, gate)) = recorded_output(event) else { continue };
                // Only verdicts of the mesh (a step without one may carry check results alone).
                let Ok(verdict) = serde_json::from_value::<GateVerdict>(gate.clone()) else { continue };
                let Some((_, s)) = spec.step_by_id(step) else { continue };
                let step_policy = match s.gates.as_ref().and_then(|g| g.policy.as_ref()) {
                    Some(o) => policy.with_override(o),
                    None => policy.clone(),
                };
                let r = replay(spec.gate_mesh(), &step_policy, output, &verdict);
                report.outputs += 1;
                let row = steps.entry((meta.workflow.to_string(), step.to_string())).or_insert_with(|| StepReplay {
                    workflow: meta.workflow.to_string(),
                    step: step.to_string(),
                    ..Default::default()
                });
                row.outputs += 1;
                *row.recorded.entry(r.recorded).or_default() += 1;
                *row.replayed.entry(r.replayed).or_default() += 1;
                row.findings_only += usize::from(!r.output_rescanned);
                if r.changed() {
                    row.changed += 1;
                    report.changes.push(ReplayChange {
                        run: meta.run.clone(),
                        workflow: meta.workflow.clone(),
                        step: step.to_string(),
                        attempt,
                        verdict: r,
                    });
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    report.steps = steps.into_values().collect();
    Ok(report)
}

/// A gated output the journal recorded: the step, the attempt, the output as recorded (none
/// for a block that failed the step: it was never kept) and the verdict.
fn recorded_output(e: &Event) -> Option<(&tollgate_engine::ids::StepId, u32, Option<&Value>, &Value)> {
    match e {
        Event::StepSucceeded { step, attempt, output, gate: Some(gate), .. } => {
            Some((step, *attempt, Some(output), gate))
        }
        Event::StepBlocked { step, attempt, redacted, gate, .. } => Some((step, *attempt, Some(redacted), gate)),
        Event::StepFailed { step, attempt, error, gate: Some(gate), .. } if error.code == "gate_blocked" => {
            Some((step, *attempt, None, gate))
        }
        _ => None,
    }
}
