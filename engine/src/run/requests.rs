//! The requests a run makes of humans: approval checkpoints, guidance on a blocked output,
//! budget extensions — the smallest question, with the context needed to answer it.

use serde_json::{json, Value};

use crate::expr::{self, Scope};
use crate::ids::RequestId;
use crate::run::apply::reservation;
use crate::run::{HumanMode, HumanRequestSpec, RunState};
use crate::spec::{StepKind, ValidatedSpec};

/// Ask the step's assignee its `question` (templates resolved), with the step's inputs as context.
pub(crate) fn approval_request(spec: &ValidatedSpec, state: &RunState, i: usize, id: RequestId) -> HumanRequestSpec {
    let step = spec.step(i);
    let scope = Scope { params: &state.params, steps: &state.scope };
    let approval = match &step.kind {
        StepKind::Approval(a) => Some(a),
        _ => None,
    };
    let question = approval.map_or("Approve?", |a| a.question.as_str());
    let question = match expr::render_str(question, &scope) {
        Ok(Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => question.to_string(),
    };
    let inputs = expr::render(&serde_json::to_value(&step.inputs).expect("inputs are JSON"), &scope).unwrap_or(Value::Null);
    HumanRequestSpec {
        id,
        mode: HumanMode::Approval,
        step: Some(step.id.clone()),
        question,
        context: json!({ "workflow": spec.spec().id, "step": step.id, "inputs": inputs }),
        assignee: approval.and_then(|a| a.assignee.clone()),
    }
}

/// Ask a human about an output the gate mesh blocked: release it as is, supply a corrected
/// value, or abort. The question shows the rules that fired and the redacted output only.
pub(crate) fn guidance_request(spec: &ValidatedSpec, state: &RunState, i: usize, id: RequestId) -> HumanRequestSpec {
    let step = spec.step(i);
    let s = &state.steps[i];
    let rules: Vec<String> = s
        .gate
        .as_ref()
        .and_then(|g| g["findings"].as_array())
        .map(|f| f.iter().filter(|f| f["action"] == "block").filter_map(|f| f["rule_id"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let failed_checks: Vec<Value> =
        s.gate.as_ref().and_then(|g| g["checks"].as_array()).map(|c| c.iter().filter(|c| c["passed"] == false).cloned().collect()).unwrap_or_default();
    let by = if failed_checks.is_empty() {
        format!("by the gate mesh ({})", if rules.is_empty() { "policy".to_string() } else { rules.join(", ") })
    } else {
        let names: Vec<&str> = failed_checks.iter().filter_map(|c| c["name"].as_str()).collect();
        format!("by its checks ({})", names.join(", "))
    };
    HumanRequestSpec {
        id,
        mode: HumanMode::Guidance,
        step: Some(step.id.clone()),
        question: format!(
            "The output of step `{}` was blocked {by}. Approve it as is, supply a corrected value, or abort the run?",
            step.id,
        ),
        context: json!({ "workflow": spec.spec().id, "step": step.id, "rules": rules, "failed_checks": failed_checks, "redacted_output": s.blocked, "gate": s.gate }),
        // Only job steps (`code`, `api_call`, `llm`) are gated or checked, and they name no assignee.
        assignee: None,
    }
}

pub(crate) fn budget_request(spec: &ValidatedSpec, state: &RunState, i: usize, id: RequestId) -> HumanRequestSpec {
    let step = spec.step(i);
    let estimate = reservation(spec, state, i);
    let b = &state.budget;
    let currency = spec.spec().budget.as_ref().map_or("USD", |b| b.currency.as_str());
    let needed = b.shortfall(estimate);
    HumanRequestSpec {
        id,
        mode: HumanMode::BudgetExtension,
        step: Some(step.id.clone()),
        question: format!(
            "The run's budget ({} {currency}, {} spent) cannot cover step `{}` (estimated {}). Extend it by at least {}?",
            b.limit().unwrap_or_default(),
            b.spent,
            step.id,
            estimate,
            needed
        ),
        context: json!({
            "workflow": spec.spec().id,
            "step": step.id,
            "cap": b.cap,
            "extended": b.extended,
            "spent": b.spent,
            "reserved": b.reserved,
            "estimate": estimate,
            "needed": needed,
            "currency": currency,
        }),
        assignee: None,
    }
}
