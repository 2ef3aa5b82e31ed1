//! Tool authorisation: an `llm` step's model asked for a tool marked `authorize: true` that the
//! run has not allowed yet. Shows the tool (name, description), the arguments and the model's
//! stated reason — both redacted by the gate mesh before they were journaled — and asks: allow
//! once, allow for the rest of this run, or deny with a reason the model receives.

use serde_json::json;

use crate::conversation::ToolAsk;
use crate::ids::RequestId;
use crate::run::{HumanMode, HumanRequestSpec, Slot};
use crate::spec::{StepKind, ValidatedSpec};

pub(crate) fn tool_authorisation_request(
    spec: &ValidatedSpec,
    slot: Slot,
    ask: &ToolAsk,
    id: RequestId,
) -> HumanRequestSpec {
    let step = spec.step(slot.step);
    let what = match slot.item {
        None => format!("step `{}`", step.id),
        Some(k) => format!("item {k} of step `{}`", step.id),
    };
    let tool = match &step.kind {
        StepKind::Llm(llm) => llm.tool(&ask.tool),
        _ => None,
    };
    HumanRequestSpec {
        id,
        mode: HumanMode::ToolAuthorisation,
        step: Some(slot.id(spec)),
        question: format!(
            "The model of {what} wants to call tool `{}`. Allow it once, allow it for the rest of this run, or deny it with a reason?",
            ask.tool
        ),
        context: json!({
            "workflow": spec.spec().id,
            "step": step.id,
            "tool": ask.tool,
            "description": tool.map(|t| t.description.as_str()),
            "arguments": ask.arguments,
            "reason": ask.reason,
            "call_id": ask.call_id,
            "turn": ask.turn,
            "because": ask.because,
        }),
        assignee: tool.and_then(|t| t.assignee.clone()),
        forbid_self_approval: tool.is_some_and(|t| t.forbid_self_approval),
    }
}
