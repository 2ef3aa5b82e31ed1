//! Runs end to end on both backends (embedded SQLite and real Redis): concurrency, retries,
//! timeouts, budget, human decisions, passivation and conditions.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tollgate::service::ServiceError;
use tollgate::system::RunUpdate;
use tollgate_engine::money::Money;
use tollgate_engine::run::{Decision, StepStatus};
use tollgate_tests::harness::{TestServer, TestSystem, each_backend, wait_for};

fn ok_after(delay: Duration) -> tollgate_tests::harness::Script {
    Arc::new(move |_, _| (StatusCode::OK, vec![], r#"{"ok":true}"#.into(), delay))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_branches_run_concurrently() {
    each_backend(|sys| async move {
        let server = TestServer::start(ok_after(Duration::from_millis(400))).await;
        let yaml = format!(
            r#"
id: fanout
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - {{ id: left, type: api_call, request: {{ url: "{0}" }} }}
  - {{ id: right, type: api_call, request: {{ url: "{0}" }} }}
  - {{ id: join, type: code, needs: [left, right], script: "return 1" }}
"#,
            server.url("/slow")
        );
        let run = sys.start(&yaml, json!({})).await;
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let (l, r) = (TestSystem::step(&v, "left"), TestSystem::step(&v, "right"));
        let (la, ra) = (&l.attempts[0], &r.attempts[0]);
        let latest_start = la.started_at.unwrap().max(ra.started_at.unwrap());
        let earliest_end = la.finished_at.unwrap().min(ra.finished_at.unwrap());
        assert!(latest_start < earliest_end, "branches did not overlap: left {la:?} right {ra:?}");
        let hits = server.hits();
        assert_eq!(hits.len(), 2);
        assert!(
            hits[1].at.duration_since(hits[0].at) < Duration::from_millis(300),
            "second branch waited for the first"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_retried_with_backoff_and_one_idempotency_key() {
    each_backend(|sys| async move {
        let server = TestServer::start(Arc::new(|n, _| {
            let status = if n < 2 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
            (status, vec![], r#"{"booked":true}"#.into(), Duration::ZERO)
        }))
        .await;
        let yaml = format!(
            r#"
id: flaky
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - id: book
    type: api_call
    request: {{ method: POST, url: "{}", body: {{ slot: 1 }} }}
    retry: {{ max_attempts: 3, backoff: {{ initial: 200ms, multiplier: 2 }} }}
"#,
            server.url("/book")
        );
        let run = sys.start(&yaml, json!({})).await;
        let v = sys.settle(&run).await;
        let book = TestSystem::step(&v, "book");
        assert_eq!(v.state.status.label(), "succeeded");
        assert_eq!(book.attempts.len(), 3);
        assert_eq!(book.attempts[0].error.as_ref().unwrap().code, "http_status");
        let hits = server.hits();
        assert_eq!(hits.len(), 3);
        let gap1 = hits[1].at.duration_since(hits[0].at);
        let gap2 = hits[2].at.duration_since(hits[1].at);
        assert!(gap1 >= Duration::from_millis(200), "first backoff too short: {gap1:?}");
        assert!(gap2 >= Duration::from_millis(400), "backoff did not grow: {gap2:?}");
        let keys: Vec<_> = hits.iter().map(|h| h.headers.get("idempotency-key").cloned()).collect();
        assert!(
            keys[0].is_some() && keys.iter().all(|k| *k == keys[0]),
            "attempts must share one idempotency key: {keys:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_times_out_is_dispatched_again() {
    each_backend(|sys| async move {
        let server = TestServer::start(Arc::new(|n, _| {
            // The first answer never comes in time; the retry's answer is immediate, and its
            // timeout leaves room for a loaded machine (500 ms did not: a debug build's second
            // attempt once outran it).
            let delay = if n == 0 { Duration::from_secs(60) } else { Duration::ZERO };
            (StatusCode::OK, vec![], r#"{"ok":true}"#.into(), delay)
        }))
        .await;
        let yaml = format!(
            r#"
id: slow
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - id: call
    type: api_call
    request: {{ url: "{}" }}
    timeout: 3s
    retry: {{ max_attempts: 2, backoff: {{ initial: 50ms }} }}
"#,
            server.url("/maybe-slow")
        );
        let run = sys.start(&yaml, json!({})).await;
        let v = sys.settle(&run).await;
        let call = TestSystem::step(&v, "call");
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(call.attempts.len(), 2);
        assert_eq!(call.attempts[0].error.as_ref().unwrap().code, "timeout");
    })
    .await;
}

const BUDGET: &str = r#"
id: budgeted
owner: ops
budget: { max_cost: 1.0 }
steps:
  - { id: research, type: code, script: "return 1", cost: 0.7 }
  - { id: draft, type: code, script: "return 2", cost: 0.7, needs: [research] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_budget_pauses_then_finishes_when_extended() {
    each_backend(|sys| async move {
        let run = sys.start(BUDGET, json!({})).await;
        let v = sys.settle(&run).await;
        assert!(v.state.is_waiting(), "run should pause on budget: {:?}", v.state.status);
        let request = v.state.budget_request.clone().expect("a budget-extension request");
        assert_eq!(TestSystem::step(&v, "draft").status, StepStatus::Pending, "draft must not be dispatched");
        let pending = sys.t().pending().await.unwrap();
        assert!(pending.iter().any(|r| r.request.id == request), "request is listed as pending");
        sys.t()
            .decide(&request, Decision::Extend { amount: Money::parse("0.5").unwrap() }, "cfo", Some("ok".into()))
            .await
            .unwrap();
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(v.state.budget.spent, Money::parse("1.4").unwrap(), "0.7 + 0.7, exactly");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_budget_extension_fails_the_run_closed() {
    each_backend(|sys| async move {
        let run = sys.start(BUDGET, json!({})).await;
        let v = sys.settle(&run).await;
        let request = v.state.budget_request.clone().expect("a budget-extension request");
        sys.t().decide(&request, Decision::Reject, "cfo", None).await.unwrap();
        let v = sys.settle(&run).await;
        match &v.state.status {
            tollgate_engine::run::RunStatus::Failed { reason } => assert_eq!(reason.code, "budget_exhausted"),
            other => panic!("expected budget_exhausted, got {other:?}"),
        }
        assert_eq!(TestSystem::step(&v, "draft").attempts.len(), 0, "draft never ran");
        assert!(sys.t().pending().await.unwrap().is_empty(), "no request left pending");
    })
    .await;
}

const APPROVAL: &str = r#"
id: approve-me
owner: ops
parameters:
  client: { type: string, required: true }
steps:
  - { id: letter, type: approval, question: "Send the letter to ${{ params.client }}?" }
  - { id: send, type: code, needs: [letter], script: "return { sent_to: input.to }", inputs: { to: "${{ params.client }}" } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_passivates_the_run_and_the_first_decision_wins() {
    each_backend(|sys| async move {
        let run = sys.start(APPROVAL, json!({"client": "Acme"})).await;
        let v = sys.settle(&run).await;
        let StepStatus::WaitingHuman { request } = TestSystem::step(&v, "letter").status.clone() else {
            panic!("letter should wait for a human: {:?}", TestSystem::step(&v, "letter").status)
        };
        let pending = sys.t().pending().await.unwrap();
        assert_eq!(pending[0].request.question, "Send the letter to Acme?");
        // Waiting on a human holds no live actor.
        let t = sys.t().clone();
        wait_for("the waiting run to be passivated", Duration::from_secs(5), || {
            let t = t.clone();
            async move { t.live_runs().await.unwrap() == 0 }
        })
        .await;
        sys.t().decide(&request, Decision::Approve, "partner", Some("fine".into())).await.unwrap();
        let second = sys.t().decide(&request, Decision::Reject, "someone-else", None).await;
        // Refused, with the first decision's outcome.
        match second {
            Err(ServiceError::AlreadyDecided(_, first)) => {
                assert_eq!((first.decision, first.by.as_str()), (Decision::Approve, "partner"))
            }
            other => panic!("{other:?}"),
        }
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let d = TestSystem::step(&v, "letter").decision.clone().expect("decision recorded on the step");
        assert_eq!((d.by.as_str(), d.comment.as_deref()), ("partner", Some("fine")));
        assert_eq!(TestSystem::step(&v, "send").output, Some(json!({"sent_to": "Acme"})));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_pauses_after_a_burst_of_outcomes_asks_once_and_stays_asleep() {
    each_backend(|sys| async move {
        // Outcomes arriving together are drained by the run in batches; the run then pauses.
        let mut yaml = String::from("id: burst\nowner: ops\nsteps:\n");
        for i in 0..24 {
            yaml.push_str(&format!("  - {{ id: s{i}, type: code, script: \"return {i}\" }}\n"));
        }
        let needs: Vec<String> = (0..24).map(|i| format!("s{i}")).collect();
        yaml.push_str(&format!(
            "  - {{ id: ask, type: approval, question: \"Go?\", needs: [{}] }}\n",
            needs.join(", ")
        ));
        let mut updates = sys.t().engine.updates.subscribe();
        let run = sys.start(&yaml, json!({})).await;
        let v = sys.settle(&run).await;
        assert!(matches!(TestSystem::step(&v, "ask").status, StepStatus::WaitingHuman { .. }), "{:?}", v.state.status);
        let t = sys.t().clone();
        wait_for("the waiting run to be passivated", Duration::from_secs(5), || {
            let t = t.clone();
            async move { t.live_runs().await.unwrap() == 0 }
        })
        .await;
        // Passivated once: not woken again to replay its journal, so the person (the console,
        // the pager) is told of the request once.
        let mut asked = 0;
        while let Ok(u) = updates.try_recv() {
            if matches!(&u, RunUpdate::HumanRequested { run: r, .. } if *r == run) {
                asked += 1;
            }
        }
        assert_eq!(asked, 1, "the request was published {asked} times");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_condition_skips_its_branch_and_the_run_can_be_cancelled() {
    each_backend(|sys| async move {
        let yaml = r#"
id: branches
owner: ops
parameters:
  amount: { type: number, required: true }
steps:
  - { id: large, type: condition, expr: "params.amount > 1000.0" }
  - { id: review, type: code, needs: [large], script: "return 'reviewed'" }
  - { id: always, type: code, script: "return 'done'" }
  - { id: hold, type: delay, duration: 1h, needs: [always] }
"#;
        let run = sys.start(yaml, json!({"amount": 10})).await;
        let sup = sys.t().clone();
        wait_for("the delay to start", Duration::from_secs(10), || {
            let t = sup.clone();
            let run = run.clone();
            async move { matches!(TestSystem::step(&t.view(&run).await.unwrap(), "hold").status, StepStatus::Delaying { .. }) }
        })
        .await;
        sys.t().cancel(&run, "ops", "client withdrew").await.unwrap();
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "cancelled");
        assert!(matches!(&TestSystem::step(&v, "review").status, StepStatus::Skipped { reason, .. } if reason.contains("condition `large` is false")));
        assert_eq!(TestSystem::step(&v, "always").status, StepStatus::Succeeded);
        assert_eq!(TestSystem::step(&v, "hold").status, StepStatus::Cancelled);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_system_finishes_a_run_and_a_delay_survives_it() {
    for mut sys in [tollgate_tests::harness::embedded().await, tollgate_tests::harness::redis().await] {
        let yaml = r#"
id: durable-delay
owner: ops
steps:
  - { id: wait, type: delay, duration: 1500ms }
  - { id: after, type: code, needs: [wait], script: "return 'after'" }
"#;
        let run = sys.start(yaml, json!({})).await;
        let t = sys.t().clone();
        wait_for("the delay to start", Duration::from_secs(10), || {
            let t = t.clone();
            let run = run.clone();
            async move {
                matches!(TestSystem::step(&t.view(&run).await.unwrap(), "wait").status, StepStatus::Delaying { .. })
            }
        })
        .await;
        sys.restart().await;
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let wait = TestSystem::step(&v, "wait");
        let waited = wait.finished_at.unwrap() - wait.started_at.unwrap();
        assert!(waited >= 1500, "the delay was cut short by the restart: {waited} ms");
        sys.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_spec_with_the_same_version_is_a_different_spec() {
    let sys = tollgate_tests::harness::embedded().await;
    let v1 = "id: edited\nowner: ops\nsteps:\n  - { id: a, type: approval, question: first? }\n";
    let v1_edited = "id: edited\nowner: ops\nsteps:\n  - { id: a, type: code, script: \"return 'edited'\" }\n  - { id: b, type: code, script: \"return 2\" }\n";
    let old = sys.start(v1, json!({})).await;
    assert!(sys.settle(&old).await.state.is_waiting());
    let new = sys.start(v1_edited, json!({})).await;
    let v = sys.settle(&new).await;
    assert_eq!(v.step_ids, vec!["a", "b"], "the new run follows the edited spec");
    assert_eq!(TestSystem::step(&v, "a").output, Some(json!("edited")));
    let v = sys.t().view(&old).await.unwrap();
    assert_eq!(v.step_ids, vec!["a"], "the old run keeps the spec it started with");
    assert!(matches!(TestSystem::step(&v, "a").status, StepStatus::WaitingHuman { .. }));
}

/// The SOP merge: a conflict needs a partner's approval, no conflict goes straight on; the memo
/// (`join: none_failed`) is written in both branches.
const MERGE: &str = r#"
id: merge
owner: ops
parameters:
  adverse: { type: string, required: true }
steps:
  - { id: check, type: code, inputs: { adverse: "${{ params.adverse }}" }, script: "return { conflict: input.adverse === 'Globex' }" }
  - { id: has_conflict, type: condition, needs: [check], expr: "steps.check.output.conflict" }
  - { id: conflict_partner, type: approval, needs: [has_conflict], question: "Conflict with ${{ params.adverse }}: take the matter?" }
  - { id: clear, type: condition, needs: [check], expr: "!steps.check.output.conflict" }
  - { id: memo, type: code, needs: [conflict_partner, clear], join: none_failed, script: "return 'memo'" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_none_failed_join_writes_the_memo_in_both_branches() {
    each_backend(|sys| async move {
        let clear = sys.start(MERGE, json!({"adverse": "Initech"})).await;
        let conflict = sys.start(MERGE, json!({"adverse": "Globex"})).await;

        let v = sys.settle(&clear).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert!(matches!(
            &TestSystem::step(&v, "conflict_partner").status,
            StepStatus::Skipped { upstream_failed: false, .. }
        ));
        assert_eq!(TestSystem::step(&v, "memo").output, Some(json!("memo")));

        let v = sys.settle(&conflict).await;
        let StepStatus::WaitingHuman { request } = TestSystem::step(&v, "conflict_partner").status.clone() else {
            panic!("a conflict waits for a partner: {:?}", TestSystem::step(&v, "conflict_partner").status)
        };
        sys.t().decide(&request, Decision::Approve, "partner", None).await.unwrap();
        let v = sys.settle(&conflict).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(TestSystem::step(&v, "memo").output, Some(json!("memo")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_chooses_what_retries_and_a_servers_retry_after_is_capped() {
    each_backend(|sys| async move {
        // 404 first (permanent, retried only because the step says so), then 429 asking for an
        // hour (capped by the step's backoff max), then 200.
        let server = TestServer::start(Arc::new(|n, _| match n {
            0 => (StatusCode::NOT_FOUND, vec![], "not yet".into(), Duration::ZERO),
            1 => (
                StatusCode::TOO_MANY_REQUESTS,
                vec![("retry-after", "3600".into())],
                "slow down".into(),
                Duration::ZERO,
            ),
            _ => (StatusCode::OK, vec![], r#"{"ok":true}"#.into(), Duration::ZERO),
        }))
        .await;
        let yaml = format!(
            r#"
id: retry-on
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - id: call
    type: api_call
    request: {{ url: "{}" }}
    retry: {{ max_attempts: 3, on: any, backoff: {{ initial: 50ms, max: 200ms }} }}
"#,
            server.url("/eventually")
        );
        let run = sys.start(&yaml, json!({})).await;
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let call = TestSystem::step(&v, "call");
        let codes: Vec<_> = call.attempts.iter().map(|a| a.error.as_ref().map(|e| e.code.as_str())).collect();
        assert_eq!(codes, [Some("http_status"), Some("http_status"), None]);
        assert_eq!(server.hits().len(), 3);
    })
    .await;
}
