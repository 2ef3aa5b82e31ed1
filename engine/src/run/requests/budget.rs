//! Budget extension: the run's budget cannot cover the next step. Asks for at least the
//! shortfall, with the cap, what was spent and what the step is estimated to cost.

use serde_json::json;

use crate::ids::RequestId;
use crate::run::apply::reservation;
use crate::run::{HumanMode, HumanRequestSpec, RunState, Slot};
use crate::spec::ValidatedSpec;

/// `slot`: what cannot be covered — a step, or the next item of a `for_each` step (the
/// request names the step).
pub(crate) fn budget_request(spec: &ValidatedSpec, state: &RunState, slot: Slot, id: RequestId) -> HumanRequestSpec {
    let step = spec.step(slot.step);
    let estimate = reservation(spec, state, slot);
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
            "cost_per_step": state.steps.iter().enumerate().filter(|(_, s)| !s.cost.is_zero()).map(|(j, s)| (spec.step(j).id.to_string(), json!(s.cost))).collect::<serde_json::Map<_, _>>(),
        }),
        assignee: None,
        forbid_self_approval: false,
    }
}

/// A sub-workflow (step `ask.step`) ran short of the budget this run granted it, and this run
/// cannot cover what it asks for: extend this run's budget by at least the shortfall.
pub(crate) fn child_budget_request(
    spec: &ValidatedSpec,
    state: &RunState,
    ask: &crate::run::ChildAsk,
    id: RequestId,
) -> HumanRequestSpec {
    let step = spec.step(ask.step);
    let b = &state.budget;
    let currency = spec.spec().budget.as_ref().map_or("USD", |b| b.currency.as_str());
    let needed = b.shortfall(ask.amount);
    HumanRequestSpec {
        id,
        mode: HumanMode::BudgetExtension,
        step: Some(step.id.clone()),
        question: format!(
            "Sub-workflow run {} of step `{}` needs {} more, and the run's budget ({} {currency}, {} spent, {} reserved) cannot cover it. Extend it by at least {}?",
            ask.child,
            step.id,
            ask.amount,
            b.limit().unwrap_or_default(),
            b.spent,
            b.reserved,
            needed
        ),
        context: json!({
            "workflow": spec.spec().id,
            "step": step.id,
            "child_run": ask.child,
            "cap": b.cap,
            "extended": b.extended,
            "spent": b.spent,
            "reserved": b.reserved,
            "estimate": ask.amount,
            "needed": needed,
            "currency": currency,
            "cost_per_step": state.steps.iter().enumerate().filter(|(_, s)| !s.cost.is_zero()).map(|(j, s)| (spec.step(j).id.to_string(), json!(s.cost))).collect::<serde_json::Map<_, _>>(),
        }),
        assignee: None,
        forbid_self_approval: false,
    }
}
