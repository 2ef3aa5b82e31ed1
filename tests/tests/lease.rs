//! Fenced journal appends, seen from a run actor, on both backends: once another process took
//! a run's lease over, the actor that held it cannot append to the journal (its append is
//! refused, the actor stops), it does not take the run back while the new holder lives, and
//! the run carries on correctly once the lease is free again.
//!
//! The takeover is made in the store (as a successor that judged this process dead would
//! make it), and the reconcile tick is slow, so the write that meets the fence is the
//! journal append of a cancellation, not a lease renewal.

use std::time::Duration;

use axum::routing::any;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tollgate::liveness::Liveness;
use tollgate_engine::run::{Event, StepStatus};
use tollgate_engine::store::{LeaseGrant, keys};
use tollgate_tests::harness::{TestSystem, each_backend, wait_for};

const PATIENCE: Duration = Duration::from_secs(60);

/// A service that holds every request until released.
async fn held_service() -> (String, watch::Sender<bool>) {
    let (release, _) = watch::channel(false);
    let tx = release.clone();
    let app = axum::Router::new().fallback(any(move || {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.wait_for(|r| *r).await;
            r#"{"ok":true}"#
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, release)
}

async fn fenced_actor_stops_and_the_run_recovers(mut sys: TestSystem) {
    // One tick in the test's lifetime: the first (at start). The lease TTL allows it.
    sys.config.reconcile_interval = Duration::from_secs(20);
    sys.config.lease_ttl = Duration::from_secs(60);
    sys.restart().await;
    let (base, release) = held_service().await;
    let spec = format!(
        r#"
id: fenced
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - {{ id: slow, type: api_call, request: {{ method: POST, url: "{base}/slow" }}, timeout: 300s }}
  - {{ id: after, type: code, needs: [slow], script: "return 1" }}
"#
    );
    let run = sys.start(&spec, json!({})).await;
    let t = sys.t().clone();
    wait_for("the step to be in flight", PATIENCE, || async {
        matches!(TestSystem::step(&t.view(&run).await.unwrap(), "slow").status, StepStatus::Queued { .. })
    })
    .await;
    assert_eq!(t.live_runs().await.unwrap(), 1);

    // Another (live) process takes the lease over, naming the current grant.
    let backend = t.engine.store.backend().clone();
    let other = Liveness::start(backend.clone(), Duration::from_secs(60), CancellationToken::new()).await.unwrap();
    let key = keys::run_lease(&run);
    let LeaseGrant::Held(current) =
        backend.lease_acquire(&key, other.id(), Duration::from_secs(60), None).await.unwrap()
    else {
        panic!("the run's lease is not held")
    };
    assert_eq!(
        current.holder,
        t.engine.liveness.id(),
        "the run actor holds the lease under this process's liveness id"
    );
    let LeaseGrant::Granted(taken) =
        backend.lease_acquire(&key, other.id(), Duration::from_secs(60), Some(&current)).await.unwrap()
    else {
        panic!("the takeover was refused")
    };
    let wf = t.engine.store.run_workflow(&run).await.unwrap();
    let before = t.engine.store.read_journal(&wf, &run).await.unwrap().len();

    // The cancellation is recorded, then routed to the actor, whose journal append is fenced.
    t.cancel(&run, "tester", "fencing").await.unwrap();
    wait_for("the fenced actor to stop", PATIENCE, || async { t.live_runs().await.unwrap() == 0 }).await;
    let journal = t.engine.store.read_journal(&wf, &run).await.unwrap();
    assert_eq!(journal.len(), before, "an actor whose lease was taken over appended to the journal: {journal:?}");
    // It does not take the run back while the new holder is alive.
    let err = t.ensure(&run).await.expect_err("the run is driven by another process");
    assert!(err.to_string().contains("driven by another process"), "{err}");
    backend.lease_renew(&taken, Duration::from_secs(60)).await.expect("the new holder's lease is untouched");

    // The other process lets go: this one drives the run again and applies the cancellation.
    assert!(backend.lease_release(&taken).await.unwrap());
    t.ensure(&run).await.expect("a released lease is taken again");
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "cancelled", "{:?}", v.state.status);
    let journal = t.engine.store.read_journal(&wf, &run).await.unwrap();
    assert_eq!(journal.iter().filter(|e| matches!(e, Event::Cancelled { .. })).count(), 1, "{journal:?}");
    // The finished run's actor releases its lease as it stops; the next grant's token is larger still.
    wait_for("the finished run's actor to stop", PATIENCE, || async { t.live_runs().await.unwrap() == 0 }).await;
    let LeaseGrant::Granted(next) =
        backend.lease_acquire(&key, other.id(), Duration::from_secs(60), None).await.unwrap()
    else {
        panic!("a finished run's lease is still held")
    };
    assert!(next.token > taken.token + 1, "tokens grow: {} after {} and this process's grant", next.token, taken.token);
    release.send_replace(true);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_whose_lease_was_taken_over_cannot_append() {
    each_backend(fenced_actor_stops_and_the_run_recovers).await;
}
