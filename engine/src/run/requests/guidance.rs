//! Guidance: the gate mesh blocked a step's output. Shows the rules that fired and the
//! redacted output only; the human releases it as is, supplies a corrected value, or aborts.

use serde_json::json;

use crate::ids::RequestId;
use crate::run::{HumanMode, HumanRequestSpec, RunState};
use crate::spec::ValidatedSpec;

pub(crate) fn guidance_request(spec: &ValidatedSpec, state: &RunState, i: usize, id: RequestId) -> HumanRequestSpec {
    let step = spec.step(i);
    let s = &state.steps[i];
    let rules: Vec<String> = s
        .gate
        .as_ref()
        .and_then(|g| g["findings"].as_array())
        .map(|f| f.iter().filter(|f| f["action"] == "block").filter_map(|f| f["rule_id"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    HumanRequestSpec {
        id,
        mode: HumanMode::Guidance,
        step: Some(step.id.clone()),
        question: format!(
            "The output of step `{}` was blocked by the gate mesh ({}). Approve it as is, supply a corrected value, or abort the run?",
            step.id,
            if rules.is_empty() { "policy".to_string() } else { rules.join(", ") }
        ),
        context: json!({ "workflow": spec.spec().id, "step": step.id, "rules": rules, "redacted_output": s.blocked, "gate": s.gate }),
        // Only `code` and `api_call` outputs are gated, and those steps name no assignee.
        assignee: None,
        forbid_self_approval: false,
    }
}
