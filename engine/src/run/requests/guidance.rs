//! Guidance: the gate mesh or the step's own checks blocked its output. Shows the rules and
//! checks that failed and the redacted output only; the human releases it as is, supplies a corrected value, or aborts.

use serde_json::{Value, json};

use crate::conversation::PromptHold;
use crate::ids::RequestId;
use crate::run::{HumanMode, HumanRequestSpec, RunState, Slot};
use crate::spec::ValidatedSpec;

/// Guidance on a prompt the injection classifier flagged (`on_injection: guidance`): which
/// message, the signals, the flagged text (redacted); release it as is (the call is made),
/// supply the step's output instead, or abort.
pub(crate) fn prompt_guidance_request(
    spec: &ValidatedSpec,
    slot: Slot,
    hold: &PromptHold,
    id: RequestId,
) -> HumanRequestSpec {
    let step = spec.step(slot.step);
    let what = match slot.item {
        None => format!("step `{}`", step.id),
        Some(k) => format!("item {k} of step `{}`", step.id),
    };
    HumanRequestSpec {
        id,
        mode: HumanMode::Guidance,
        step: Some(slot.id(spec)),
        question: format!(
            "The prompt of {what} looks like a prompt injection ({}). Send it to the model as is, supply the step's output instead, or abort the run?",
            hold.signals.join(", ")
        ),
        context: json!({ "workflow": spec.spec().id, "step": step.id, "prompt_finding": hold }),
        assignee: None,
        forbid_self_approval: false,
    }
}

pub(crate) fn guidance_request(spec: &ValidatedSpec, state: &RunState, slot: Slot, id: RequestId) -> HumanRequestSpec {
    let step = spec.step(slot.step);
    let Some(s) = state.slot(slot) else { unreachable!("a guidance request is for a slot of the run") };
    let slot_id = slot.id(spec);
    let what = match slot.item {
        None => format!("step `{}`", step.id),
        Some(k) => format!("item {k} of step `{}`", step.id),
    };
    let rules: Vec<String> = s
        .gate
        .as_ref()
        .and_then(|g| g["findings"].as_array())
        .map(|f| {
            f.iter()
                .filter(|f| f["action"] == "block")
                .filter_map(|f| f["rule_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let failed_checks: Vec<Value> = s
        .gate
        .as_ref()
        .and_then(|g| g["checks"].as_array())
        .map(|c| c.iter().filter(|c| c["passed"] == false).cloned().collect())
        .unwrap_or_default();
    let by = if failed_checks.is_empty() {
        format!("by the gate mesh ({})", if rules.is_empty() { "policy".to_string() } else { rules.join(", ") })
    } else {
        let names: Vec<&str> = failed_checks.iter().filter_map(|c| c["name"].as_str()).collect();
        format!("by its checks ({})", names.join(", "))
    };
    HumanRequestSpec {
        id,
        mode: HumanMode::Guidance,
        step: Some(slot_id.clone()),
        question: format!(
            "The output of {what} was blocked {by}. Approve it as is, supply a corrected value, or abort the run?"
        ),
        context: json!({ "workflow": spec.spec().id, "step": slot_id, "item": slot.item, "rules": rules, "failed_checks": failed_checks, "redacted_output": s.blocked, "gate": s.gate }),
        // Only job steps (`code`, `api_call`, `llm`…) are gated or checked, and they name no assignee.
        assignee: None,
        forbid_self_approval: false,
    }
}
