//! A store outage in the middle of a run: every write refused for a while as on a full disk
//! ("database or disk is full"). The run actor loses its lease renewal and is rehydrated (again
//! and again while the outage lasts), the worker's outcome write is retried, and once there is
//! room again the run finishes — in the same process, without a restart — with the outcome
//! recorded during the outage applied, not redone. (What a full disk does to SQLite's own
//! connections, which stalled such runs for good, is tested in `tollgate-connectors`.)

use std::time::Duration;

use serde_json::json;
use tollgate_tests::harness::{TestSystem, embedded_with_full_disk, wait_for};

const CHAIN: &str = r#"
id: outage
owner: ops
steps:
  - { id: first, type: delay, duration: 100ms }
  - { id: work, type: code, needs: [first], script: "return { n: 1 }" }
  - { id: after, type: code, needs: [work], script: "return { n: input.n + 1 }", inputs: { n: "${{ steps.work.output.n }}" } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_finishes_after_the_disk_was_full_while_its_step_ran() {
    let (sys, disk) = embedded_with_full_disk().await;
    // The disk fills up as soon as the step's attempt is claimed: the step runs, its outcome
    // cannot be written, nor can the run's lease be renewed or taken again.
    disk.fill_after_write_to("/claim/work/1");
    let run = sys.start(CHAIN, json!({})).await;
    let d = disk.clone();
    wait_for("the outcome and the lease refused, the run actor restarted", Duration::from_secs(60), move || {
        let d = d.clone();
        async move { d.refused("/out/work/1") >= 1 && d.refused("/lease") >= 3 }
    })
    .await;
    disk.heal();
    let t = sys.t().clone();
    let r = run.clone();
    wait_for("the run to finish", Duration::from_secs(120), move || {
        let (t, r) = (t.clone(), r.clone());
        async move { t.view(&r).await.is_ok_and(|v| v.state.status.is_finished()) }
    })
    .await;
    let v = sys.t().view(&run).await.unwrap();
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    assert_eq!(TestSystem::step(&v, "after").output, Some(json!({ "n": 2 })));
    assert_eq!(TestSystem::step(&v, "work").attempts.len(), 1, "the step ran once: its outcome was kept, not redone");
}
