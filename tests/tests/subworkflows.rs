//! `workflow.run` end to end on both backends: a parent runs a child workflow and uses its
//! output; the child's cost exhausts the parent's budget and the parent pauses for an
//! extension (two children short at once are asked about one at a time); cancelling the parent aborts the child's call in flight, and what the child had
//! spent is charged to the parent's step (also when the parent fails); a parent passivated
//! while its child waits for a human resumes — across a restart — when the child finishes;
//! an unknown workflow and wrong parameters fail the step with their reason.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tollgate::service::RunView;
use tollgate_engine::ids::RunId;
use tollgate_engine::money::Money;
use tollgate_engine::run::{Decision, HumanMode};
use tollgate_engine::spec::parse_yaml;
use tollgate_tests::harness::{
    TestServer, TestSystem, each_backend, embedded, embedded_with, redis, redis_with, wait_for,
};

const GREETER: &str = r#"
id: greeter
owner: ops
parameters:
  who: { type: string, required: true }
  times: { type: integer, default: 1 }
steps:
  - id: greet
    type: code
    inputs: { who: "${{ params.who }}", times: "${{ params.times }}" }
    script: "return { greeting: 'hello ' + input.who, times: input.times }"
"#;

const CALLER: &str = r#"
id: caller
owner: ops
parameters:
  client: { type: string, default: Acme }
steps:
  - id: child
    type: platform
    action: workflow.run
    with: { workflow: greeter, params: { who: "${{ params.client }}", times: 2 } }
  - id: use
    type: code
    needs: [child]
    inputs: { said: "${{ steps.child.output.outputs.greet.greeting }}" }
    script: "return { said: input.said }"
"#;

fn known(sys: &TestSystem, yaml: &str) {
    sys.t().engine.workflows.add(parse_yaml(yaml).expect("valid child spec"));
}

async fn view(sys: &TestSystem, run: &RunId) -> RunView {
    sys.t().view(run).await.expect("run view")
}

async fn finished(sys: &TestSystem, run: &RunId) -> RunView {
    let t = sys.t().clone();
    let r = run.clone();
    // Finished and settled: what the children it cancelled spent is journaled too.
    wait_for("the run to finish", Duration::from_secs(60), move || {
        let (t, r) = (t.clone(), r.clone());
        async move { t.view(&r).await.is_ok_and(|v| v.state.is_settled()) }
    })
    .await;
    view(sys, run).await
}

/// Wait until a request is pending for people; all of them.
async fn asked(sys: &TestSystem) -> Vec<tollgate_engine::store::HumanRequestRecord> {
    let t = sys.t().clone();
    wait_for("a request for people", Duration::from_secs(60), || {
        let t = t.clone();
        async move { t.pending().await.is_ok_and(|p| !p.is_empty()) }
    })
    .await;
    sys.t().pending().await.unwrap()
}

/// The admin API on a real socket, in development mode (no admin token: loopback, local admin).
async fn listen(sys: &TestSystem) -> String {
    let app = tollgate::http::router(sys.t().clone(), String::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn child_of(v: &RunView, step: &str) -> RunId {
    TestSystem::step(v, step).child.clone().expect("the step names its child run")
}

/// The parent waits for its child — a workflow of the catalogue, from a configured spec
/// file — takes its output, and both runs show the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_runs_a_child_workflow_and_uses_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greeter.yaml");
    std::fs::write(&file, GREETER).unwrap();
    let catalogue = |c: &mut tollgate::config::Config| c.catalogue.files = vec![file.clone()];
    for sys in [embedded_with(catalogue).await, redis_with(catalogue).await] {
        let run = sys.start(CALLER, json!({"client": "Globex"})).await;
        // Settled (what `tollgate run` waits for) only once the child is done too.
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(TestSystem::step(&v, "use").output.as_ref().unwrap()["said"], "hello Globex");
        let out = TestSystem::step(&v, "child").output.clone().unwrap();
        assert_eq!(out["outputs"]["greet"], json!({"greeting": "hello Globex", "times": 2}));
        assert_eq!(out["status"], "succeeded");

        let child = child_of(&v, "child");
        let cv = view(&sys, &child).await;
        assert_eq!(cv.meta.workflow.as_str(), "greeter");
        assert_eq!(cv.meta.owner.as_str(), "ops", "the child is owned by the parent's owner");
        let link = cv.meta.parent.clone().expect("the child links to its parent");
        assert_eq!((link.run, link.step.as_str(), link.depth), (run.clone(), "child", 1));
        // The API's run view (the same JSON as `runs show --json`) shows both ends of the link.
        let pj = tollgate::cli::summary_json(&v);
        assert_eq!(pj["steps"][0]["child"], json!(child));
        let cj = tollgate::cli::summary_json(&cv);
        assert_eq!(cj["parent"]["run"], json!(run));
        // And the console's timeline, over HTTP.
        let base = listen(&sys).await;
        let tl: serde_json::Value =
            reqwest::get(format!("{base}/api/runs/{run}/timeline")).await.unwrap().json().await.unwrap();
        assert_eq!(tl["steps"][0]["child"], json!(child));
        let tl: serde_json::Value =
            reqwest::get(format!("{base}/api/runs/{child}/timeline")).await.unwrap().json().await.unwrap();
        assert_eq!(tl["parent"]["step"], "child");
    }
}

/// The parent's budget is the cap: the child, granted all the parent has left, runs short on
/// its second step; it asks its parent, which pauses for a budget extension (the child's own
/// request is not put to a person). Extending the parent lets the child finish; what the child
/// spent is settled on the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_workflows_cost_exhausts_the_parents_budget_and_the_parent_pauses_for_an_extension() {
    each_backend(|sys| async move {
        known(
            &sys,
            r#"
id: costly
owner: ops
steps:
  - { id: a, type: code, script: "return 1", cost: 0.6 }
  - { id: b, type: code, needs: [a], script: "return 2", cost: 0.6 }
"#,
        );
        let parent = r#"
id: frugal
owner: ops
budget: { max_cost: 1.0 }
steps:
  - { id: sub, type: platform, action: workflow.run, with: { workflow: costly } }
  - { id: after, type: code, needs: [sub], script: "return 3", cost: 0.1 }
"#;
        let run = sys.start(parent, json!({})).await;
        let pending = asked(&sys).await;
        let v = view(&sys, &run).await;
        assert!(v.state.is_waiting(), "the parent waits: {:?}", v.state.status);
        let request = v.state.budget_request.clone().expect("the parent asks for a budget extension");
        assert_eq!(pending.len(), 1, "only the parent's request is put to people: {pending:?}");
        assert_eq!(pending[0].request.id, request);
        assert_eq!(pending[0].request.mode, HumanMode::BudgetExtension);
        let needed: Money = serde_json::from_value(pending[0].request.context["needed"].clone()).unwrap();
        assert_eq!(needed, Money::parse("0.2").unwrap());
        // Both runs wait passivated; the parent journaled the child's ask once.
        let t = sys.t().clone();
        wait_for("both runs passivated", Duration::from_secs(60), || {
            let t = t.clone();
            async move { t.live_runs().await.is_ok_and(|n| n == 0) }
        })
        .await;
        let journal = sys.t().engine.store.read_journal(&v.meta.workflow, &run).await.unwrap();
        assert_eq!(
            journal.iter().filter(|e| matches!(e, tollgate_engine::run::Event::ChildBudgetAsked { .. })).count(),
            1
        );
        let child = child_of(&v, "sub");
        let cv = view(&sys, &child).await;
        assert_eq!(TestSystem::step(&cv, "a").status.label(), "succeeded");
        assert_eq!(TestSystem::step(&cv, "b").status.label(), "pending", "the child's second step waits for budget");

        sys.t()
            .decide(&request, Decision::Extend { amount: Money::parse("0.3").unwrap() }, "ann", None)
            .await
            .expect("extend");
        let v = finished(&sys, &run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(
            TestSystem::step(&v, "sub").cost,
            Money::parse("1.2").unwrap(),
            "the child's spend is settled on the step"
        );
        assert_eq!(v.state.budget.spent, Money::parse("1.3").unwrap());
        assert_eq!(v.state.budget.extended, Money::parse("0.3").unwrap());
        let cv = view(&sys, &child).await;
        assert_eq!(cv.state.status.label(), "succeeded");
        assert_eq!(cv.state.budget.spent, Money::parse("1.2").unwrap());

        // Refusing the extension instead fails the parent and cancels the child.
        let run = sys.start(parent, json!({})).await;
        asked(&sys).await;
        let v = view(&sys, &run).await;
        let request = v.state.budget_request.clone().expect("the parent asks again");
        let child = child_of(&v, "sub");
        sys.t().decide(&request, Decision::Reject, "ann", None).await.expect("reject");
        let v = finished(&sys, &run).await;
        assert_eq!(v.state.status.label(), "failed");
        let cv = finished(&sys, &child).await;
        assert_eq!(cv.state.status.label(), "cancelled", "{:?}", cv.state.status);
        // What the child spent before the parent failed is on the parent's record.
        assert_eq!(cv.state.budget.spent, Money::parse("0.6").unwrap());
        assert_eq!(TestSystem::step(&v, "sub").cost, Money::parse("0.6").unwrap());
        assert_eq!(v.state.budget.spent, Money::parse("0.6").unwrap());
    })
    .await;
}

/// Two children run short at once: the parent asks a person about one ask at a time, and each
/// request means what it says — approving the first extends by that child's shortfall and
/// grants that child (the other waits in line, never folded in), then the second gets its own
/// request. Both children finish; the parent's budget was extended by exactly what was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_children_short_at_once_are_asked_about_one_at_a_time() {
    each_backend(|sys| async move {
        known(
            &sys,
            r#"
id: costly
owner: ops
steps:
  - { id: a, type: code, script: "return 1", cost: 0.4 }
  - { id: b, type: code, needs: [a], script: "return 2", cost: 0.4 }
"#,
        );
        let parent = r#"
id: twins
owner: ops
budget: { max_cost: 1.0 }
steps:
  - { id: left, type: platform, action: workflow.run, cost: 0.5, with: { workflow: costly } }
  - { id: right, type: platform, action: workflow.run, cost: 0.5, with: { workflow: costly } }
"#;
        let run = sys.start(parent, json!({})).await;
        // Both asks are in the parent's state: one is the open request's, one waits behind it.
        let t = sys.t().clone();
        let r = run.clone();
        wait_for("both children's asks", Duration::from_secs(60), move || {
            let (t, r) = (t.clone(), r.clone());
            async move { t.view(&r).await.is_ok_and(|v| v.state.child_ask.is_some() && v.state.queued_asks.len() == 1) }
        })
        .await;
        let pending = asked(&sys).await;
        assert_eq!(pending.len(), 1, "one request at a time: {pending:?}");
        let first = &pending[0].request;
        let first_child: RunId = serde_json::from_value(first.context["child_run"].clone()).unwrap();
        let needed: Money = serde_json::from_value(first.context["needed"].clone()).unwrap();
        assert_eq!(needed, Money::parse("0.3").unwrap());
        assert!(first.question.contains(&first_child.to_string()), "{}", first.question);

        sys.t().decide(&first.id, Decision::Approve, "ann", None).await.expect("approve the first");
        // The child the request named is the one granted: it finishes.
        let cv = finished(&sys, &first_child).await;
        assert_eq!(cv.state.status.label(), "succeeded", "{:?}", cv.state.status);
        let t = sys.t().clone();
        let first_id = first.id.clone();
        wait_for("the second request", Duration::from_secs(60), move || {
            let (t, first_id) = (t.clone(), first_id.clone());
            async move { t.pending().await.is_ok_and(|p| p.len() == 1 && p[0].request.id != first_id) }
        })
        .await;
        let second = sys.t().pending().await.unwrap().remove(0).request;
        let second_child: RunId = serde_json::from_value(second.context["child_run"].clone()).unwrap();
        assert_ne!(second_child, first_child, "the second request is about the other child");
        let needed: Money = serde_json::from_value(second.context["needed"].clone()).unwrap();
        assert_eq!(needed, Money::parse("0.3").unwrap());
        let cv = view(&sys, &second_child).await;
        assert_eq!(TestSystem::step(&cv, "b").status.label(), "pending", "the other child still waits for budget");

        sys.t().decide(&second.id, Decision::Approve, "ann", None).await.expect("approve the second");
        let v = finished(&sys, &run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(v.state.budget.extended, Money::parse("0.6").unwrap(), "extended by what was asked, twice");
        assert_eq!(v.state.budget.spent, Money::parse("1.6").unwrap());
    })
    .await;
}

/// Cancelling the parent cancels the child, whose HTTP call in flight is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_cancels_the_child_and_aborts_its_call() {
    each_backend(|sys| async move {
        let server = TestServer::start(Arc::new(|_, _| (StatusCode::OK, vec![], "{}".into(), Duration::from_secs(120)))).await;
        known(
            &sys,
            &format!(
                "id: slow\nowner: ops\negress: {{ allow: [\"127.0.0.1\"] }}\nsteps:\n  - {{ id: call, type: api_call, request: {{ url: \"{}\" }}, timeout: 5m }}\n",
                server.url("/slow")
            ),
        );
        let run = sys.start("id: boss\nowner: ops\nsteps:\n  - { id: sub, type: platform, action: workflow.run, with: { workflow: slow } }\n", json!({})).await;
        wait_for("the child's call to be in flight", Duration::from_secs(60), || async { server.hits().len() == 1 }).await;
        sys.t().cancel(&run, "ann", "not needed").await.expect("cancel");
        wait_for("the child's call to be aborted", Duration::from_secs(60), || async { server.aborted() == 1 }).await;
        let v = finished(&sys, &run).await;
        assert_eq!(v.state.status.label(), "cancelled");
        let cv = finished(&sys, &child_of(&v, "sub")).await;
        match &cv.state.status {
            tollgate_engine::run::RunStatus::Cancelled { by, reason } => {
                assert_eq!(by, &format!("run {run}"));
                assert!(reason.contains("cancelled by ann: not needed"), "{reason}");
            }
            other => panic!("the child is not cancelled: {other:?}"),
        }
        assert_eq!(cv.state.steps[0].attempts[0].status.label(), "cancelled");
    })
    .await;
}

/// A parent cancelled while its child — having spent on a step with a `cost` — waits for a
/// person: the child is cancelled, and what it spent is charged to the parent's step,
/// journaled after the parent's cancellation (the child's journal has its own cancellation
/// with that spend). The parent's record is exact: its step and budget say what was spent, the
/// journal replays to the same, the listing's summary agrees, and the receipt verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_charges_what_the_child_spent() {
    each_backend(|sys| async move {
        known(
            &sys,
            r#"
id: spend-then-ask
owner: ops
steps:
  - { id: work, type: code, script: "return 1", cost: 0.25 }
  - { id: ok, type: approval, needs: [work], question: "Go on?" }
"#,
        );
        let parent = "id: boss\nowner: ops\nbudget: { max_cost: 1 }\nsteps:\n  - { id: prep, type: code, script: \"return 0\", cost: 0.1 }\n  - { id: sub, type: platform, needs: [prep], action: workflow.run, with: { workflow: spend-then-ask } }\n";
        let run = sys.start(parent, json!({})).await;
        let pending = asked(&sys).await;
        assert_eq!(pending[0].request.question, "Go on?", "the child waits for its approval");
        let child = child_of(&view(&sys, &run).await, "sub");
        sys.t().cancel(&run, "ann", "not needed").await.expect("cancel");

        // Settled: ended, and the child's spend journaled.
        let v = finished(&sys, &run).await;
        assert_eq!(v.state.status.label(), "cancelled");
        assert!(v.state.is_settled(), "{:?}", v.state.unsettled);
        let cv = view(&sys, &child).await;
        assert_eq!(cv.state.status.label(), "cancelled");
        assert_eq!(cv.state.budget.spent, Money::parse("0.25").unwrap());
        assert_eq!(TestSystem::step(&v, "sub").status.label(), "cancelled");
        assert_eq!(TestSystem::step(&v, "sub").cost, Money::parse("0.25").unwrap(), "the child's spend is on the parent's step");
        assert_eq!(v.state.budget.spent, Money::parse("0.35").unwrap(), "the parent's spend includes the child's");

        // Journaled on both sides, and replayed exactly.
        let store = &sys.t().engine.store;
        let journal = store.read_journal(&v.meta.workflow, &run).await.unwrap();
        let kinds: Vec<&str> = journal.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds[kinds.len() - 2..], ["cancelled", "child_finished"], "{kinds:?}");
        match journal.last().unwrap() {
            tollgate_engine::run::Event::ChildFinished { cost, child: c, .. } => assert_eq!((cost, c), (&Money::parse("0.25").unwrap(), &child)),
            other => panic!("{other:?}"),
        }
        let spec = sys.t().engine.spec(&v.meta.workflow, &v.meta.spec_digest).await.unwrap();
        assert_eq!(tollgate_engine::run::replay(&spec, run.clone(), &journal), v.state, "replay gives the parent's state");
        let child_journal = store.read_journal(&cv.meta.workflow, &child).await.unwrap();
        assert!(child_journal.iter().any(|e| e.kind() == "cancelled"));
        // The run's record as an auditor gets it — closed again with the settlement — verifies.
        let receipt = serde_json::to_value(tollgate::receipt::build(&sys.t().engine, &run).await.expect("receipt")).unwrap();
        let key = store.receipt_signer().await.unwrap().public();
        tollgate_engine::receipt::verify(&receipt, Some(&key)).unwrap_or_else(|e| panic!("the receipt verifies: {e}"));
        assert_eq!(receipt["entries"].as_array().unwrap().len(), journal.len());
    })
    .await;
}

const APPROVER: &str = r#"
id: sign-off
owner: ops
steps:
  - { id: ok, type: approval, question: "Sign off?" }
"#;

/// A parent whose child waits for a human is passivated, like the child; after a restart,
/// deciding the child's request finishes the child, which wakes the parent.
async fn passivated_parent_resumes(mut sys: TestSystem) {
    known(&sys, APPROVER);
    let run = sys.start("id: waits\nowner: ops\nsteps:\n  - { id: sub, type: platform, action: workflow.run, with: { workflow: sign-off } }\n  - { id: then, type: code, needs: [sub], script: \"return 'done'\" }\n", json!({})).await;
    let t = sys.t().clone();
    wait_for("the child's request and both runs passivated", Duration::from_secs(60), || {
        let t = t.clone();
        async move { t.pending().await.is_ok_and(|p| p.len() == 1) && t.live_runs().await.is_ok_and(|n| n == 0) }
    })
    .await;
    let v = view(&sys, &run).await;
    assert_eq!(TestSystem::step(&v, "sub").status.label(), "waiting_child");

    sys.restart().await;
    let request = sys.t().pending().await.unwrap()[0].request.id.clone();
    sys.t().decide(&request, Decision::Approve, "ann", None).await.expect("approve");
    let v = finished(&sys, &run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    assert_eq!(TestSystem::step(&v, "sub").output.as_ref().unwrap()["outputs"]["ok"]["by"], "ann");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passivated_parent_resumes_when_its_child_finishes_after_a_restart_embedded() {
    passivated_parent_resumes(embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passivated_parent_resumes_when_its_child_finishes_after_a_restart_redis() {
    passivated_parent_resumes(redis().await).await;
}

/// A run naming an unknown workflow, or a cycle of sub-workflows, is refused when it starts;
/// what cannot start later (a sub-workflow's own unknown reference, wrong parameters) fails
/// the step with a reason naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_workflows_cycles_and_wrong_parameters_are_refused_with_their_reason() {
    let sys = embedded().await;
    known(&sys, GREETER);
    let start = |yaml: &str| {
        let spec = parse_yaml(yaml).unwrap();
        let t = sys.t().clone();
        async move { t.start_run(&spec, &Default::default()).await }
    };
    let e = start("id: lost\nowner: ops\nsteps:\n  - { id: sub, type: platform, action: workflow.run, with: { workflow: nowhere } }\n").await.unwrap_err().to_string();
    assert_eq!(e, "steps[0] (sub).with.workflow: no workflow `nowhere` in the workflow catalogue");
    known(
        &sys,
        "id: ping\nowner: ops\nsteps:\n  - { id: back, type: platform, action: workflow.run, with: { workflow: pong } }\n",
    );
    let e = start("id: pong\nowner: ops\nsteps:\n  - { id: sub, type: platform, action: workflow.run, with: { workflow: ping } }\n").await.unwrap_err().to_string();
    assert_eq!(e, "steps[0] (sub).with.workflow: sub-workflows call each other in a cycle: pong → ping → pong");

    // A sub-workflow whose own step names an unknown workflow: its step fails, then the parent's.
    known(
        &sys,
        "id: middle\nowner: ops\nsteps:\n  - { id: deeper, type: platform, action: workflow.run, with: { workflow: nowhere } }\n",
    );
    let run = sys.start("id: top\nowner: ops\nsteps:\n  - { id: sub, type: platform, action: workflow.run, with: { workflow: middle } }\n", json!({})).await;
    let v = finished(&sys, &run).await;
    let e = TestSystem::step(&v, "sub").error.clone().unwrap();
    assert_eq!(e.code, "child_failed");
    assert!(
        e.message.contains("sub-workflow `middle`")
            && e.message.contains("workflow_not_found: no workflow `nowhere` in the workflow catalogue"),
        "{}",
        e.message
    );

    let run = sys
        .start("id: sloppy\nowner: ops\nsteps:\n  - { id: sub, type: platform, action: workflow.run, with: { workflow: greeter, params: { times: many, whom: x } } }\n", json!({}))
        .await;
    let v = finished(&sys, &run).await;
    let e = TestSystem::step(&v, "sub").error.clone().unwrap();
    assert_eq!(e.code, "bad_params");
    for part in [
        "sub-workflow `greeter`",
        "parameter whom: unknown parameter",
        "parameter times: expected an integer",
        "parameter who: required parameter is missing",
    ] {
        assert!(e.message.contains(part), "{part} is not in: {}", e.message);
    }
}
