//! Every attempt runs when, and only as often as, the audit trail says: time in the queue does
//! not count against a step's start-to-close `timeout`; `queue_timeout` fences an attempt no
//! worker started; cancelling a run aborts its calls in flight and starts nothing more.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tollgate_engine::run::AttemptStatus;
use tollgate_tests::harness::{TestServer, TestSystem, each_backend, embedded_with, redis_with, wait_for};

fn slow(delay: Duration) -> tollgate_tests::harness::Script {
    Arc::new(move |_, _| (StatusCode::OK, vec![], r#"{"ok":true}"#.into(), delay))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_in_the_queue_does_not_count_and_every_step_executes_exactly_once() {
    for sys in [embedded_with(|c| c.worker_concurrency = 16).await, redis_with(|c| c.worker_concurrency = 16).await] {
        // 48 calls of 1.5 s with a 2 s timeout on 16 workers: three waves. Counting queue time
        // would time out the later waves and run them twice.
        let server = TestServer::start(slow(Duration::from_millis(1500))).await;
        let mut yaml = String::from("id: waves\nowner: ops\negress: { allow: [\"127.0.0.1\"] }\nsteps:\n");
        for i in 0..48 {
            yaml.push_str(&format!(
                "  - {{ id: s{i}, type: api_call, request: {{ url: \"{}\" }}, timeout: 2s, retry: {{ max_attempts: 3 }} }}\n",
                server.url(&format!("/s{i}"))
            ));
        }
        let run = sys.start(&yaml, json!({})).await;
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let hits = server.hits();
        let paths: HashSet<String> = hits.iter().map(|h| h.path.clone()).collect();
        assert_eq!((hits.len(), paths.len()), (48, 48), "one request per step");
        for s in &v.state.steps {
            assert_eq!(s.attempts.len(), 1, "{:?}", s.attempts);
            assert_eq!(s.attempts[0].status, AttemptStatus::Succeeded);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_aborts_its_calls_in_flight_and_starts_no_new_step() {
    each_backend(|sys| async move {
        let server = TestServer::start(slow(Duration::from_secs(120))).await;
        let yaml = format!(
            r#"
id: cancellable
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - {{ id: left, type: api_call, request: {{ url: "{0}" }}, timeout: 5m }}
  - {{ id: right, type: api_call, request: {{ url: "{1}" }}, timeout: 5m }}
  - {{ id: after, type: api_call, needs: [left], request: {{ url: "{2}" }} }}
"#,
            server.url("/left"),
            server.url("/right"),
            server.url("/after")
        );
        let run = sys.start(&yaml, json!({})).await;
        wait_for("both calls in flight", Duration::from_secs(30), || async { server.hits().len() == 2 }).await;
        sys.t().cancel(&run, "ops", "no longer needed").await.expect("cancel");
        wait_for("both calls aborted", Duration::from_secs(30), || async { server.aborted() == 2 }).await;
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "cancelled");
        for id in ["left", "right"] {
            let s = TestSystem::step(&v, id);
            assert_eq!(s.attempts.len(), 1);
            assert_eq!(s.attempts[0].status, AttemptStatus::Cancelled, "{id}");
        }
        assert!(TestSystem::step(&v, "after").attempts.is_empty(), "a step after the cancellation started");
        assert_eq!(server.hits().len(), 2, "no new call after the cancellation");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_no_worker_starts_within_its_queue_timeout_is_fenced_and_never_runs() {
    // One worker slot, held by another run's call for as long as the test needs it.
    let sys = embedded_with(|c| c.worker_concurrency = 1).await;
    let server = TestServer::start(slow(Duration::from_secs(120))).await;
    let blocker = format!(
        "id: blocker\nowner: ops\negress: {{ allow: [\"127.0.0.1\"] }}\nsteps:\n  - {{ id: hold, type: api_call, request: {{ url: \"{}\" }}, timeout: 5m }}\n",
        server.url("/hold")
    );
    let blocker = sys.start(&blocker, json!({})).await;
    wait_for("the only worker to be busy", Duration::from_secs(30), || async { server.hits().len() == 1 }).await;

    let yaml = format!(
        "id: impatient\nowner: ops\negress: {{ allow: [\"127.0.0.1\"] }}\nsteps:\n  - {{ id: quick, type: api_call, request: {{ url: \"{}\" }}, queue_timeout: 300ms }}\n",
        server.url("/quick")
    );
    let run = sys.start(&yaml, json!({})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "failed");
    let quick = TestSystem::step(&v, "quick");
    assert_eq!(quick.attempts.len(), 1);
    assert_eq!(quick.attempts[0].status, AttemptStatus::NotStarted);
    assert_eq!(quick.error.as_ref().map(|e| e.code.as_str()), Some("queue_timeout"));

    // Free the worker: the fenced attempt's job, still in the queue, must not run.
    sys.t().cancel(&blocker, "ops", "done").await.expect("cancel");
    wait_for("the blocking call to be aborted", Duration::from_secs(30), || async { server.aborted() == 1 }).await;
    let probe = format!(
        "id: probe\nowner: ops\negress: {{ allow: [\"127.0.0.1\"] }}\nsteps:\n  - {{ id: ping, type: api_call, request: {{ url: \"{}\" }} }}\n",
        server.url("/ping")
    );
    // Jobs are delivered in order: once a later job on the single worker runs, the fenced
    // one has been delivered (and must have been dropped).
    sys.start(&probe, json!({})).await;
    wait_for("the probe to reach the server", Duration::from_secs(30), || async {
        server.hits().iter().any(|h| h.path == "/ping")
    })
    .await;
    assert!(server.hits().iter().all(|h| h.path != "/quick"), "a fenced attempt ran");
}
