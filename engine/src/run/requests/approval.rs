//! Approval checkpoints (`approval` steps): the step's question (templates resolved), its
//! inputs and the outputs of the upstream steps it names as `context` — outputs are gated
//! before they enter the run, so what is shown is their redacted form. (Its escalation is
//! every mode's: `escalation.rs`.)

use serde_json::{Value, json};

use crate::expr::{self, Scope};
use crate::ids::RequestId;
use crate::run::{HumanMode, HumanRequestSpec, RunState};
use crate::spec::{ApprovalStep, StepKind, ValidatedSpec};

fn approval_of(spec: &ValidatedSpec, i: usize) -> Option<&ApprovalStep> {
    match &spec.step(i).kind {
        StepKind::Approval(a) => Some(a),
        _ => None,
    }
}

/// Ask the step's assignee its `question`, with the step's inputs and named upstream outputs.
pub(crate) fn approval_request(spec: &ValidatedSpec, state: &RunState, i: usize, id: RequestId) -> HumanRequestSpec {
    let step = spec.step(i);
    let scope = Scope { params: &state.params, steps: &state.scope };
    let approval = approval_of(spec, i);
    let question = approval.map_or("Approve?", |a| a.question.as_str());
    let question = match expr::render_str(question, &scope) {
        Ok(Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => question.to_string(),
    };
    let inputs =
        expr::render(&serde_json::to_value(&step.inputs).expect("inputs are JSON"), &scope).unwrap_or(Value::Null);
    let upstream: serde_json::Map<String, Value> = approval
        .map(|a| a.context.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| (s.to_string(), state.scope[s.as_str()]["output"].clone()))
        .collect();
    let mut context = json!({ "workflow": spec.spec().id, "step": step.id, "inputs": inputs });
    if !upstream.is_empty() {
        context["upstream"] = Value::Object(upstream);
    }
    HumanRequestSpec {
        id,
        mode: HumanMode::Approval,
        step: Some(step.id.clone()),
        question,
        context,
        assignee: approval.and_then(|a| a.assignee.clone()),
        forbid_self_approval: approval.is_some_and(|a| a.forbid_self_approval),
    }
}
