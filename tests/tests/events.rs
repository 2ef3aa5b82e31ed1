//! The internal event bus and the `event` step, end to end on both backends (embedded SQLite
//! and real Redis): emit and wait across runs, the lookback window, passivation and wake-up
//! by a matching event, timeouts with their default outcome, dedup, `POST /api/events`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tollgate::http::router;
use tollgate::service::RunView;
use tollgate_engine::ids::RunId;
use tollgate_tests::harness::{TestSystem, each_backend, wait_for};
use tower::ServiceExt as _;

/// Waits for a payment event for its order, after an optional head start.
fn waiter(before: &str, timeout: &str, extra: &str) -> String {
    format!(
        r#"
id: await-payment
owner: ops
parameters:
  order: {{ type: string }}
steps:
  - {{ id: first, type: delay, duration: {before} }}
  - id: paid
    type: event
    needs: [first]
    wait: {{ name: payment.received, correlate: "event.payload.order == params.order", timeout: {timeout}{extra} }}
  - {{ id: ship, type: code, needs: [paid], script: "return {{ shipped: input.amount }}", inputs: {{ amount: "${{{{ steps.paid.output.payload.amount }}}}" }} }}
"#
    )
}

const PAYER: &str = r#"
id: pay
owner: ops
parameters:
  order: { type: string }
steps:
  - id: announce
    type: event
    emit: { name: payment.received, payload: { order: "${{ params.order }}", amount: 42 } }
"#;

async fn view(sys: &TestSystem, run: &RunId) -> RunView {
    sys.t().view(run).await.expect("run view")
}

/// Wait until the run has finished.
async fn finished(sys: &TestSystem, run: &RunId) -> RunView {
    let t = sys.t().clone();
    let r = run.clone();
    wait_for("the run to finish", Duration::from_secs(60), move || {
        let (t, r) = (t.clone(), r.clone());
        async move { t.view(&r).await.is_ok_and(|v| v.state.status.is_finished()) }
    })
    .await;
    view(sys, run).await
}

/// Wait until step `step` of the run shows `label`.
async fn step_reaches(sys: &TestSystem, run: &RunId, step: &str, label: &'static str) {
    let t = sys.t().clone();
    let (r, s) = (run.clone(), step.to_string());
    wait_for(&format!("step {step} to be {label}"), Duration::from_secs(60), move || {
        let (t, r, s) = (t.clone(), r.clone(), s.clone());
        async move { t.view(&r).await.is_ok_and(|v| TestSystem::step(&v, &s).status.label() == label) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_emitted_one_second_before_the_wait_starts_is_received() {
    each_backend(|sys| async move {
        let published =
            sys.t().emit_event("ops", "payment.received", &json!({"order": "A-1", "amount": 42}), None).await.unwrap();
        // The wait starts after a one-second delay step, so the event is a second older than it.
        let run = sys.start(&waiter("1s", "10m", ""), json!({"order": "A-1"})).await;
        let v = finished(&sys, &run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let paid = TestSystem::step(&v, "paid");
        let out = paid.output.clone().expect("the wait's output");
        assert_eq!((out["received"].clone(), out["id"].clone()), (json!(true), json!(published.id)));
        assert_eq!(out["payload"], json!({"order": "A-1", "amount": 42}));
        assert!(
            paid.started_at.unwrap() >= published.at + 1000,
            "the wait started {} ms after the event",
            paid.started_at.unwrap() - published.at
        );
        assert_eq!(TestSystem::step(&v, "ship").output, Some(json!({"shipped": 42})));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_is_passivated_and_woken_by_the_event_that_matches_it() {
    each_backend(|sys| async move {
        let run = sys.start(&waiter("1ms", "10m", ""), json!({"order": "A-7"})).await;
        step_reaches(&sys, &run, "paid", "waiting_event").await;
        let t = sys.t().clone();
        wait_for("the waiting run to be passivated", Duration::from_secs(30), || {
            let t = t.clone();
            async move { t.live_runs().await.unwrap() == 0 }
        })
        .await;
        // Another order's payment, from another workflow's emit step: not this run's.
        let other = sys.start(PAYER, json!({"order": "B-9"})).await;
        let o = finished(&sys, &other).await;
        assert_eq!(o.state.status.label(), "succeeded", "{:?}", o.state.status);
        let emitted = TestSystem::step(&o, "announce").output.clone().expect("emit output");
        assert_eq!(emitted["name"], "payment.received");
        // This run's payment wakes it.
        let payer = sys.start(PAYER, json!({"order": "A-7"})).await;
        let v = finished(&sys, &run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let out = TestSystem::step(&v, "paid").output.clone().unwrap();
        assert_eq!(out["payload"], json!({"order": "A-7", "amount": 42}));
        let p = finished(&sys, &payer).await;
        assert_eq!(
            TestSystem::step(&p, "announce").output.as_ref().unwrap()["id"],
            out["id"],
            "the event the payer emitted"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_survives_a_restart_and_receives_an_event_published_afterwards() {
    each_backend(|mut sys| async move {
        let run = sys.start(&waiter("1ms", "10m", ""), json!({"order": "R-1"})).await;
        step_reaches(&sys, &run, "paid", "waiting_event").await;
        sys.restart().await;
        sys.t().emit_event("ops", "payment.received", &json!({"order": "R-1", "amount": 5}), None).await.unwrap();
        let v = finished(&sys, &run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(TestSystem::step(&v, "ship").output, Some(json!({"shipped": 5})));
        sys.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_times_out_takes_its_default_outcome() {
    each_backend(|sys| async move {
        let defaulted = sys
            .start(&waiter("1ms", "1s", ", on_timeout: succeed, default: { amount: 0 }"), json!({"order": "T-1"}))
            .await;
        let failing = sys.start(&waiter("1ms", "1s", ""), json!({"order": "T-2"})).await;
        // An event for neither order does not end either wait.
        sys.t().emit_event("ops", "payment.received", &json!({"order": "T-3", "amount": 1}), None).await.unwrap();
        let v = finished(&sys, &defaulted).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        assert_eq!(TestSystem::step(&v, "paid").output, Some(json!({"received": false, "payload": {"amount": 0}})));
        assert_eq!(TestSystem::step(&v, "ship").output, Some(json!({"shipped": 0})));
        let f = finished(&sys, &failing).await;
        assert_eq!(f.state.status.label(), "failed");
        let error = TestSystem::step(&f, "paid").error.clone().expect("the wait's error");
        assert_eq!(error.code, "event_timeout", "{error:?}");
        assert_eq!(TestSystem::step(&f, "ship").status.label(), "skipped");
    })
    .await;
}

/// Every follower of the bus (the event dispatcher, each event trigger) keeps a tail call in
/// flight, blocked until an event comes or its wait ends. On Redis they used to share one
/// connection, where each blocked read waits for the ones before it: with a few followers in a
/// process, tails ran past the response timeout and failed, and a trigger's start waited
/// behind the dispatcher. Now ten idle tails at once each get their (empty) answer, and an
/// event then reaches all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_the_bus_do_not_wait_for_one_another() {
    each_backend(|sys| async move {
        let bus = sys.t().engine.events.clone().expect("the system has a bus");
        let start = bus.end().await.expect("the bus's end");
        let idle = (0..10).map(|_| {
            let (bus, mut cursor) = (bus.clone(), start.clone());
            async move { bus.tail(&mut cursor, Duration::from_secs(2)).await }
        });
        for answer in futures::future::join_all(idle).await {
            assert_eq!(answer.expect("an idle tail answers"), Vec::new());
        }
        let followers: Vec<_> = (0..10)
            .map(|_| {
                let (bus, mut cursor) = (bus.clone(), start.clone());
                tokio::spawn(async move {
                    loop {
                        let got = bus.tail(&mut cursor, Duration::from_secs(2)).await.expect("a tail answers");
                        if !got.is_empty() {
                            return got;
                        }
                    }
                })
            })
            .collect();
        let published = sys.t().emit_event("ops", "payment.received", &json!({"order": "F-1"}), None).await.unwrap();
        for follower in followers {
            let got = tokio::time::timeout(Duration::from_secs(60), follower)
                .await
                .expect("every follower sees the event")
                .unwrap();
            assert_eq!(got.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [published.id.as_str()]);
        }
    })
    .await;
}

async fn post(app: &axum::Router, body: Value) -> (StatusCode, Value) {
    post_as(app, None, "/api/events", body).await
}

async fn post_as(app: &axum::Router, token: Option<&str>, path: &str, body: Value) -> (StatusCode, Value) {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Body::from(body.to_string())).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_to_the_api_reach_waiting_runs_once_per_dedup_key() {
    each_backend(|sys| async move {
        let app = router(sys.t().clone(), String::new());
        let run = sys.start(&waiter("1ms", "10m", ""), json!({"order": "H-1"})).await;
        let body = json!({"name": "payment.received", "owner": "ops", "payload": {"order": "H-1", "amount": 9}, "dedup": "psp-delivery-77"});
        let (status, first) = post(&app, body.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{first}");
        assert_eq!(first["duplicate"], false);
        let (status, again) = post(&app, body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!((again["duplicate"].clone(), again["id"].clone()), (json!(true), first["id"].clone()));
        let v = finished(&sys, &run).await;
        assert_eq!(TestSystem::step(&v, "paid").output.as_ref().unwrap()["id"], first["id"]);
        let (status, bad) = post(&app, json!({"name": "no spaces allowed", "payload": {}})).await;
        assert_eq!((status, bad["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_event")));
        let (status, _) = post(&app, json!({"payload": {}})).await;
        assert!(status.is_client_error(), "a post without a name is refused: {status}");
    })
    .await;
}

/// Events live in their owner's scope: a user of another group can neither publish into the
/// owner's scope nor reach its runs with an event of the same name in their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_only_the_workflows_of_their_owner() {
    each_backend(|sys| async move {
        const ADMIN: &str = "events-admin-token-0123456789";
        let app = router(sys.t().clone(), ADMIN.into());
        let mut tokens = Vec::new();
        for (name, group) in [("ann", "ops"), ("sam", "sales")] {
            let (status, user) = post_as(&app, Some(ADMIN), "/api/users", json!({"name": name, "groups": [group]})).await;
            assert_eq!(status, StatusCode::CREATED, "{user}");
            tokens.push(user["token"].as_str().unwrap().to_string());
        }
        let (ann, sam) = (&tokens[0], &tokens[1]);
        let run = sys.start(&waiter("1ms", "10m", ""), json!({"order": "E-1"})).await;
        let t = sys.t().clone();
        let r = run.clone();
        wait_for("the run to wait for its event", Duration::from_secs(30), move || {
            let (t, r) = (t.clone(), r.clone());
            async move { t.view(&r).await.is_ok_and(|v| TestSystem::step(&v, "paid").status.label() == "waiting_event") }
        })
        .await;
        let event = |owner: Option<&str>| {
            let mut body = json!({"name": "payment.received", "payload": {"order": "E-1", "amount": 5}});
            if let Some(owner) = owner {
                body["owner"] = json!(owner);
            }
            body
        };
        // Sam may not publish as ops…
        let (status, refused) = post_as(&app, Some(sam), "/api/events", event(Some("ops"))).await;
        assert_eq!((status, refused["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{refused}");
        // …and the same name in sales' scope (his default) does not reach the ops run.
        let (status, theirs) = post_as(&app, Some(sam), "/api/events", event(None)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{theirs}");
        let (status, ours) = post_as(&app, Some(ann), "/api/events", event(Some("ops"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ours}");
        let v = finished(&sys, &run).await;
        let received = TestSystem::step(&v, "paid").output.clone().expect("the received event");
        assert_eq!(received["id"], ours["id"], "the run received ops' event, not sales': {received}");
    })
    .await;
}
