//! Data-driven tests of the run state machine: events in, actions and step states out.

use expect_test::{Expect, expect};
use serde_json::{Value, json};

use crate::ids::{RequestId, RunId, StepId};
use crate::money::Money;
use crate::run::{Action, AttemptStatus, Decision, Event, RunState, Timer, apply, outstanding, replay, start};
use crate::spec::{ValidatedSpec, parse_yaml};
use crate::step::StepError;

fn spec(yaml: &str) -> ValidatedSpec {
    parse_yaml(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn render_action(a: &Action) -> String {
    match a {
        Action::Dispatch { step, attempt, not_before, input, .. } => {
            let nb = not_before.map(|t| format!(" at={t}")).unwrap_or_default();
            let inputs = &input["inputs"];
            let inp =
                if inputs.as_object().is_some_and(|m| !m.is_empty()) { format!(" {inputs}") } else { String::new() };
            format!("dispatch {step}#{attempt}{nb}{inp}")
        }
        Action::ArmTimer { timer, at } => format!("timer {} at={at}", render_timer(timer)),
        Action::RequestHuman(r) => format!("ask {:?} {} \"{}\"", r.mode, r.id, r.question),
        Action::WithdrawHuman { request } => format!("withdraw {request}"),
        Action::PageHuman { request, to, level } => format!("page {to} on {request} (level {level})"),
        Action::DecideByPolicy { request, decision, .. } => format!("policy decides {request} {decision:?}"),
        Action::AwaitEvent { step, name, from } => format!("await {step} `{name}` from={from}"),
        Action::ResolveItems { step, items } => format!("resolve {step} ({items} items)"),
        Action::StartChild { step, workflow, params, parent, .. } => {
            format!(
                "start child of {step}: {workflow} {params} depth={} budget={:?}",
                parent.depth,
                parent.budget.map(|b| b.to_string())
            )
        }
        Action::CancelChild { child, .. } => format!("cancel child {child}"),
        Action::GrantChild { request, amount, .. } => format!("grant {amount} on {request}"),
        Action::AskParent { request, amount } => format!("ask parent {amount} on {request}"),
        Action::Finish => "finish".into(),
    }
}

fn render_timer(t: &Timer) -> String {
    match t {
        Timer::StepTimeout { step, attempt } => format!("timeout({step}#{attempt})"),
        Timer::QueueTimeout { step, attempt } => format!("queue-timeout({step}#{attempt})"),
        Timer::Delay { step } => format!("delay({step})"),
        Timer::EventWait { step } => format!("event-wait({step})"),
        Timer::RunTimeout => "run-timeout".into(),
        Timer::Escalate { step, level } => format!("escalate({step}/{level})"),
        Timer::EscalateBudget { level } => format!("escalate(budget/{level})"),
    }
}

fn render_state(spec: &ValidatedSpec, s: &RunState) -> String {
    let steps: Vec<String> = s
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let items: Vec<&str> = st.items.iter().map(|it| it.status.label()).collect();
            let items = if items.is_empty() { String::new() } else { format!("[{}]", items.join(",")) };
            format!("{}={}{items}", spec.step(i).id, st.status.label())
        })
        .collect();
    let mut out = format!("run={} {}", s.status.label(), steps.join(" "));
    if let crate::run::RunStatus::Failed { reason } = &s.status {
        out.push_str(&format!(" [{}: {}]", reason.code, reason.message));
    }
    if s.budget.cap.is_some() {
        out.push_str(&format!(
            " budget(spent={} reserved={} extended={})",
            s.budget.spent, s.budget.reserved, s.budget.extended
        ));
    }
    if !s.unsettled.is_empty() {
        let steps: Vec<String> = s.unsettled.iter().map(|&i| spec.step(i).id.to_string()).collect();
        out.push_str(&format!(" unsettled=[{}]", steps.join(",")));
    }
    out
}

/// Apply `events` in order; print each event's actions, then the final state. Also checks
/// that replaying the same journal gives the same state.
fn check(yaml: &str, events: &[Event], expect: Expect) {
    expect.assert_eq(&trace(yaml, events, false));
}

/// Like [`check`], also printing why each skipped step was skipped.
fn check_skips(yaml: &str, events: &[Event], expect: Expect) {
    expect.assert_eq(&trace(yaml, events, true));
}

fn trace(yaml: &str, events: &[Event], skips: bool) -> String {
    let spec = spec(yaml);
    let mut state = start(&spec, RunId::from("r1"));
    let mut out = String::new();
    for e in events {
        let actions = apply(&spec, &mut state, e);
        let rendered: Vec<String> = actions.iter().map(render_action).collect();
        out.push_str(&format!("{} -> [{}]\n", render_event(e), rendered.join(", ")));
    }
    out.push_str(&render_state(&spec, &state));
    out.push('\n');
    // The attempt log of every step that was tried more than once or not plainly.
    for (i, st) in state.steps.iter().enumerate() {
        let plain = st.attempts.len() <= 1
            && st
                .attempts
                .iter()
                .all(|a| matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Queued | AttemptStatus::Failed));
        if !plain {
            let log: Vec<String> = st
                .attempts
                .iter()
                .map(|a| match &a.late_result {
                    Some(late) => format!("#{} {} (late: {late})", a.attempt, a.status.label()),
                    None => format!("#{} {}", a.attempt, a.status.label()),
                })
                .collect();
            out.push_str(&format!("{}: {}\n", spec.step(i).id, log.join(", ")));
        }
    }
    for (i, st) in state.steps.iter().enumerate().filter(|_| skips) {
        if let crate::run::StepStatus::Skipped { reason, upstream_failed } = &st.status {
            out.push_str(&format!(
                "  {} skipped{}: {reason}\n",
                spec.step(i).id,
                if *upstream_failed { " (upstream failed)" } else { "" }
            ));
        }
    }
    assert_eq!(replay(&spec, RunId::from("r1"), events), state, "replay must reproduce the state");
    out
}

fn render_event(e: &Event) -> String {
    match e {
        Event::RunStarted { at, .. } => format!("@{at} start"),
        Event::StepSucceeded { step, attempt, at, .. } => format!("@{at} ok {step}#{attempt}"),
        Event::StepFailed { step, attempt, at, error, .. } => format!("@{at} fail {step}#{attempt} ({})", error.code),
        Event::StepBlocked { step, attempt, at, .. } => format!("@{at} blocked {step}#{attempt}"),
        Event::PromptHeld { step, attempt, at, hold, .. } => {
            format!("@{at} prompt held {step}#{attempt} ({})", hold.signals.join(","))
        }
        Event::ToolAuthorisationAsked { step, attempt, at, ask, .. } => {
            format!("@{at} asks {step}#{attempt} tool {} ({})", ask.tool, ask.call_id)
        }
        Event::TimerFired { timer, at } => format!("@{at} fired {}", render_timer(timer)),
        Event::HumanDecided { request, decision, at, .. } => format!("@{at} human {request} {decision:?}"),
        Event::Cancelled { at, .. } => format!("@{at} cancel"),
        Event::AttemptInterrupted { step, attempt, at, .. } => format!("@{at} interrupted {step}#{attempt}"),
        Event::EventReceived { step, received, at } => format!("@{at} received {step} {}", received["id"]),
        Event::ItemsResolved { step, items, limit, at } => format!("@{at} resolved {step} {items}/{limit}"),
        Event::ChildFinished { step, outcome, cost, at, .. } => {
            format!("@{at} child of {step} ended {cost} {}", serde_json::to_string(outcome).unwrap())
        }
        Event::ChildBudgetAsked { step, request, amount, at, .. } => {
            format!("@{at} child of {step} asks {amount} on {request}")
        }
    }
}

fn started(at: u64, params: Value) -> Event {
    Event::RunStarted { at, params, quotes: Default::default(), parent: None }
}
fn ok(step: &str, attempt: u32, at: u64, output: Value) -> Event {
    Event::StepSucceeded {
        step: StepId::from(step),
        attempt,
        at,
        started_at: at,
        output,
        cost: Money::ZERO,
        gate: None,
    }
}
fn ok_cost(step: &str, attempt: u32, at: u64, cost: &str) -> Event {
    let cost = Money::parse(cost).expect("a test amount");
    Event::StepSucceeded {
        step: StepId::from(step),
        attempt,
        at,
        started_at: at,
        output: json!(null),
        cost,
        gate: None,
    }
}
fn fail(step: &str, attempt: u32, at: u64, error: StepError) -> Event {
    Event::StepFailed { step: StepId::from(step), attempt, at, started_at: Some(at), error, gate: None }
}
fn decided(req: &str, decision: Decision, at: u64) -> Event {
    Event::HumanDecided {
        request: RequestId::from(req),
        decision,
        by: "ann".into(),
        comment: None,
        released: None,
        by_policy: false,
        at,
    }
}
fn fired(timer: Timer, at: u64) -> Event {
    Event::TimerFired { timer, at }
}

const DIAMOND: &str = r#"
id: diamond
owner: ops
parameters:
  n: { type: integer, default: 2 }
steps:
  - { id: a, type: code, script: "return 1" }
  - { id: b, type: code, script: "return 2", needs: [a], inputs: { x: "${{ steps.a.output + params.n }}" } }
  - { id: c, type: code, script: "return 3", needs: [a] }
  - { id: d, type: code, script: "return 4", needs: [b, c] }
"#;

#[test]
fn independent_branches_are_dispatched_together_and_join_waits_for_both() {
    check(
        DIAMOND,
        &[
            started(0, json!({"n": 2})),
            ok("a", 1, 10, json!(40)),
            ok("c", 1, 20, json!(3)),
            ok("b", 1, 30, json!(42)),
            ok("d", 1, 40, json!(4)),
        ],
        expect![[r#"
            @0 start -> [dispatch a#1]
            @10 ok a#1 -> [dispatch b#1 {"x":42}, dispatch c#1]
            @20 ok c#1 -> []
            @30 ok b#1 -> [dispatch d#1]
            @40 ok d#1 -> [finish]
            run=succeeded a=succeeded b=succeeded c=succeeded d=succeeded
        "#]],
    );
}

#[test]
fn duplicate_and_stale_outcomes_change_nothing() {
    check(
        DIAMOND,
        &[
            started(0, json!({"n": 2})),
            ok("a", 1, 10, json!(1)),
            ok("a", 1, 11, json!(1)),
            fail("a", 1, 12, StepError::retryable("x", "late")),
        ],
        expect![[r#"
            @0 start -> [dispatch a#1]
            @10 ok a#1 -> [dispatch b#1 {"x":3}, dispatch c#1]
            @11 ok a#1 -> []
            @12 fail a#1 (x) -> []
            run=running a=succeeded b=running c=running d=pending
        "#]],
    );
}

const RETRY: &str = r#"
id: retry
owner: ops
steps:
  - id: flaky
    type: api_call
    request: { url: "http://127.0.0.1/x" }
    retry: { max_attempts: 3, backoff: { initial: 100ms, max: 10s, multiplier: 2 } }
    timeout: 1s
  - { id: after, type: code, script: "return 1", needs: [flaky] }
"#;

#[test]
fn retryable_failures_back_off_exponentially_then_succeed() {
    check(
        RETRY,
        &[
            started(0, json!({})),
            fail("flaky", 1, 50, StepError::retryable("http_status", "500")),
            fail("flaky", 2, 200, StepError::retry_after("http_status", std::time::Duration::from_secs(5), "429")),
            ok("flaky", 3, 5300, json!({"status": 200})),
        ],
        expect![[r#"
            @0 start -> [dispatch flaky#1]
            @50 fail flaky#1 (http_status) -> [dispatch flaky#2 at=154]
            @200 fail flaky#2 (http_status) -> [dispatch flaky#3 at=5200]
            @5300 ok flaky#3 -> [dispatch after#1]
            run=running flaky=succeeded after=running
            flaky: #1 failed, #2 failed, #3 succeeded
        "#]],
    );
}

#[test]
fn exhausted_or_permanent_failures_fail_the_step_skip_dependents_and_fail_the_run() {
    check(
        RETRY,
        &[started(0, json!({})), fail("flaky", 1, 50, StepError::permanent("http_status", "404 not found"))],
        expect![[r#"
            @0 start -> [dispatch flaky#1]
            @50 fail flaky#1 (http_status) -> [finish]
            run=failed flaky=failed after=skipped [step_failed: step `flaky` failed: http_status: 404 not found]
        "#]],
    );
}

#[test]
fn a_timed_out_attempt_is_redispatched_and_its_late_success_is_kept_as_superseded_never_used() {
    check(
        RETRY,
        &[
            started(0, json!({})),
            fired(Timer::StepTimeout { step: StepId::from("flaky"), attempt: 1 }, 1000),
            fired(Timer::StepTimeout { step: StepId::from("flaky"), attempt: 1 }, 1001),
            ok("flaky", 1, 1150, json!({"late": true})),
            ok("flaky", 2, 1400, json!({"second": true})),
        ],
        expect![[r#"
            @0 start -> [dispatch flaky#1]
            @1000 fired timeout(flaky#1) -> [dispatch flaky#2 at=1104]
            @1001 fired timeout(flaky#1) -> []
            @1150 ok flaky#1 -> []
            @1400 ok flaky#2 -> [dispatch after#1]
            run=running flaky=succeeded after=running
            flaky: #1 superseded (late: succeeded), #2 succeeded
        "#]],
    );
}

#[test]
fn a_queue_timeout_fences_the_attempt_as_not_started_and_counts_as_a_try() {
    let yaml = "id: q\nowner: ops\nsteps:\n  - { id: a, type: code, script: \"return 1\", queue_timeout: 1s, retry: { max_attempts: 2, backoff: { initial: 10ms } } }\n";
    check(
        yaml,
        &[
            started(0, json!({})),
            fired(Timer::QueueTimeout { step: StepId::from("a"), attempt: 1 }, 1000),
            fired(Timer::QueueTimeout { step: StepId::from("a"), attempt: 2 }, 2100),
        ],
        expect![[r#"
            @0 start -> [dispatch a#1]
            @1000 fired queue-timeout(a#1) -> [dispatch a#2 at=1012]
            @2100 fired queue-timeout(a#2) -> [finish]
            run=failed a=failed [step_failed: step `a` failed: queue_timeout: attempt 2 was not started by a worker within 1s]
            a: #1 not_started, #2 not_started
        "#]],
    );
}

#[test]
fn an_interrupted_attempt_is_closed_and_the_step_runs_again_at_once_without_using_a_retry() {
    let yaml = "id: i\nowner: ops\nsteps:\n  - { id: a, type: code, script: \"return 1\" }\n  - { id: b, type: code, script: \"return 1\", needs: [a] }\n";
    check(
        yaml,
        &[
            started(0, json!({})),
            interrupted("a", 1, 50),
            ok("a", 1, 60, json!("late")),
            ok("a", 2, 90, json!("fresh")),
            interrupted("b", 1, 100),
            interrupted("b", 2, 110),
            interrupted("b", 3, 120),
        ],
        expect![[r#"
            @0 start -> [dispatch a#1]
            @50 interrupted a#1 -> [dispatch a#2]
            @60 ok a#1 -> []
            @90 ok a#2 -> [dispatch b#1]
            @100 interrupted b#1 -> [dispatch b#2]
            @110 interrupted b#2 -> [dispatch b#3]
            @120 interrupted b#3 -> [finish]
            run=failed a=succeeded b=failed [step_failed: step `b` failed: interrupted: 3 attempts were interrupted by their process dying; not trying again]
            a: #1 superseded (late: succeeded), #2 succeeded
            b: #1 interrupted, #2 interrupted, #3 interrupted
        "#]],
    );
}

fn interrupted(step: &str, attempt: u32, at: u64) -> Event {
    Event::AttemptInterrupted { step: StepId::from(step), attempt, at, started_at: at - 1, worker: "w1".into() }
}

const BRANCHING: &str = r#"
id: branching
owner: ops
parameters:
  amount: { type: number, required: true }
steps:
  - { id: big, type: condition, expr: "params.amount > 1000.0" }
  - { id: review, type: approval, needs: [big], question: "Approve ${{ params.amount }}?" }
  - { id: book, type: code, script: "return 1", needs: [review] }
  - { id: note, type: code, script: "return 1", when: "params.amount < 0.0" }
  - { id: wait, type: delay, duration: 2s }
"#;

#[test]
fn a_false_condition_skips_its_branch_and_when_false_skips_a_step() {
    check(
        BRANCHING,
        &[started(0, json!({"amount": 10.0})), fired(Timer::Delay { step: StepId::from("wait") }, 2000)],
        expect![[r#"
            @0 start -> [timer delay(wait) at=2000]
            @2000 fired delay(wait) -> [finish]
            run=succeeded big=succeeded review=skipped book=skipped note=skipped wait=succeeded
        "#]],
    );
}

#[test]
fn approval_pauses_until_a_human_approves_or_rejects() {
    let events = [started(0, json!({"amount": 5000.0})), fired(Timer::Delay { step: StepId::from("wait") }, 2000)];
    let mut approve = events.to_vec();
    approve.push(decided("r1.review.1", Decision::Approve, 3000));
    approve.push(ok("book", 1, 3100, json!(1)));
    check(
        BRANCHING,
        &approve,
        expect![[r#"
            @0 start -> [timer delay(wait) at=2000, ask Approval r1.review.1 "Approve 5000.0?"]
            @2000 fired delay(wait) -> []
            @3000 human r1.review.1 Approve -> [dispatch book#1]
            @3100 ok book#1 -> [finish]
            run=succeeded big=succeeded review=succeeded book=succeeded note=skipped wait=succeeded
        "#]],
    );
    let mut reject = events.to_vec();
    reject.push(decided("r1.review.1", Decision::Reject, 3000));
    check(
        BRANCHING,
        &reject,
        expect![[r#"
            @0 start -> [timer delay(wait) at=2000, ask Approval r1.review.1 "Approve 5000.0?"]
            @2000 fired delay(wait) -> []
            @3000 human r1.review.1 Reject -> [finish]
            run=failed big=succeeded review=failed book=skipped note=skipped wait=succeeded [rejected: step `review` failed: rejected: rejected by ann]
        "#]],
    );
}

const BUDGET: &str = r#"
id: budget
owner: ops
budget: { max_cost: 1.0 }
steps:
  - { id: a, type: code, script: "return 1", cost: 0.6 }
  - { id: b, type: code, script: "return 1", cost: 0.6, needs: [a] }
  - { id: c, type: code, script: "return 1", cost: 0.1, needs: [b] }
"#;

#[test]
fn a_step_the_budget_cannot_cover_pauses_the_run_until_extended() {
    check(
        BUDGET,
        &[
            started(0, json!({})),
            ok_cost("a", 1, 10, "0"),
            decided("r1.budget.1", Decision::Approve, 20),
            ok_cost("b", 1, 30, "0.9"),
        ],
        expect![[r#"
            @0 start -> [dispatch a#1]
            @10 ok a#1 -> [ask BudgetExtension r1.budget.1 "The run's budget (1.00 USD, 0.60 spent) cannot cover step `b` (estimated 0.60). Extend it by at least 0.20?"]
            @20 human r1.budget.1 Approve -> [dispatch b#1]
            @30 ok b#1 -> [ask BudgetExtension r1.budget.2 "The run's budget (1.20 USD, 1.50 spent) cannot cover step `c` (estimated 0.10). Extend it by at least 0.40?"]
            run=running a=succeeded b=succeeded c=pending budget(spent=1.50 reserved=0.00 extended=0.20)
        "#]],
    );
}

const TENTHS: &str = r#"
id: tenths
owner: ops
budget: { max_cost: 0.3 }
steps:
  - { id: a, type: code, script: "return 1", cost: 0.1 }
  - { id: b, type: code, script: "return 1", cost: 0.1 }
  - { id: c, type: code, script: "return 1", cost: 0.1 }
  - { id: d, type: code, script: "return 1", cost: 0.1, needs: [a, b, c] }
"#;

#[test]
fn money_is_exact_three_tenths_fill_a_budget_of_three_tenths() {
    check(
        TENTHS,
        &[started(0, json!({})), ok_cost("a", 1, 10, "0.1"), ok_cost("b", 1, 20, "0.1"), ok_cost("c", 1, 30, "0.1")],
        expect![[r#"
            @0 start -> [dispatch a#1, dispatch b#1, dispatch c#1]
            @10 ok a#1 -> []
            @20 ok b#1 -> []
            @30 ok c#1 -> [ask BudgetExtension r1.budget.1 "The run's budget (0.30 USD, 0.30 spent) cannot cover step `d` (estimated 0.10). Extend it by at least 0.10?"]
            run=running a=succeeded b=succeeded c=succeeded d=pending budget(spent=0.30 reserved=0.00 extended=0.00)
        "#]],
    );
    let spec = spec(TENTHS);
    let events =
        [started(0, json!({})), ok_cost("a", 1, 10, "0.1"), ok_cost("b", 1, 20, "0.1"), ok_cost("c", 1, 30, "0.1")];
    let state = replay(&spec, RunId::from("r1"), &events);
    let stored = serde_json::to_value(&state).unwrap();
    assert_eq!(stored["budget"]["spent"], json!("0.3"), "stored as an exact decimal string");
    assert_eq!(stored["steps"][0]["cost"], json!("0.1"));
    let back: RunState = serde_json::from_value(stored).unwrap();
    assert_eq!(back.budget, state.budget);
    let journaled = serde_json::to_string(&events[1]).unwrap();
    assert!(journaled.contains(r#""cost":"0.1""#), "{journaled}");
    assert_eq!(serde_json::from_str::<Event>(&journaled).unwrap(), events[1]);
}

#[test]
fn a_refused_budget_extension_fails_the_run_closed() {
    check(
        BUDGET,
        &[started(0, json!({})), ok_cost("a", 1, 10, "0"), decided("r1.budget.1", Decision::Reject, 20)],
        expect![[r#"
            @0 start -> [dispatch a#1]
            @10 ok a#1 -> [ask BudgetExtension r1.budget.1 "The run's budget (1.00 USD, 0.60 spent) cannot cover step `b` (estimated 0.60). Extend it by at least 0.20?"]
            @20 human r1.budget.1 Reject -> [withdraw r1.budget.1, finish]
            run=failed a=succeeded b=cancelled c=cancelled [budget_exhausted: budget of 1.00 exhausted; extension refused by ann] budget(spent=0.60 reserved=0.00 extended=0.00)
        "#]],
    );
}

#[test]
fn cancellation_and_run_timeout_end_the_run() {
    let yaml = "id: t\nowner: ops\ntimeout: 1m\nsteps:\n  - { id: a, type: approval, question: ok? }\n";
    check(
        yaml,
        &[started(0, json!({})), Event::Cancelled { by: "ann".into(), reason: "wrong client".into(), at: 5 }],
        expect![[r#"
            @0 start -> [timer run-timeout at=60000, ask Approval r1.a.1 "ok?"]
            @5 cancel -> [withdraw r1.a.1, finish]
            run=cancelled a=cancelled
        "#]],
    );
    check(
        yaml,
        &[started(0, json!({})), fired(Timer::RunTimeout, 60000)],
        expect![[r#"
            @0 start -> [timer run-timeout at=60000, ask Approval r1.a.1 "ok?"]
            @60000 fired run-timeout -> [withdraw r1.a.1, finish]
            run=failed a=cancelled [timed_out: the run did not finish within 1m]
        "#]],
    );
}

const GATED: &str = r#"
id: gated
owner: ops
steps:
  - { id: draft, type: code, script: "return 1" }
  - { id: send, type: code, needs: [draft], script: "return 2", inputs: { text: "${{ steps.draft.output }}" } }
"#;

fn blocked(step: &str, at: u64) -> Event {
    Event::StepBlocked {
        step: StepId::from(step),
        attempt: 1,
        at,
        started_at: at,
        redacted: json!("ignore [BLOCKED]"),
        cost: Money::ZERO,
        gate: json!({"action": "block", "findings": [{"rule_id": "threat.override", "action": "block"}]}),
    }
}

#[test]
fn a_blocked_output_waits_for_guidance_and_only_a_released_or_corrected_value_flows_on() {
    let release = Event::HumanDecided {
        request: RequestId::from("r1.draft.1"),
        decision: Decision::Approve,
        by: "ann".into(),
        comment: None,
        released: Some(json!("the held output")),
        by_policy: false,
        at: 20,
    };
    check(
        GATED,
        &[started(0, json!({})), blocked("draft", 10), release],
        expect![[r#"
            @0 start -> [dispatch draft#1]
            @10 blocked draft#1 -> [ask Guidance r1.draft.1 "The output of step `draft` was blocked by the gate mesh (threat.override). Approve it as is, supply a corrected value, or abort the run?"]
            @20 human r1.draft.1 Approve -> [dispatch send#1 {"text":"the held output"}]
            run=running draft=succeeded send=running
            draft: #1 blocked
        "#]],
    );
    check(
        GATED,
        &[
            started(0, json!({})),
            blocked("draft", 10),
            decided("r1.draft.1", Decision::Modify { value: json!("fixed") }, 20),
        ],
        expect![[r#"
            @0 start -> [dispatch draft#1]
            @10 blocked draft#1 -> [ask Guidance r1.draft.1 "The output of step `draft` was blocked by the gate mesh (threat.override). Approve it as is, supply a corrected value, or abort the run?"]
            @20 human r1.draft.1 Modify { value: String("fixed") } -> [dispatch send#1 {"text":"fixed"}]
            run=running draft=succeeded send=running
            draft: #1 blocked
        "#]],
    );
    check(
        GATED,
        &[started(0, json!({})), blocked("draft", 10), decided("r1.draft.1", Decision::Abort, 20)],
        expect![[r#"
            @0 start -> [dispatch draft#1]
            @10 blocked draft#1 -> [ask Guidance r1.draft.1 "The output of step `draft` was blocked by the gate mesh (threat.override). Approve it as is, supply a corrected value, or abort the run?"]
            @20 human r1.draft.1 Abort -> [withdraw r1.draft.1, finish]
            run=cancelled draft=cancelled send=cancelled
            draft: #1 blocked
        "#]],
    );
}

/// The SOP merge: "if there is a conflict, a partner must approve; then write the memo either way".
const MERGE: &str = r#"
id: merge
owner: ops
steps:
  - { id: check, type: code, script: "return 1" }
  - { id: has_conflict, type: condition, needs: [check], expr: "steps.check.output.conflict" }
  - { id: conflict_partner, type: approval, needs: [has_conflict], question: "Conflict found: take the matter?" }
  - { id: clear, type: condition, needs: [check], expr: "!steps.check.output.conflict" }
  - { id: memo, type: code, needs: [conflict_partner, clear], join: none_failed, script: "return 1" }
"#;

#[test]
fn a_none_failed_join_merges_a_branch_taken_and_a_branch_not_taken() {
    check_skips(
        MERGE,
        &[
            started(0, json!({})),
            ok("check", 1, 10, json!({"conflict": true})),
            decided("r1.conflict_partner.1", Decision::Approve, 20),
            ok("memo", 1, 30, json!("memo")),
        ],
        expect![[r#"
            @0 start -> [dispatch check#1]
            @10 ok check#1 -> [ask Approval r1.conflict_partner.1 "Conflict found: take the matter?"]
            @20 human r1.conflict_partner.1 Approve -> [dispatch memo#1]
            @30 ok memo#1 -> [finish]
            run=succeeded check=succeeded has_conflict=succeeded conflict_partner=succeeded clear=succeeded memo=succeeded
        "#]],
    );
    check_skips(
        MERGE,
        &[started(0, json!({})), ok("check", 1, 10, json!({"conflict": false})), ok("memo", 1, 30, json!("memo"))],
        expect![[r#"
            @0 start -> [dispatch check#1]
            @10 ok check#1 -> [dispatch memo#1]
            @30 ok memo#1 -> [finish]
            run=succeeded check=succeeded has_conflict=succeeded conflict_partner=skipped clear=succeeded memo=succeeded
              conflict_partner skipped: condition `has_conflict` is false (join all_succeeded)
        "#]],
    );
    // A partner's refusal is a failure, not a branch not taken: the memo is not written.
    check_skips(
        MERGE,
        &[
            started(0, json!({})),
            ok("check", 1, 10, json!({"conflict": true})),
            decided("r1.conflict_partner.1", Decision::Reject, 20),
        ],
        expect![[r#"
            @0 start -> [dispatch check#1]
            @10 ok check#1 -> [ask Approval r1.conflict_partner.1 "Conflict found: take the matter?"]
            @20 human r1.conflict_partner.1 Reject -> [finish]
            run=failed check=succeeded has_conflict=succeeded conflict_partner=failed clear=succeeded memo=skipped [rejected: step `conflict_partner` failed: rejected: rejected by ann]
              memo skipped (upstream failed): upstream step `conflict_partner` failed (join none_failed)
        "#]],
    );
    // With the default join the memo can never run: one of its branches is always skipped.
    check_skips(
        &MERGE.replace("join: none_failed, ", ""),
        &[started(0, json!({})), ok("check", 1, 10, json!({"conflict": false}))],
        expect![[r#"
            @0 start -> [dispatch check#1]
            @10 ok check#1 -> [finish]
            run=succeeded check=succeeded has_conflict=succeeded conflict_partner=skipped clear=succeeded memo=skipped
              conflict_partner skipped: condition `has_conflict` is false (join all_succeeded)
              memo skipped: upstream step `conflict_partner` was skipped (join all_succeeded)
        "#]],
    );
}

const JOINS: &str = r#"
id: joins
owner: ops
steps:
  - { id: a, type: code, script: "return 1" }
  - { id: b, type: code, script: "return 1", needs: [a] }
  - { id: c, type: code, script: "return 1", needs: [b], join: none_failed }
  - { id: cleanup, type: code, script: "return 1", needs: [c], join: all_done }
  - { id: alt, type: code, script: "return 1" }
  - { id: either, type: code, script: "return 1", needs: [a, alt], join: any_succeeded }
  - { id: neither, type: code, script: "return 1", needs: [b, c], join: any_succeeded }
"#;

#[test]
fn a_failure_propagates_as_a_failure_through_skips_and_each_join_decides() {
    check_skips(
        JOINS,
        &[
            started(0, json!({})),
            fail("a", 1, 10, StepError::permanent("script_error", "boom")),
            ok("alt", 1, 20, json!(2)),
            ok("cleanup", 1, 30, json!(3)),
            ok("either", 1, 40, json!(4)),
        ],
        expect![[r#"
            @0 start -> [dispatch a#1, dispatch alt#1]
            @10 fail a#1 (script_error) -> [dispatch cleanup#1]
            @20 ok alt#1 -> [dispatch either#1]
            @30 ok cleanup#1 -> []
            @40 ok either#1 -> [finish]
            run=failed a=failed b=skipped c=skipped cleanup=succeeded alt=succeeded either=succeeded neither=skipped [step_failed: step `a` failed: script_error: boom]
              b skipped (upstream failed): upstream step `a` failed (join all_succeeded)
              c skipped (upstream failed): upstream step `b` was skipped after a failure (join none_failed)
              neither skipped (upstream failed): no need succeeded: upstream step `b` was skipped after a failure, upstream step `c` was skipped after a failure (join any_succeeded)
        "#]],
    );
}

const RETRY_ON: &str = r#"
id: retry_on
owner: ops
steps:
  - id: script
    type: code
    script: "throw new Error('flaky')"
    retry: { max_attempts: 3, on: [transient, script_error], backoff: { initial: 100ms, max: 10s } }
  - { id: strict, type: code, script: "return 1", retry: { max_attempts: 3 } }
  - id: polite
    type: api_call
    request: { url: "http://127.0.0.1/x" }
    retry: { max_attempts: 3, backoff: { initial: 100ms, max: 30s } }
  - id: patient
    type: api_call
    request: { url: "http://127.0.0.1/y" }
    retry: { max_attempts: 2, max_retry_after: 2h }
"#;

#[test]
fn a_step_chooses_what_retries_and_a_retry_after_is_capped_by_its_policy() {
    let hour = || StepError::retry_after("http_status", std::time::Duration::from_secs(3600), "429 Retry-After: 3600");
    check(
        RETRY_ON,
        &[
            started(0, json!({})),
            fail("script", 1, 10, StepError::permanent("script_error", "flaky")),
            fail("strict", 1, 20, StepError::permanent("script_error", "flaky")),
            fail("polite", 1, 30, hour()),
            fail("patient", 1, 40, hour()),
        ],
        expect![[r#"
            @0 start -> [dispatch script#1, dispatch strict#1, dispatch polite#1, dispatch patient#1]
            @10 fail script#1 (script_error) -> [dispatch script#2 at=135]
            @20 fail strict#1 (script_error) -> []
            @30 fail polite#1 (http_status) -> [dispatch polite#2 at=30030]
            @40 fail patient#1 (http_status) -> [dispatch patient#2 at=3600040]
            run=running script=running strict=failed polite=running patient=running
            script: #1 failed, #2 queued
            polite: #1 failed, #2 queued
            patient: #1 failed, #2 queued
        "#]],
    );
}

const ESCALATING: &str = r#"
id: kickoff
owner: ops
steps:
  - { id: draft, type: code, script: x }
  - id: kick
    type: approval
    needs: [draft]
    question: Kick off?
    assignee: ops
    context: [draft]
    escalate: [{ after: 4h, to: coo }, { after: 8h, default: approve }]
  - { id: go, type: code, script: x, needs: [kick] }
"#;

#[test]
fn escalation_pages_after_t1_and_hands_the_default_to_the_store_after_t2() {
    let h = 3_600_000;
    let policy = Event::HumanDecided {
        request: RequestId::from("r1.kick.1"),
        decision: Decision::Approve,
        by: "escalation policy".into(),
        comment: None,
        released: None,
        by_policy: true,
        at: 8 * h + 20,
    };
    check(
        ESCALATING,
        &[
            started(0, json!({})),
            ok("draft", 1, 10, json!("draft text")),
            // Early (clock skew): nothing happens, the level is not used up.
            fired(Timer::Escalate { step: StepId::from("kick"), level: 0 }, 60),
            fired(Timer::Escalate { step: StepId::from("kick"), level: 0 }, 4 * h + 10),
            // A repeated timer (a recovery re-armed it) changes nothing.
            fired(Timer::Escalate { step: StepId::from("kick"), level: 0 }, 4 * h + 11),
            fired(Timer::Escalate { step: StepId::from("kick"), level: 1 }, 8 * h + 10),
            policy,
        ],
        expect![[r#"
            @0 start -> [dispatch draft#1]
            @10 ok draft#1 -> [ask Approval r1.kick.1 "Kick off?", timer escalate(kick/0) at=14400010]
            @60 fired escalate(kick/0) -> []
            @14400010 fired escalate(kick/0) -> [page coo on r1.kick.1 (level 0), timer escalate(kick/1) at=28800010]
            @14400011 fired escalate(kick/0) -> []
            @28800010 fired escalate(kick/1) -> [policy decides r1.kick.1 Approve]
            @28800020 human r1.kick.1 Approve -> [dispatch go#1]
            run=running draft=succeeded kick=succeeded go=running
        "#]],
    );
}

#[test]
fn a_recovered_run_re_arms_its_next_escalation_and_re_applies_a_fired_default() {
    let spec = spec(ESCALATING);
    let h = 3_600_000;
    let kick = |level| Timer::Escalate { step: StepId::from("kick"), level };
    let mut events = vec![started(0, json!({})), ok("draft", 1, 10, json!("draft text"))];
    let state = replay(&spec, RunId::from("r1"), &events);
    let timers: Vec<_> =
        outstanding(&spec, &state).into_iter().filter(|a| matches!(a, Action::ArmTimer { .. })).collect();
    assert_eq!(timers, vec![Action::ArmTimer { timer: kick(0), at: 4 * h + 10 }]);
    let request = state.steps[1].status.clone();
    let crate::run::StepStatus::WaitingHuman { request } = request else { panic!("waits for a human") };
    // The request shows the upstream output it names.
    let asked = outstanding(&spec, &state).into_iter().find_map(|a| match a {
        Action::RequestHuman(r) => Some(r),
        _ => None,
    });
    let asked = asked.expect("the open request is re-published");
    assert_eq!(asked.context["upstream"], json!({"draft": "draft text"}));
    assert_eq!(asked.assignee.as_deref(), Some("ops"));

    events.push(fired(kick(0), 4 * h + 10));
    let state = replay(&spec, RunId::from("r1"), &events);
    let timers: Vec<_> =
        outstanding(&spec, &state).into_iter().filter(|a| matches!(a, Action::ArmTimer { .. })).collect();
    assert_eq!(timers, vec![Action::ArmTimer { timer: kick(1), at: 8 * h + 10 }]);

    // The default fired, and the process died before the decision reached the journal.
    events.push(fired(kick(1), 8 * h + 10));
    let state = replay(&spec, RunId::from("r1"), &events);
    let redo: Vec<_> =
        outstanding(&spec, &state).into_iter().filter(|a| matches!(a, Action::DecideByPolicy { .. })).collect();
    let reason =
        "nobody answered the approval within 8h, so the escalation policy applied its default `approve`".to_string();
    assert_eq!(redo, vec![Action::DecideByPolicy { request, decision: Decision::Approve, reason }]);
}

const EVENTS: &str = r#"
id: events
owner: ops
parameters:
  order: { type: string, default: "A-1" }
steps:
  - id: announce
    type: event
    emit: { name: "order.placed", payload: { order: "${{ params.order }}" } }
  - id: paid
    type: event
    needs: [announce]
    wait: { name: payment.received, correlate: "event.payload.order == params.order", timeout: 10s, lookback: 2s }
  - { id: ship, type: code, needs: [paid], script: "return 1" }
"#;

#[test]
fn an_emit_is_a_job_with_its_rendered_event_and_a_wait_waits_with_a_lookback() {
    let spec = spec(EVENTS);
    let mut state = start(&spec, RunId::from("r1"));
    let actions = apply(&spec, &mut state, &started(1000, json!({"order": "A-1"})));
    let Some(Action::Dispatch { input, .. }) = actions.first() else { panic!("{actions:?}") };
    assert_eq!(input["event"], json!({"name": "order.placed", "payload": {"order": "A-1"}}));
    check(
        EVENTS,
        &[
            started(1000, json!({"order": "A-1"})),
            ok("announce", 1, 1100, json!({"id": "e1"})),
            Event::EventReceived {
                step: StepId::from("paid"),
                received: json!({"id": "e2", "name": "payment.received", "payload": {"order": "A-1"}, "at": 1050}),
                at: 1200,
            },
            ok("ship", 1, 1300, json!(1)),
        ],
        expect![[r#"
            @1000 start -> [dispatch announce#1]
            @1100 ok announce#1 -> [timer event-wait(paid) at=11100, await paid `payment.received` from=0]
            @1200 received paid "e2" -> [dispatch ship#1]
            @1300 ok ship#1 -> [finish]
            run=succeeded announce=succeeded paid=succeeded ship=succeeded
        "#]],
    );
}

#[test]
fn a_wait_that_times_out_takes_its_default_outcome() {
    let with = |on_timeout: &str| EVENTS.replace("lookback: 2s", &format!("lookback: 2s, {on_timeout}"));
    check(
        &with("on_timeout: fail"),
        &[
            started(1000, json!({"order": "A-1"})),
            ok("announce", 1, 1100, json!({})),
            fired(Timer::EventWait { step: StepId::from("paid") }, 11100),
        ],
        expect![[r#"
            @1000 start -> [dispatch announce#1]
            @1100 ok announce#1 -> [timer event-wait(paid) at=11100, await paid `payment.received` from=0]
            @11100 fired event-wait(paid) -> [finish]
            run=failed announce=succeeded paid=failed ship=skipped [step_failed: step `paid` failed: event_timeout: no `payment.received` event matched within 10s]
        "#]],
    );
    let yaml = with("on_timeout: succeed, default: { paid: false }");
    let spec = spec(&yaml);
    let events = [
        started(1000, json!({"order": "A-1"})),
        ok("announce", 1, 1100, json!({})),
        fired(Timer::EventWait { step: StepId::from("paid") }, 11100),
    ];
    let state = replay(&spec, RunId::from("r1"), &events);
    assert_eq!(state.steps[1].output, Some(json!({"received": false, "payload": {"paid": false}})));
    assert_eq!(state.steps[2].status.label(), "running", "the step after a defaulted wait runs");
    // A wait's timer firing early (another process's clock) changes nothing; a late event neither.
    let early = [
        started(1000, json!({"order": "A-1"})),
        ok("announce", 1, 1100, json!({})),
        fired(Timer::EventWait { step: StepId::from("paid") }, 5000),
    ];
    assert_eq!(replay(&spec, RunId::from("r1"), &early).steps[1].status.label(), "waiting_event");
}

#[test]
fn a_waiting_run_is_waiting_and_recovery_awaits_again() {
    let spec = spec(EVENTS);
    let state =
        replay(&spec, RunId::from("r1"), &[started(1000, json!({"order": "A-1"})), ok("announce", 1, 5000, json!({}))]);
    assert!(state.is_waiting());
    let out: Vec<String> = crate::run::outstanding(&spec, &state).iter().map(render_action).collect();
    assert_eq!(out, ["timer event-wait(paid) at=15000", "await paid `payment.received` from=3000"]);
}

const FAN_OUT: &str = r#"
id: fan
owner: ops
budget: { max_cost: 10 }
parameters:
  docs: { type: array, default: ["a.txt", "b.txt", "c.txt"] }
steps:
  - { id: list, type: code, script: "return 1", inputs: { docs: "${{ params.docs }}" } }
  - id: classify
    type: code
    needs: [list]
    for_each: "${{ params.docs }}"
    inputs: { doc: "${{ item }}", n: "${{ item_index }}" }
    script: "return 1"
    cost: 0.5
    retry: { max_attempts: 2, backoff: { initial: 100ms } }
  - { id: summary, type: code, needs: [classify], script: "return 1", inputs: { labels: "${{ steps.classify.output }}" } }
"#;

fn resolved(step: &str, items: u32, limit: u32, at: u64) -> Event {
    Event::ItemsResolved { step: StepId::from(step), items, limit, at }
}

#[test]
fn for_each_journals_its_length_then_runs_each_item_on_its_own_and_outputs_the_list_in_order() {
    check(
        FAN_OUT,
        &[
            started(0, json!({"docs": ["a.txt", "b.txt", "c.txt"]})),
            ok("list", 1, 10, json!(1)),
            resolved("classify", 3, 1000, 11),
            // Items finish out of order; one fails once and is retried on its own.
            ok("classify.2", 1, 20, json!("invoice")),
            fail("classify.0", 1, 21, StepError::retryable("http_status", "503")),
            ok("classify.1", 1, 22, json!("letter")),
            ok("classify.0", 2, 200, json!("contract")),
            ok("summary", 1, 300, json!(1)),
        ],
        expect![[r#"
            @0 start -> [dispatch list#1 {"docs":["a.txt","b.txt","c.txt"]}]
            @10 ok list#1 -> [resolve classify (3 items)]
            @11 resolved classify 3/1000 -> [dispatch classify.0#1 {"doc":"a.txt","n":0}, dispatch classify.1#1 {"doc":"b.txt","n":1}, dispatch classify.2#1 {"doc":"c.txt","n":2}]
            @20 ok classify.2#1 -> []
            @21 fail classify.0#1 (http_status) -> [dispatch classify.0#2 at=141 {"doc":"a.txt","n":0}]
            @22 ok classify.1#1 -> []
            @200 ok classify.0#2 -> [dispatch summary#1 {"labels":["contract","letter","invoice"]}]
            @300 ok summary#1 -> [finish]
            run=succeeded list=succeeded classify=succeeded[succeeded,succeeded,succeeded] summary=succeeded budget(spent=2.00 reserved=0.00 extended=0.00)
        "#]],
    );
    // Each item keeps its own attempts and cost; the step's cost is their sum.
    let spec = spec(FAN_OUT);
    let state = replay(
        &spec,
        RunId::from("r1"),
        &[
            started(0, json!({"docs": ["a.txt", "b.txt"]})),
            ok("list", 1, 10, json!(1)),
            resolved("classify", 2, 1000, 11),
            fail("classify.0", 1, 21, StepError::retryable("http_status", "503")),
            ok("classify.0", 2, 200, json!("x")),
            ok("classify.1", 1, 22, json!("y")),
        ],
    );
    let classify = &state.steps[1];
    assert_eq!(classify.items[0].attempts.len(), 2);
    assert_eq!(classify.items[1].attempts.len(), 1);
    assert_eq!(classify.items[0].item, Some(json!("a.txt")));
    assert_eq!(classify.items[0].cost, Money::parse("1.0").unwrap());
    assert_eq!(classify.cost, Money::parse("1.5").unwrap());
    assert_eq!(classify.output, Some(json!(["x", "y"])));
}

#[test]
fn a_failed_item_fails_its_step_once_every_item_has_finished_naming_the_item() {
    check(
        FAN_OUT,
        &[
            started(0, json!({"docs": ["a", "b"]})),
            ok("list", 1, 10, json!(1)),
            resolved("classify", 2, 1000, 11),
            fail("classify.1", 1, 20, StepError::permanent("script_error", "boom")),
            ok("classify.0", 1, 30, json!("ok")),
        ],
        expect![[r#"
            @0 start -> [dispatch list#1 {"docs":["a","b"]}]
            @10 ok list#1 -> [resolve classify (2 items)]
            @11 resolved classify 2/1000 -> [dispatch classify.0#1 {"doc":"a","n":0}, dispatch classify.1#1 {"doc":"b","n":1}]
            @20 fail classify.1#1 (script_error) -> []
            @30 ok classify.0#1 -> [finish]
            run=failed list=succeeded classify=failed[succeeded,failed] summary=skipped [step_failed: step `classify` failed: script_error: item 1 of 2 failed: boom] budget(spent=1.00 reserved=0.00 extended=0.00)
        "#]],
    );
}

#[test]
fn for_each_over_too_long_a_list_or_not_a_list_fails_with_a_clear_error_and_an_empty_list_succeeds() {
    check(
        FAN_OUT,
        &[started(0, json!({"docs": ["a", "b", "c"]})), ok("list", 1, 10, json!(1)), resolved("classify", 3, 2, 11)],
        expect![[r#"
            @0 start -> [dispatch list#1 {"docs":["a","b","c"]}]
            @10 ok list#1 -> [resolve classify (3 items)]
            @11 resolved classify 3/2 -> [finish]
            run=failed list=succeeded classify=failed summary=skipped [step_failed: step `classify` failed: for_each_error: `for_each` gave 3 items; a step may fan out over at most 2 (the engine's `for_each_max_items`)] budget(spent=0.00 reserved=0.00 extended=0.00)
        "#]],
    );
    let not_a_list = FAN_OUT.replace("for_each: \"${{ params.docs }}\"", "for_each: \"${{ steps.list.output }}\"");
    check(
        &not_a_list,
        &[started(0, json!({"docs": ["a"]})), ok("list", 1, 10, json!(1))],
        expect![[r#"
            @0 start -> [dispatch list#1 {"docs":["a"]}]
            @10 ok list#1 -> [finish]
            run=failed list=succeeded classify=failed summary=skipped [step_failed: step `classify` failed: for_each_error: `for_each` must give a list, but gave a number (1)] budget(spent=0.00 reserved=0.00 extended=0.00)
        "#]],
    );
    check(
        FAN_OUT,
        &[
            started(0, json!({"docs": []})),
            ok("list", 1, 10, json!(1)),
            resolved("classify", 0, 1000, 11),
            ok("summary", 1, 20, json!(1)),
        ],
        expect![[r#"
            @0 start -> [dispatch list#1 {"docs":[]}]
            @10 ok list#1 -> [resolve classify (0 items)]
            @11 resolved classify 0/1000 -> [dispatch summary#1 {"labels":[]}]
            @20 ok summary#1 -> [finish]
            run=succeeded list=succeeded classify=succeeded summary=succeeded budget(spent=0.00 reserved=0.00 extended=0.00)
        "#]],
    );
}

#[test]
fn items_are_held_by_the_budget_one_by_one_and_a_blocked_item_asks_for_guidance_on_its_own() {
    let tight = FAN_OUT.replace("max_cost: 10", "max_cost: 1.0");
    check(
        &tight,
        &[
            started(0, json!({"docs": ["a", "b", "c"]})),
            ok("list", 1, 10, json!(1)),
            resolved("classify", 3, 1000, 11),
            decided("r1.budget.1", Decision::Extend { amount: Money::parse("1.0").unwrap() }, 12),
            blocked("classify.1", 20),
            ok("classify.0", 1, 21, json!("a")),
            ok("classify.2", 1, 22, json!("c")),
            Event::HumanDecided {
                request: RequestId::from("r1.classify.1.2"),
                decision: Decision::Modify { value: json!("corrected") },
                by: "ann".into(),
                comment: None,
                released: None,
                by_policy: false,
                at: 30,
            },
        ],
        expect![[r#"
            @0 start -> [dispatch list#1 {"docs":["a","b","c"]}]
            @10 ok list#1 -> [resolve classify (3 items)]
            @11 resolved classify 3/1000 -> [dispatch classify.0#1 {"doc":"a","n":0}, dispatch classify.1#1 {"doc":"b","n":1}, ask BudgetExtension r1.budget.1 "The run's budget (1.00 USD, 0.00 spent) cannot cover step `classify` (estimated 0.50). Extend it by at least 0.50?"]
            @12 human r1.budget.1 Extend { amount: Money(1) } -> [dispatch classify.2#1 {"doc":"c","n":2}]
            @20 blocked classify.1#1 -> [ask Guidance r1.classify.1.2 "The output of item 1 of step `classify` was blocked by the gate mesh (threat.override). Approve it as is, supply a corrected value, or abort the run?"]
            @21 ok classify.0#1 -> []
            @22 ok classify.2#1 -> []
            @30 human r1.classify.1.2 Modify { value: String("corrected") } -> [dispatch summary#1 {"labels":["a","corrected","c"]}]
            run=running list=succeeded classify=succeeded[succeeded,succeeded,succeeded] summary=running budget(spent=1.50 reserved=0.00 extended=1.00)
        "#]],
    );
}

#[test]
fn a_recovered_fan_out_redoes_what_is_outstanding_and_cancelling_cancels_every_item() {
    let spec = spec(FAN_OUT);
    let events = [started(0, json!({"docs": ["a", "b"]})), ok("list", 1, 10, json!(1))];
    let state = replay(&spec, RunId::from("r1"), &events);
    // Crashed before the length was journaled: resolve it again.
    let out: Vec<String> = outstanding(&spec, &state).iter().map(render_action).collect();
    assert_eq!(out, ["resolve classify (2 items)"]);
    let events = [
        started(0, json!({"docs": ["a", "b"]})),
        ok("list", 1, 10, json!(1)),
        resolved("classify", 2, 1000, 11),
        ok("classify.0", 1, 20, json!("x")),
    ];
    let mut state = replay(&spec, RunId::from("r1"), &events);
    let out: Vec<String> = outstanding(&spec, &state).iter().map(render_action).collect();
    assert_eq!(out, [r#"dispatch classify.1#1 {"doc":"b","n":1}"#]);
    assert!(state.wants_outcome(crate::run::Slot::item(1, 1), 1));
    assert!(!state.wants_outcome(crate::run::Slot::item(1, 0), 1), "item 0 has its outcome already");
    apply(&spec, &mut state, &Event::Cancelled { by: "ann".into(), reason: "stop".into(), at: 30 });
    assert_eq!(state.steps[1].items[1].status.label(), "cancelled");
    assert_eq!(state.steps[1].items[1].attempts[0].status, AttemptStatus::Cancelled);
    // A late outcome of an item of a finished run, or of an item that does not exist, changes nothing.
    let before = state.clone();
    apply(&spec, &mut state, &ok("classify.1", 1, 40, json!("late")));
    apply(&spec, &mut state, &ok("classify.7", 1, 40, json!("?")));
    assert_eq!(state, before);
}

#[test]
fn for_each_is_validated_where_it_is_written() {
    let err = |yaml: &str| parse_yaml(yaml).expect_err("invalid").to_string();
    let base =
        |step: &str| format!("id: w\nowner: o\nparameters:\n  xs: {{ type: array, default: [] }}\nsteps:\n{step}\n");
    let e = err(&base("  - { id: a, type: delay, duration: 1s, for_each: \"${{ params.xs }}\" }"));
    assert!(e.contains("steps[0] (a).for_each") && e.contains("a `delay` step cannot fan out"), "{e}");
    let e = err(&base("  - { id: a, type: code, script: x, for_each: \"params.xs\" }"));
    assert!(e.contains("must be a list, or a `${{ … }}` template"), "{e}");
    let e = err(&base("  - { id: a, type: code, script: x, inputs: { d: \"${{ item }}\" } }"));
    assert!(e.contains("steps[0] (a).inputs") && e.contains("only in a step with `for_each`"), "{e}");
    let e = err(&base("  - { id: a, type: code, script: x, for_each: \"${{ steps.zz.output }}\" }"));
    assert!(e.contains("`steps.zz` is not a step of this workflow"), "{e}");
    // A literal list, and a field called `item` of an output, are fine.
    parse_yaml(&base("  - { id: a, type: code, script: x, for_each: [1, 2], inputs: { d: \"${{ item }}\" } }\n  - { id: b, type: code, script: x, needs: [a], inputs: { d: \"${{ steps.a.output.item }}\" } }")).unwrap();
}

const PARENT: &str = r#"
id: parent
owner: o
parameters: { client: { type: string, default: Acme } }
budget: { max_cost: 1.0 }
steps:
  - { id: prep, type: code, script: x, cost: 0.2 }
  - { id: child, type: platform, needs: [prep], action: workflow.run, with: { workflow: research, params: { who: "${{ params.client }}" } } }
  - { id: after, type: code, needs: [child], script: x, cost: 0.1 }
"#;

fn child_of(step: &str, at: u64) -> RunId {
    crate::run::child_run_id(&RunId::from("r1"), &StepId::from(step), at)
}

fn child_done(step: &str, at: u64, cost: &str, output: Value) -> Event {
    Event::ChildFinished {
        step: StepId::from(step),
        child: child_of(step, 2),
        outcome: crate::run::ChildOutcome::Succeeded { output },
        cost: Money::parse(cost).unwrap(),
        at,
    }
}

fn child_asks(step: &str, at: u64, request: &str, amount: &str) -> Event {
    Event::ChildBudgetAsked {
        step: StepId::from(step),
        child: child_of(step, 2),
        request: RequestId::from(request),
        amount: Money::parse(amount).unwrap(),
        at,
    }
}

/// A sub-workflow is granted the parent's remaining budget; its output and actual cost are
/// settled on the step; replay gives the same state.
#[test]
fn a_sub_workflow_spends_from_the_parents_budget() {
    check(
        PARENT,
        &[
            started(1, json!({"client": "Acme"})),
            ok_cost("prep", 1, 2, "0.2"),
            child_done("child", 3, "0.5", json!({"outputs": {"x": 1}})),
            ok_cost("after", 1, 4, "0.1"),
        ],
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of child: research {"who":"Acme"} depth=1 budget=Some("0.80")]
            @3 child of child ended 0.50 {"outcome":"succeeded","output":{"outputs":{"x":1}}} -> [dispatch after#1]
            @4 ok after#1 -> [finish]
            run=succeeded prep=succeeded child=succeeded after=succeeded budget(spent=0.80 reserved=0.00 extended=0.00)
        "#]],
    );
}

/// A child short of its grant asks the parent; the parent has nothing left, so it pauses for an
/// extension, and grants the child what was asked once a person extends.
#[test]
fn a_sub_workflow_short_of_budget_pauses_the_parent_for_an_extension() {
    check(
        PARENT,
        &[
            started(1, json!({"client": "Acme"})),
            ok_cost("prep", 1, 2, "0.2"),
            child_asks("child", 3, "c.budget.1", "0.3"),
            decided("r1.budget.1", Decision::Extend { amount: Money::parse("0.5").unwrap() }, 4),
            child_done("child", 5, "1.1", json!({})),
        ],
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of child: research {"who":"Acme"} depth=1 budget=Some("0.80")]
            @3 child of child asks 0.30 on c.budget.1 -> [ask BudgetExtension r1.budget.1 "Sub-workflow run 00000000025NJW4WP9Z6TQ10CV of step `child` needs 0.30 more, and the run's budget (1.00 USD, 0.20 spent, 0.80 reserved) cannot cover it. Extend it by at least 0.30?"]
            @4 human r1.budget.1 Extend { amount: Money(0.5) } -> [grant 0.30 on c.budget.1]
            @5 child of child ended 1.10 {"outcome":"succeeded","output":{}} -> [dispatch after#1]
            run=running prep=succeeded child=succeeded after=running budget(spent=1.30 reserved=0.10 extended=0.50)
        "#]],
    );
}

/// Cancelling the parent cancels the child; a failed child fails the step with its error.
#[test]
fn the_parent_cancels_its_child_and_a_failed_child_fails_the_step() {
    check(
        PARENT,
        &[
            started(1, json!({"client": "Acme"})),
            ok_cost("prep", 1, 2, "0.2"),
            Event::Cancelled { by: "ann".into(), reason: "stop".into(), at: 3 },
        ],
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of child: research {"who":"Acme"} depth=1 budget=Some("0.80")]
            @3 cancel -> [cancel child 00000000025NJW4WP9Z6TQ10CV, finish]
            run=cancelled prep=succeeded child=cancelled after=cancelled budget(spent=0.20 reserved=0.00 extended=0.00) unsettled=[child]
        "#]],
    );
    let failed = Event::ChildFinished {
        step: StepId::from("child"),
        child: child_of("child", 2),
        outcome: crate::run::ChildOutcome::Failed {
            error: StepError::permanent("child_failed", "sub-workflow `research` (run X) failed: step `a` failed"),
        },
        cost: Money::parse("0.1").unwrap(),
        at: 3,
    };
    check(
        PARENT,
        &[started(1, json!({"client": "Acme"})), ok_cost("prep", 1, 2, "0.2"), failed],
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of child: research {"who":"Acme"} depth=1 budget=Some("0.80")]
            @3 child of child ended 0.10 {"outcome":"failed","error":{"class":"permanent","code":"child_failed","message":"sub-workflow `research` (run X) failed: step `a` failed"}} -> [finish]
            run=failed prep=succeeded child=failed after=skipped [step_failed: step `child` failed: child_failed: sub-workflow `research` (run X) failed: step `a` failed] budget(spent=0.30 reserved=0.00 extended=0.00)
        "#]],
    );
}

fn child_cancelled(at: u64, cost: &str) -> Event {
    Event::ChildFinished {
        step: StepId::from("child"),
        child: child_of("child", 2),
        outcome: crate::run::ChildOutcome::Failed {
            error: StepError::permanent(
                "child_cancelled",
                "sub-workflow `research` (run X) was cancelled by run r1: …",
            ),
        },
        cost: Money::parse(cost).unwrap(),
        at,
    }
}

/// A parent that ends while its child runs — cancelled, or failed on a refused extension —
/// cancels the child and keeps the step unsettled until the child's end is journaled after its
/// own: then what the child spent up to its cancellation is charged to the step, once. Replay
/// gives the same; a recovered unsettled parent cancels the child again.
#[test]
fn a_parent_that_ends_first_settles_what_its_cancelled_child_spent() {
    let events = [
        started(1, json!({"client": "Acme"})),
        ok_cost("prep", 1, 2, "0.2"),
        Event::Cancelled { by: "ann".into(), reason: "stop".into(), at: 3 },
        child_cancelled(4, "0.35"),
        child_cancelled(5, "0.35"),
    ];
    check(
        PARENT,
        &events[..3],
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of child: research {"who":"Acme"} depth=1 budget=Some("0.80")]
            @3 cancel -> [cancel child 00000000025NJW4WP9Z6TQ10CV, finish]
            run=cancelled prep=succeeded child=cancelled after=cancelled budget(spent=0.20 reserved=0.00 extended=0.00) unsettled=[child]
        "#]],
    );
    check(
        PARENT,
        &events,
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of child: research {"who":"Acme"} depth=1 budget=Some("0.80")]
            @3 cancel -> [cancel child 00000000025NJW4WP9Z6TQ10CV, finish]
            @4 child of child ended 0.35 {"outcome":"failed","error":{"class":"permanent","code":"child_cancelled","message":"sub-workflow `research` (run X) was cancelled by run r1: …"}} -> []
            @5 child of child ended 0.35 {"outcome":"failed","error":{"class":"permanent","code":"child_cancelled","message":"sub-workflow `research` (run X) was cancelled by run r1: …"}} -> []
            run=cancelled prep=succeeded child=cancelled after=cancelled budget(spent=0.55 reserved=0.00 extended=0.00)
        "#]],
    );
    let spec = spec(PARENT);
    let unsettled = replay(&spec, RunId::from("r1"), &events[..3]);
    let redo: Vec<String> = outstanding(&spec, &unsettled).iter().map(render_action).collect();
    assert_eq!(
        redo,
        ["cancel child 00000000025NJW4WP9Z6TQ10CV"],
        "a recovered parent cancels its unsettled child again"
    );
    assert!(!unsettled.is_settled());
    let settled = replay(&spec, RunId::from("r1"), &events);
    assert!(settled.is_settled() && outstanding(&spec, &settled).is_empty());
    assert_eq!(settled.steps[1].cost, Money::parse("0.35").unwrap(), "the child's spend is on the step");

    // Failed: the extension the child needed was refused.
    check(
        PARENT,
        &[
            started(1, json!({"client": "Acme"})),
            ok_cost("prep", 1, 2, "0.2"),
            child_asks("child", 3, "c.budget.1", "0.3"),
            decided("r1.budget.1", Decision::Reject, 4),
            child_cancelled(5, "0.8"),
        ],
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of child: research {"who":"Acme"} depth=1 budget=Some("0.80")]
            @3 child of child asks 0.30 on c.budget.1 -> [ask BudgetExtension r1.budget.1 "Sub-workflow run 00000000025NJW4WP9Z6TQ10CV of step `child` needs 0.30 more, and the run's budget (1.00 USD, 0.20 spent, 0.80 reserved) cannot cover it. Extend it by at least 0.30?"]
            @4 human r1.budget.1 Reject -> [cancel child 00000000025NJW4WP9Z6TQ10CV, withdraw r1.budget.1, finish]
            @5 child of child ended 0.80 {"outcome":"failed","error":{"class":"permanent","code":"child_cancelled","message":"sub-workflow `research` (run X) was cancelled by run r1: …"}} -> []
            run=failed prep=succeeded child=cancelled after=cancelled [budget_exhausted: budget of 1.00 exhausted; extension refused by ann] budget(spent=1.00 reserved=0.00 extended=0.00)
        "#]],
    );
}

const TWO_CHILDREN: &str = r#"
id: parent
owner: o
budget: { max_cost: 1.0 }
steps:
  - { id: prep, type: code, script: x, cost: 0.2 }
  - { id: a, type: platform, needs: [prep], action: workflow.run, cost: 0.4, with: { workflow: research } }
  - { id: b, type: platform, needs: [prep], action: workflow.run, cost: 0.4, with: { workflow: research } }
"#;

/// Two children short at once: the request is about the first ask only (its question, and what
/// `approve` extends by); the second waits in line and gets its own request once the first is
/// answered — never an extension larger than what the person was asked.
#[test]
fn a_second_childs_ask_waits_for_the_answer_to_the_first() {
    let events = [
        started(1, json!({})),
        ok_cost("prep", 1, 2, "0.2"),
        child_asks("a", 3, "a.budget.1", "0.3"),
        child_asks("b", 4, "b.budget.1", "0.5"),
        child_asks("b", 5, "b.budget.1", "0.5"),
        decided("r1.budget.1", Decision::Approve, 6),
        decided("r1.budget.2", Decision::Approve, 7),
    ];
    // Recovered with both asks open, the run asks again about the first only.
    let spec = spec(TWO_CHILDREN);
    let waiting = replay(&spec, RunId::from("r1"), &events[..5]);
    let redo: Vec<String> =
        outstanding(&spec, &waiting).iter().map(render_action).filter(|a| a.starts_with("ask ")).collect();
    assert!(
        redo.len() == 1
            && redo[0].starts_with("ask BudgetExtension r1.budget.1")
            && redo[0].contains("step `a` needs 0.30"),
        "{redo:?}"
    );
    check(
        TWO_CHILDREN,
        &events,
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of a: research {} depth=1 budget=Some("0.40"), start child of b: research {} depth=1 budget=Some("0.40")]
            @3 child of a asks 0.30 on a.budget.1 -> [ask BudgetExtension r1.budget.1 "Sub-workflow run 000000000295Q6S85G386H28G0 of step `a` needs 0.30 more, and the run's budget (1.00 USD, 0.20 spent, 0.80 reserved) cannot cover it. Extend it by at least 0.30?"]
            @4 child of b asks 0.50 on b.budget.1 -> []
            @5 child of b asks 0.50 on b.budget.1 -> []
            @6 human r1.budget.1 Approve -> [grant 0.30 on a.budget.1, ask BudgetExtension r1.budget.2 "Sub-workflow run 0000000002P3A5JHEDTQDPSGVX of step `b` needs 0.50 more, and the run's budget (1.30 USD, 0.20 spent, 1.10 reserved) cannot cover it. Extend it by at least 0.50?"]
            @7 human r1.budget.2 Approve -> [grant 0.50 on b.budget.1]
            run=running prep=succeeded a=waiting_child b=waiting_child budget(spent=0.20 reserved=1.60 extended=0.80)
        "#]],
    );
}

/// The child an open request is about finishes first: the request is withdrawn, and the ask
/// waiting behind it is taken up with what that child left unspent.
#[test]
fn a_request_whose_child_finished_is_withdrawn_and_the_next_ask_taken_up() {
    check(
        TWO_CHILDREN,
        &[
            started(1, json!({})),
            ok_cost("prep", 1, 2, "0.2"),
            child_asks("a", 3, "a.budget.1", "0.3"),
            child_asks("b", 4, "b.budget.1", "0.1"),
            child_done("a", 5, "0.3", json!({})),
        ],
        expect![[r#"
            @1 start -> [dispatch prep#1]
            @2 ok prep#1 -> [start child of a: research {} depth=1 budget=Some("0.40"), start child of b: research {} depth=1 budget=Some("0.40")]
            @3 child of a asks 0.30 on a.budget.1 -> [ask BudgetExtension r1.budget.1 "Sub-workflow run 000000000295Q6S85G386H28G0 of step `a` needs 0.30 more, and the run's budget (1.00 USD, 0.20 spent, 0.80 reserved) cannot cover it. Extend it by at least 0.30?"]
            @4 child of b asks 0.10 on b.budget.1 -> []
            @5 child of a ended 0.30 {"outcome":"succeeded","output":{}} -> [withdraw r1.budget.1, grant 0.10 on b.budget.1]
            run=running prep=succeeded a=succeeded b=waiting_child budget(spent=0.50 reserved=0.50 extended=0.00)
        "#]],
    );
}

/// A sub-workflow's run asks its parent for budget instead of a person; nesting is bounded.
#[test]
fn a_child_asks_its_parent_and_nesting_is_bounded() {
    let child = r#"
id: research
owner: o
steps:
  - { id: a, type: code, script: x, cost: 0.5 }
  - { id: b, type: code, needs: [a], script: x, cost: 0.5 }
"#;
    let spec = spec(child);
    let mut state = start(&spec, RunId::from("c"));
    let link = crate::run::ParentLink {
        run: RunId::from("r1"),
        workflow: "parent".into(),
        step: "child".into(),
        depth: 1,
        budget: Some(Money::parse("0.8").unwrap()),
    };
    apply(
        &spec,
        &mut state,
        &Event::RunStarted { at: 1, params: json!({}), quotes: Default::default(), parent: Some(link.clone()) },
    );
    let actions = apply(&spec, &mut state, &ok_cost("a", 1, 2, "0.5"));
    assert_eq!(
        actions,
        vec![Action::AskParent { request: RequestId::from("c.budget.1"), amount: Money::parse("0.2").unwrap() }]
    );
    assert_eq!(
        crate::run::open_budget_ask(&spec, &state),
        Some((RequestId::from("c.budget.1"), Money::parse("0.2").unwrap()))
    );
    assert_eq!(
        outstanding(&spec, &state),
        vec![Action::AskParent { request: RequestId::from("c.budget.1"), amount: Money::parse("0.2").unwrap() }]
    );
    let actions =
        apply(&spec, &mut state, &decided("c.budget.1", Decision::Extend { amount: Money::parse("0.2").unwrap() }, 3));
    assert!(matches!(&actions[..], [Action::Dispatch { step, .. }] if step.as_str() == "b"), "{actions:?}");

    let deep = spec_of_depth(crate::spec::steps::MAX_WORKFLOW_DEPTH);
    let mut state = start(&deep, RunId::from("d"));
    let link = crate::run::ParentLink { depth: crate::spec::steps::MAX_WORKFLOW_DEPTH, ..link };
    apply(
        &deep,
        &mut state,
        &Event::RunStarted { at: 1, params: json!({}), quotes: Default::default(), parent: Some(link) },
    );
    let e = state.steps[0].error.as_ref().expect("the step failed");
    assert_eq!(e.code, "recursion_limit");
    assert!(e.message.contains("9 levels deep (called from `parent`); at most 8"), "{}", e.message);
}

fn spec_of_depth(_: u32) -> ValidatedSpec {
    spec(
        "id: deep\nowner: o\nsteps:\n  - { id: again, type: platform, action: workflow.run, with: { workflow: other } }\n",
    )
}

const TOOLS: &str = r#"
id: wf
owner: ops
steps:
  - id: ask
    type: llm
    prompt: "Refund order 7?"
    tools:
      - { name: refund, description: "refund an order", authorize: true, api_call: { method: POST, url: "https://pay.example/refund" } }
  - { id: after, type: code, script: "return 1", needs: [ask] }
"#;

fn tool_ask(call: &str, at: u64, attempt: u32) -> Event {
    let ask = crate::conversation::ToolAsk {
        call_id: call.into(),
        tool: "refund".into(),
        arguments: json!({"order": 7}),
        reason: "the customer asked".into(),
        turn: 1,
        because: vec![],
    };
    Event::ToolAuthorisationAsked { step: StepId::from("ask"), attempt, at, started_at: at, ask, cost: Money::ZERO }
}

#[test]
fn a_tool_call_needing_authorisation_waits_for_a_human_and_the_next_attempt_carries_the_answer() {
    check(
        TOOLS,
        &[
            started(0, json!({})),
            tool_ask("c1", 5, 1),
            decided("r1.ask.1", Decision::AllowForRun, 10),
            tool_ask("c2", 15, 2),
            decided("r1.ask.2", Decision::Deny { reason: "not today".into() }, 20),
            ok("ask", 3, 25, json!({"text": "done"})),
        ],
        expect![[r#"
            @0 start -> [dispatch ask#1]
            @5 asks ask#1 tool refund (c1) -> [ask ToolAuthorisation r1.ask.1 "The model of step `ask` wants to call tool `refund`. Allow it once, allow it for the rest of this run, or deny it with a reason?"]
            @10 human r1.ask.1 AllowForRun -> [dispatch ask#2]
            @15 asks ask#2 tool refund (c2) -> [ask ToolAuthorisation r1.ask.2 "The model of step `ask` wants to call tool `refund`. Allow it once, allow it for the rest of this run, or deny it with a reason?"]
            @20 human r1.ask.2 Deny { reason: "not today" } -> [dispatch ask#3]
            @25 ok ask#3 -> [dispatch after#1]
            run=running ask=succeeded after=running
            ask: #1 suspended, #2 suspended, #3 succeeded
        "#]],
    );
    // The third attempt's input holds both answers; a recovered run asks the open request again.
    let spec = spec(TOOLS);
    let events = [
        started(0, json!({})),
        tool_ask("c1", 5, 1),
        decided("r1.ask.1", Decision::AllowForRun, 10),
        tool_ask("c2", 15, 2),
    ];
    let state = replay(&spec, RunId::from("r1"), &events);
    assert!(state.is_waiting(), "a run waiting for a tool authorisation is passivated like any human request");
    let again = outstanding(&spec, &state);
    assert!(
        matches!(&again[..], [Action::RequestHuman(r)] if r.id == RequestId::new("r1.ask.2") && r.context["arguments"] == json!({"order": 7})),
        "{again:?}"
    );
    let mut state = state;
    let actions = apply(&spec, &mut state, &decided("r1.ask.2", Decision::Deny { reason: "not today".into() }, 20));
    let Some(Action::Dispatch { input, .. }) = actions.first() else { panic!("{actions:?}") };
    assert_eq!(input["llm"]["grants"]["run"], json!({"refund": "ann"}));
    assert_eq!(input["llm"]["grants"]["calls"]["c1"], json!({"grant": "allow", "by": "ann"}));
    assert_eq!(input["llm"]["grants"]["calls"]["c2"], json!({"grant": "deny", "by": "ann", "reason": "not today"}));
}

#[test]
fn abort_on_a_tool_authorisation_ends_the_run() {
    check(
        TOOLS,
        &[started(0, json!({})), tool_ask("c1", 5, 1), decided("r1.ask.1", Decision::Abort, 10)],
        expect![[r#"
            @0 start -> [dispatch ask#1]
            @5 asks ask#1 tool refund (c1) -> [ask ToolAuthorisation r1.ask.1 "The model of step `ask` wants to call tool `refund`. Allow it once, allow it for the rest of this run, or deny it with a reason?"]
            @10 human r1.ask.1 Abort -> [withdraw r1.ask.1, finish]
            run=cancelled ask=cancelled after=cancelled
            ask: #1 suspended
        "#]],
    );
}

#[test]
fn a_continued_conversation_reserves_only_the_turns_left_and_a_retry_after_a_permanent_failure_starts_a_new_one() {
    let spec = spec(&TOOLS.replace("    prompt: \"Refund order 7?\"\n", "    prompt: \"Refund order 7?\"\n    max_turns: 4\n    retry: { max_attempts: 2, on: any, backoff: { initial: 1ms } }\n"));
    let price = crate::llm::ModelPrice {
        input_per_million: Money::parse("1").unwrap(),
        output_per_million: Money::parse("1").unwrap(),
    };
    let quote = crate::llm::ModelQuote { price, max_tokens: 100, calls: 4, per_call_bytes: 10, per_turn_bytes: 100 };
    let start_event =
        Event::RunStarted { at: 0, params: json!({}), quotes: [(StepId::from("ask"), quote)].into(), parent: None };
    let mut state = start(&spec, RunId::from("r1"));
    let bytes = "Refund order 7?".len() as u64;
    let first = apply(&spec, &mut state, &start_event);
    let Some(Action::Dispatch { input, .. }) = first.first() else { panic!("{first:?}") };
    assert_eq!(input["llm"]["reserved"], json!(quote.reservation(bytes)), "the first attempt reserves every turn");
    assert_eq!(input["llm"]["conversation"], 0);
    let mut ask = tool_ask("c1", 5, 1);
    if let Event::ToolAuthorisationAsked { ask, .. } = &mut ask {
        ask.turn = 3;
    }
    apply(&spec, &mut state, &ask);
    let next = apply(&spec, &mut state, &decided("r1.ask.1", Decision::AllowOnce, 10));
    let Some(Action::Dispatch { input, .. }) = next.first() else { panic!("{next:?}") };
    assert_eq!(
        input["llm"]["reserved"],
        json!(quote.reservation_from(bytes, 3)),
        "three calls are in the turn journal"
    );
    assert_eq!(state.steps[0].reserved, quote.reservation_from(bytes, 3));
    assert!(quote.reservation_from(bytes, 3) < quote.reservation(bytes));
    let retry = apply(&spec, &mut state, &fail("ask", 2, 20, StepError::permanent("max_turns", "too many")));
    let Some(Action::Dispatch { input, .. }) = retry.first() else { panic!("{retry:?}") };
    assert_eq!(input["llm"]["conversation"], 1, "a retry after a permanent failure is a fresh conversation");
    assert_eq!(input["llm"]["reserved"], json!(quote.reservation(bytes)));
}

#[test]
fn a_summarised_research_step_renders_its_prompt_with_the_query_reserves_for_its_hits_and_is_charged_exactly() {
    let spec = spec(
        r#"
id: find
owner: o
parameters:
  matter: { type: string, default: "warehouse lease" }
steps:
  - id: similar
    type: research
    collection: past
    query: "${{ params.matter }} fees"
    top_k: 3
    summarize:
      system: "You summarise past engagements."
      prompt: "Summarise the fee terms for {{ query }}."
      max_tokens: 100
"#,
    );
    let price = crate::llm::ModelPrice {
        input_per_million: Money::parse("1").unwrap(),
        output_per_million: Money::parse("1").unwrap(),
    };
    let catalog = crate::llm::ModelCatalog {
        default_provider: Some("p".into()),
        providers: [(
            "p".to_string(),
            serde_json::from_value(json!({"kind": "openai", "base_url": "http://x/v1", "model": "m"})).unwrap(),
        )]
        .into(),
        prices: crate::llm::PriceTable([("m".to_string(), price)].into()),
    };
    let quotes = catalog.quotes(&spec);
    let quote = quotes[&StepId::from("similar")];
    let crate::spec::StepKind::Research(r) = &spec.step(0).kind else { unreachable!() };
    assert_eq!(quote.per_call_bytes, r.summary_context_bound(), "the hits are sent with every call");
    assert_eq!(quote.calls, 2, "the summary and one round for its citations");
    let mut state = start(&spec, RunId::from("r1"));
    let first = apply(
        &spec,
        &mut state,
        &Event::RunStarted { at: 0, params: json!({"matter": "warehouse lease"}), quotes, parent: None },
    );
    let Some(Action::Dispatch { input, .. }) = first.first() else { panic!("{first:?}") };
    assert_eq!(input["query"], "warehouse lease fees");
    assert_eq!(
        input["llm"]["messages"][1],
        json!({"role": "user", "content": "Summarise the fee terms for warehouse lease fees."})
    );
    let bytes =
        ("You summarise past engagements.".len() + "Summarise the fee terms for warehouse lease fees.".len()) as u64;
    assert_eq!(input["llm"]["reserved"], json!(quote.reservation(bytes)));
    assert_eq!(state.steps[0].reserved, quote.reservation(bytes));
    // No hits, no call: the attempt reports nothing spent, and that is what it is charged.
    apply(&spec, &mut state, &ok("similar", 1, 5, json!({"hits": [], "summary": {"text": "", "citations": []}})));
    assert!(state.steps[0].cost.is_zero() && state.budget.spent.is_zero(), "{:?}", state.steps[0].cost);
}

/// What the run journals when the escalation policy's default won (as the run actor does).
fn by_policy(req: &str, decision: Decision, comment: &str, at: u64) -> Event {
    Event::HumanDecided {
        request: RequestId::from(req),
        decision,
        by: "escalation policy".into(),
        comment: Some(comment.into()),
        released: None,
        by_policy: true,
        at,
    }
}

const GUIDED: &str = r#"
id: gated
owner: ops
steps:
  - id: draft
    type: code
    script: "return 1"
    escalate: [{ after: 1h, to: leads }, { after: 2h, default: fail }]
  - { id: send, type: code, needs: [draft], script: "return 2" }
"#;

#[test]
fn guidance_nobody_gives_pages_then_fails_the_step_saying_why() {
    let h = 3_600_000;
    let draft = |level| Timer::Escalate { step: StepId::from("draft"), level };
    let why = "nobody answered the guidance request within 2h, so the escalation policy applied its default `fail`";
    check(
        GUIDED,
        &[
            started(0, json!({})),
            blocked("draft", 10),
            fired(draft(0), h + 10),
            fired(draft(1), 2 * h + 10),
            by_policy("r1.draft.1", Decision::Reject, why, 2 * h + 20),
        ],
        expect![[r#"
            @0 start -> [dispatch draft#1]
            @10 blocked draft#1 -> [ask Guidance r1.draft.1 "The output of step `draft` was blocked by the gate mesh (threat.override). Approve it as is, supply a corrected value, or abort the run?", timer escalate(draft/0) at=3600010]
            @3600010 fired escalate(draft/0) -> [page leads on r1.draft.1 (level 0), timer escalate(draft/1) at=7200010]
            @7200010 fired escalate(draft/1) -> [policy decides r1.draft.1 Reject]
            @7200020 human r1.draft.1 Reject -> [finish]
            run=failed draft=failed send=skipped [step_failed: step `draft` failed: guidance_timed_out: its output was blocked and nobody answered the guidance request within 2h, so the escalation policy applied its default `fail`]
            draft: #1 blocked
        "#]],
    );
    // The step's error says what happened.
    let spec = spec(GUIDED);
    let events = [
        started(0, json!({})),
        blocked("draft", 10),
        fired(draft(0), h + 10),
        fired(draft(1), 2 * h + 10),
        by_policy("r1.draft.1", Decision::Reject, why, 2 * h + 20),
    ];
    let state = replay(&spec, RunId::from("r1"), &events);
    let error = state.steps[0].error.clone().expect("the step's error");
    assert_eq!(error.code, "guidance_timed_out");
    assert!(error.message.contains(why), "{}", error.message);
}

const TOOLS_ESCALATING: &str = r#"
id: wf
owner: ops
steps:
  - id: ask
    type: llm
    prompt: "Refund order 7?"
    escalate: [{ after: 10m, default: refuse }]
    tools:
      - { name: refund, description: "refund an order", authorize: true, api_call: { method: POST, url: "https://pay.example/refund" } }
  - { id: after, type: code, script: "return 1", needs: [ask] }
"#;

#[test]
fn a_tool_authorisation_nobody_gives_is_denied_and_the_model_is_told_why() {
    let spec = spec(TOOLS_ESCALATING);
    let mut state = start(&spec, RunId::from("r1"));
    apply(&spec, &mut state, &started(0, json!({})));
    let asked = apply(&spec, &mut state, &tool_ask("c1", 5, 1));
    let timer = Timer::Escalate { step: StepId::from("ask"), level: 0 };
    assert!(asked.contains(&Action::ArmTimer { timer: timer.clone(), at: 600_005 }), "{asked:?}");
    let due = apply(&spec, &mut state, &fired(timer, 600_005));
    let [Action::DecideByPolicy { decision, reason, .. }] = &due[..] else { panic!("{due:?}") };
    let Decision::Deny { reason: told } = decision else { panic!("{decision:?}") };
    assert_eq!(told, "nobody authorised this call in time, so the escalation policy denied it");
    assert_eq!(
        reason,
        "nobody answered the tool authorisation within 10m, so the escalation policy applied its default `refuse`"
    );
    let next = apply(&spec, &mut state, &by_policy("r1.ask.1", decision.clone(), reason, 600_010));
    let Some(Action::Dispatch { input, .. }) = next.first() else { panic!("{next:?}") };
    assert_eq!(
        input["llm"]["grants"]["calls"]["c1"],
        json!({"grant": "deny", "by": "escalation policy", "reason": told})
    );
}

const BUDGET_ESCALATING: &str = r#"
id: budget
owner: ops
budget: { max_cost: 1.0, escalate: [{ after: 1h, to: finance }, { after: 3h, default: refuse }] }
steps:
  - { id: a, type: code, script: "return 1", cost: 0.6 }
  - { id: b, type: code, script: "return 1", cost: 0.6, needs: [a] }
"#;

#[test]
fn a_budget_extension_nobody_grants_pages_then_is_refused_and_the_run_fails_closed() {
    let h = 3_600_000;
    let why = "nobody answered the budget extension within 3h, so the escalation policy applied its default `refuse`";
    check(
        BUDGET_ESCALATING,
        &[
            started(0, json!({})),
            ok_cost("a", 1, 10, "0"),
            fired(Timer::EscalateBudget { level: 0 }, h + 10),
            fired(Timer::EscalateBudget { level: 1 }, 3 * h + 10),
            by_policy("r1.budget.1", Decision::Reject, why, 3 * h + 20),
        ],
        expect![[r#"
            @0 start -> [dispatch a#1]
            @10 ok a#1 -> [ask BudgetExtension r1.budget.1 "The run's budget (1.00 USD, 0.60 spent) cannot cover step `b` (estimated 0.60). Extend it by at least 0.20?", timer escalate(budget/0) at=3600010]
            @3600010 fired escalate(budget/0) -> [page finance on r1.budget.1 (level 0), timer escalate(budget/1) at=10800010]
            @10800010 fired escalate(budget/1) -> [policy decides r1.budget.1 Reject]
            @10800020 human r1.budget.1 Reject -> [withdraw r1.budget.1, finish]
            run=failed a=succeeded b=cancelled [budget_exhausted: budget of 1.00 exhausted; extension refused: nobody answered the budget extension within 3h, so the escalation policy applied its default `refuse`] budget(spent=0.60 reserved=0.00 extended=0.00)
        "#]],
    );
    // A recovered run re-arms the next level, and redoes a default that fired unjournaled.
    let spec = spec(BUDGET_ESCALATING);
    let events =
        vec![started(0, json!({})), ok_cost("a", 1, 10, "0"), fired(Timer::EscalateBudget { level: 0 }, h + 10)];
    let state = replay(&spec, RunId::from("r1"), &events);
    assert!(
        outstanding(&spec, &state)
            .contains(&Action::ArmTimer { timer: Timer::EscalateBudget { level: 1 }, at: 3 * h + 10 })
    );
    let mut events = events;
    events.push(fired(Timer::EscalateBudget { level: 1 }, 3 * h + 10));
    let state = replay(&spec, RunId::from("r1"), &events);
    let redo: Vec<_> =
        outstanding(&spec, &state).into_iter().filter(|a| matches!(a, Action::DecideByPolicy { .. })).collect();
    assert_eq!(
        redo,
        vec![Action::DecideByPolicy {
            request: RequestId::from("r1.budget.1"),
            decision: Decision::Reject,
            reason: why.into()
        }]
    );
}

#[test]
fn escalation_is_validated_for_the_requests_it_serves() {
    let problems = |yaml: &str| match crate::spec::parse_yaml(yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    };
    let got = problems(
        "id: w\nowner: o\nbudget: { max_cost: 1, escalate: [{ after: 1h, default: approve }] }\nsteps:\n  - { id: a, type: code, script: x, escalate: [{ after: 1h, default: approve }] }\n  - { id: d, type: delay, duration: 1m, escalate: [{ after: 1h, to: ops }] }\n  - id: l\n    type: llm\n    prompt: hi\n    escalate: [{ after: 1h, default: fail }]\n    tools: [{ name: t, description: d, authorize: true, code: { script: x } }]\n  - { id: k, type: code, script: x, escalate: [{ after: 1h, default: { deny: \" \" } }] }\n",
    );
    expect![[r#"
        [
            "budget.escalate[0].default: `approve` cannot answer a budget extension, which this escalation serves: use refuse, reject or abort (a policy never spends beyond the cap)",
            "steps[0] (a).escalate[0].default: `approve` cannot answer a guidance request, which this escalation serves: use fail, refuse, abort or { value: … } (a policy never releases blocked output)",
            "steps[1] (d).escalate: a `delay` step asks no one, so it has nothing to escalate",
            "steps[2] (l).escalate[0].default: `fail` cannot answer a tool authorisation, which this escalation serves: use deny, refuse, { deny: reason } or abort (a policy never authorises a call)",
            "steps[3] (k).escalate[0].default.deny: the reason the model is given may not be empty",
            "steps[3] (k).escalate[0].default: `deny` cannot answer a guidance request, which this escalation serves: use fail, refuse, abort or { value: … } (a policy never releases blocked output)",
        ]
    "#]].assert_debug_eq(&got);
}
