//! Escalation of open requests, for every mode (see `spec::escalation` for the ladders and
//! their legal defaults): when each level is due — counted from when the request was made —,
//! which ladder a timer belongs to, and the decision a `default` applies to a request of its
//! mode. A step's or item's request escalates along its step's `escalate:`; the budget
//! extension a person is asked for along the budget's (a sub-workflow asking its parent has no
//! person to escalate to).

use crate::ids::RequestId;
use crate::run::{Decision, HumanMode, RunState, Slot, StepState, StepStatus, Timer};
use crate::spec::{DefaultDecision, DefaultWord, Escalation, StepKind, ValidatedSpec};

/// The reason the model is given when a tool call is denied by the policy without one.
const DENIED_BY_POLICY: &str = "nobody authorised this call in time, so the escalation policy denied it";

/// The mode of the request `s` (a step or item of step `i`) waits on, if it waits on one.
pub fn slot_mode(spec: &ValidatedSpec, i: usize, s: &StepState) -> Option<HumanMode> {
    if !matches!(s.status, StepStatus::WaitingHuman { .. }) {
        return None;
    }
    Some(if s.tool_ask.is_some() {
        HumanMode::ToolAuthorisation
    } else if s.blocked.is_some() || s.prompt_hold.is_some() {
        HumanMode::Guidance
    } else if matches!(spec.step(i).kind, StepKind::Approval(_)) {
        HumanMode::Approval
    } else {
        return None;
    })
}

/// Whether the run's open budget request is a person's to answer (not its parent run's).
pub(crate) fn budget_asks_a_person(spec: &ValidatedSpec, state: &RunState) -> bool {
    state.budget_request.is_some() && !crate::run::subworkflow::asks_parent(spec, state)
}

/// The ladder a request of `slot` climbs: its step's `escalate:`.
fn slot_ladder(spec: &ValidatedSpec, slot: Slot) -> &[Escalation] {
    &spec.step(slot.step).escalate
}

fn budget_ladder(spec: &ValidatedSpec) -> &[Escalation] {
    spec.spec().budget.as_ref().map_or(&[], |b| b.escalate.as_slice())
}

/// The escalation level an `Escalate` or `EscalateBudget` timer stands for, and the mode of
/// request it escalates (for the audit and the request card).
pub fn escalation_level<'s>(spec: &'s ValidatedSpec, timer: &Timer) -> Option<&'s Escalation> {
    match timer {
        Timer::Escalate { step, level } => slot_ladder(spec, Slot::of(spec, step)?).get(*level as usize),
        Timer::EscalateBudget { level } => budget_ladder(spec).get(*level as usize),
        _ => None,
    }
}

/// When escalation `level` of the request `slot` waits on is due, if its step has that level.
pub(crate) fn escalation_at(spec: &ValidatedSpec, state: &RunState, slot: Slot, level: u32) -> Option<u64> {
    let e = slot_ladder(spec, slot).get(level as usize)?;
    Some(state.slot(slot)?.asked_at?.saturating_add(e.after.as_millis() as u64))
}

/// When escalation `level` of the open budget request is due.
pub(crate) fn budget_escalation_at(spec: &ValidatedSpec, state: &RunState, level: u32) -> Option<u64> {
    if !budget_asks_a_person(spec, state) {
        return None;
    }
    let e = budget_ladder(spec).get(level as usize)?;
    Some(state.budget_asked_at?.saturating_add(e.after.as_millis() as u64))
}

/// The next escalation timer of every open request: of each step and item waiting for a
/// person, and of the budget.
pub fn escalation_timers<'a>(spec: &'a ValidatedSpec, state: &'a RunState) -> impl Iterator<Item = (Timer, u64)> + 'a {
    let slots = state.slots().filter_map(move |(slot, s)| {
        slot_mode(spec, slot.step, s)?;
        let at = escalation_at(spec, state, slot, s.escalated)?;
        Some((Timer::Escalate { step: slot.id(spec), level: s.escalated }, at))
    });
    let budget = budget_escalation_at(spec, state, state.budget_escalated)
        .map(|at| (Timer::EscalateBudget { level: state.budget_escalated }, at));
    slots.chain(budget)
}

/// Defaults that came due but whose decision is not journaled yet (requests still open after
/// their ladder's `default` fired): the store keeps whichever decision won, so doing it again
/// is harmless.
pub(crate) fn defaults_due(spec: &ValidatedSpec, state: &RunState) -> Vec<(RequestId, Decision, String)> {
    let mut out = Vec::new();
    for (slot, s) in state.slots() {
        let (Some(mode), StepStatus::WaitingHuman { request }) = (slot_mode(spec, slot.step, s), &s.status) else {
            continue;
        };
        let fired = s.escalated.checked_sub(1).and_then(|l| slot_ladder(spec, slot).get(l as usize));
        if let Some((e, d)) = fired.and_then(|e| Some((e, e.default.as_ref()?))) {
            out.push((request.clone(), policy_decision(d, mode), policy_reason(e, d, mode)));
        }
    }
    if let (true, Some(request)) = (budget_asks_a_person(spec, state), &state.budget_request) {
        let fired = state.budget_escalated.checked_sub(1).and_then(|l| budget_ladder(spec).get(l as usize));
        if let Some((e, d)) = fired.and_then(|e| Some((e, e.default.as_ref()?))) {
            out.push((
                request.clone(),
                policy_decision(d, HumanMode::BudgetExtension),
                policy_reason(e, d, HumanMode::BudgetExtension),
            ));
        }
    }
    out
}

/// The decision a `default` applies to a request of `mode` (validation made sure it is one
/// of the mode's answers).
pub(crate) fn policy_decision(d: &DefaultDecision, mode: HumanMode) -> Decision {
    use DefaultWord::*;
    match (d, mode) {
        (DefaultDecision::Word(Approve), _) => Decision::Approve,
        (DefaultDecision::Word(Abort), _) => Decision::Abort,
        (DefaultDecision::Value { value }, _) => Decision::Modify { value: value.clone() },
        (DefaultDecision::Deny { deny }, _) => Decision::Deny { reason: deny.clone() },
        (DefaultDecision::Word(Refuse | Deny | Reject | Fail), HumanMode::ToolAuthorisation) => {
            Decision::Deny { reason: DENIED_BY_POLICY.into() }
        }
        // Approval and budget: a rejection; guidance: the step fails (`human_decided`).
        (DefaultDecision::Word(Refuse | Reject | Fail | Deny), _) => Decision::Reject,
    }
}

/// Why the policy decided, as the decision's comment records it.
pub(crate) fn policy_reason(e: &Escalation, d: &DefaultDecision, mode: HumanMode) -> String {
    format!(
        "nobody answered the {} within {}, so the escalation policy applied its default `{}`",
        crate::spec::escalation::mode_name(mode).trim_start_matches("an ").trim_start_matches("a "),
        humantime::format_duration(e.after),
        d.name()
    )
}

/// Escalation as people see it, for every request of the run with a ladder — open, or the
/// last one of a step that was answered — and the open budget request: which request, its
/// mode, when it was asked, and each level (when due, whom it pages or which default it
/// applies, whether it has fired). `runs show` and the console's request card show it.
pub fn escalations(spec: &ValidatedSpec, state: &RunState) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (slot, s) in state.slots() {
        let ladder = slot_ladder(spec, slot);
        let (Some(request), Some(asked_at), false) = (&s.asked, s.asked_at, ladder.is_empty()) else { continue };
        let open = matches!(&s.status, StepStatus::WaitingHuman { request: r } if r == request);
        out.push(view(
            Some(slot.id(spec).to_string()),
            request,
            asked_mode(spec, slot.step, s),
            asked_at,
            open,
            ladder,
            s.escalated,
        ));
    }
    if let (Some(request), Some(asked_at)) = (&state.budget_asked, state.budget_asked_at) {
        let ladder = budget_ladder(spec);
        if !ladder.is_empty() {
            let open = state.budget_request.as_ref() == Some(request);
            out.push(view(None, request, HumanMode::BudgetExtension, asked_at, open, ladder, state.budget_escalated));
        }
    }
    out
}

/// The mode of the slot's last request, open, answered or withdrawn: what it held back says
/// (a tool call, a blocked output or prompt), else its step's type or its answer.
fn asked_mode(spec: &ValidatedSpec, i: usize, s: &StepState) -> HumanMode {
    if s.tool_ask.is_some()
        || matches!(
            s.decision.as_ref().map(|d| &d.decision),
            Some(Decision::AllowOnce | Decision::AllowForRun | Decision::Deny { .. })
        )
    {
        HumanMode::ToolAuthorisation
    } else if matches!(spec.step(i).kind, StepKind::Approval(_)) {
        HumanMode::Approval
    } else {
        HumanMode::Guidance
    }
}

fn view(
    step: Option<String>,
    request: &RequestId,
    mode: HumanMode,
    asked_at: u64,
    open: bool,
    ladder: &[Escalation],
    fired: u32,
) -> serde_json::Value {
    let levels: Vec<serde_json::Value> = ladder
        .iter()
        .enumerate()
        .map(|(n, e)| {
            serde_json::json!({
                "after": humantime::format_duration(e.after).to_string(),
                "due_at": asked_at.saturating_add(e.after.as_millis() as u64),
                "to": e.to,
                "default": e.default.as_ref().map(|d| d.name()),
                "fired": (n as u32) < fired,
            })
        })
        .collect();
    serde_json::json!({ "request": request, "step": step, "mode": mode, "asked_at": asked_at, "open": open, "levels": levels })
}
