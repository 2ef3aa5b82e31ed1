//! What triggers keep: the fire history expires after its TTL (a short one here) on both
//! backends; trigger state (counters, secret, dedup claims, a cron's cursor) survives a
//! restart; missed cron slots are fired per policy (`all` / `last` / `none`) after downtime.

use std::collections::BTreeSet;
use std::time::Duration;

use tollgate::triggers::start_triggers;
use tollgate_engine::ids::WorkflowId;
use tollgate_engine::spec::parse_yaml;
use tollgate_engine::store::keys;
use tollgate_engine::trigger::signature::sign_hex;
use tollgate_tests::harness::{TestSystem, embedded, embedded_with, redis, redis_with, wait_for};
use tollgate_tests::triggers::{Hooked, count};

const HOOK: &str = r#"
id: kept-flow
owner: ops
steps:
  - { id: a, type: condition, expr: "true" }
triggers:
  - { id: hook, webhook: {} }
"#;

async fn deliver(h: &Hooked, id: &str) -> u16 {
    let secret = h.secret("hook").await;
    let body = br#"{"n":1}"#;
    reqwest::Client::new()
        .post(h.url("hook"))
        .header("X-Signature-256", sign_hex(&secret, body))
        .header("Idempotency-Key", id)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn history_expires(sys: TestSystem) {
    let h = Hooked::start(sys, HOOK).await;
    assert_eq!(deliver(&h, "d-1").await, 202);
    let history = h.history().await;
    assert_eq!(history.len(), 1);
    let key = keys::fire_record(&h.workflow, &history[0].fire);
    assert!(h.sys.t().engine.store.backend().get(&key).await.unwrap().is_some());
    wait_for("the history entry expires", Duration::from_secs(30), || async { h.history().await.is_empty() }).await;
    // Gone from the backend itself, not only hidden from the listing.
    assert!(h.sys.t().engine.store.backend().get(&key).await.unwrap().is_none());
    assert!(h.sys.t().engine.store.backend().scan_prefix(&keys::fire_history(&h.workflow)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_entries_expire_after_their_ttl() {
    history_expires(embedded_with(|c| c.triggers.history_ttl = Duration::from_secs(1)).await).await;
    history_expires(redis_with(|c| c.triggers.history_ttl = Duration::from_secs(1)).await).await;
}

async fn state_survives(sys: TestSystem) {
    let mut h = Hooked::start(sys, HOOK).await;
    let secret = h.secret("hook").await;
    assert_eq!(deliver(&h, "d-1").await, 202);
    assert_eq!(deliver(&h, "d-1").await, 200);
    h.stop_triggers().await;
    // The whole engine restarts on the same store.
    let mut sys = std::mem::replace(&mut h.sys, embedded().await);
    drop(h);
    sys.restart().await;
    let h = Hooked::start(sys, HOOK).await;
    assert_eq!(h.secret("hook").await, secret, "the secret is kept");
    let health = h.health("hook");
    assert_eq!((health.started, health.duplicates), (1, 1), "counters resume from the saved state");
    assert_eq!(deliver(&h, "d-1").await, 200, "the dedup claim outlives the restart");
    assert_eq!(deliver(&h, "d-2").await, 202);
    let history = h.history().await;
    assert_eq!((count(&history, "started"), count(&history, "skipped_duplicate")), (2, 2));
    // `tollgate triggers list` reads the saved state.
    let saved = h.sys.t().engine.store.trigger_state(&h.workflow, &"hook".into()).await.unwrap().expect("saved state");
    assert_eq!(saved.kind, "webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_state_survives_a_restart() {
    state_survives(embedded().await).await;
    state_survives(redis().await).await;
}

const CRON: &str = r#"
id: missed-flow
owner: ops
steps:
  - { id: a, type: condition, expr: "true" }
triggers:
  - { id: all, cron: { schedule: "* * * * * *", missed: all } }
  - { id: last, cron: { schedule: "* * * * * *", missed: last } }
  - { id: none, cron: { schedule: "* * * * * *", missed: none } }
"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_cron_slots_are_fired_per_policy_after_downtime() {
    let sys = embedded().await;
    let wf = WorkflowId::new("missed-flow");
    let spec = parse_yaml(CRON).unwrap();
    let triggers = start_triggers(sys.t(), sys.config.triggers.history_ttl, vec![spec.clone()]).await.unwrap();
    let store = sys.t().engine.store.clone();
    let slots = |trigger: &'static str| {
        let store = store.clone();
        let wf = wf.clone();
        async move {
            store
                .fire_history(&wf, 10_000)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f.trigger.as_str() == trigger && f.outcome.label() == "started")
                .map(|f| f.key)
                .collect::<BTreeSet<_>>()
        }
    };
    wait_for("each trigger fired a slot", Duration::from_secs(30), || async {
        !slots("all").await.is_empty() && !slots("last").await.is_empty() && !slots("none").await.is_empty()
    })
    .await;
    triggers.shutdown().await;
    let cursor = |trigger: &'static str| {
        let store = store.clone();
        let wf = wf.clone();
        async move {
            store.trigger_state(&wf, &trigger.into()).await.unwrap().unwrap().cursor["last_slot"].as_u64().unwrap()
        }
    };
    let last_all = cursor("all").await;
    let last_last = cursor("last").await;
    let last_none = cursor("none").await;
    // Down for more than three slots past the latest cursor.
    let back = last_all.max(last_last).max(last_none) + 3500;
    wait_for("three slots pass while the triggers are down", Duration::from_secs(30), || async { now_ms() >= back })
        .await;
    let triggers = start_triggers(sys.t(), sys.config.triggers.history_ttl, vec![spec]).await.unwrap();
    let key = |ms: u64| format!("slot:{ms}");
    wait_for("the triggers run again", Duration::from_secs(30), || async {
        let (a, l, n) = (slots("all").await, slots("last").await, slots("none").await);
        a.contains(&key(last_all + 3000)) && l.iter().any(|k| k > &key(back)) && n.iter().any(|k| k > &key(back))
    })
    .await;
    triggers.shutdown().await;
    let (a, l, n) = (slots("all").await, slots("last").await, slots("none").await);
    // all: every missed slot; last: not the older ones; none: none of them.
    for i in 1..=3 {
        assert!(a.contains(&key(last_all + i * 1000)), "`all` fires missed slot {i}: {a:?}");
    }
    for i in 1..=3 {
        assert!(!n.contains(&key(last_none + i * 1000)), "`none` skips missed slot {i}: {n:?}");
    }
    for i in 1..=2 {
        assert!(!l.contains(&key(last_last + i * 1000)), "`last` skips older missed slot {i}: {l:?}");
    }
    // The history says which fires were caught up: three or more for `all`, one for `last`.
    let caught_up = |trigger: &'static str| {
        let store = store.clone();
        let wf = wf.clone();
        async move {
            store
                .fire_history(&wf, 10_000)
                .await
                .unwrap()
                .iter()
                .filter(|f| f.trigger.as_str() == trigger && f.source.contains("(missed"))
                .count()
        }
    };
    assert!(caught_up("all").await >= 3);
    assert_eq!(caught_up("last").await, 1);
    assert_eq!(caught_up("none").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_run_was_never_recorded_is_finished_by_the_next_fire() {
    use tollgate_engine::ids::{FireId, RunId};
    use tollgate_engine::trigger::FireClaim;
    let h = Hooked::start(embedded().await, HOOK).await;
    let store = h.sys.t().engine.store.clone();
    // A process claimed "d-9" two minutes ago and died before recording its run.
    let lost = FireClaim { fire: FireId::generate(), run: RunId::generate(), at: now_ms() - 120_000 };
    assert!(
        store
            .claim_fire(&h.workflow, &"hook".into(), "delivery:d-9", &lost, Duration::from_secs(3600))
            .await
            .unwrap()
            .is_none()
    );
    // A fresh claim (within the grace period) is left alone: its fire may still be running.
    let fresh = FireClaim { fire: FireId::generate(), run: RunId::generate(), at: now_ms() };
    assert!(
        store
            .claim_fire(&h.workflow, &"hook".into(), "delivery:d-10", &fresh, Duration::from_secs(3600))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(deliver(&h, "d-10").await, 200, "within the grace period: a duplicate");
    // The redelivery starts the very run the lost fire had chosen; a third delivery is a duplicate.
    assert_eq!(deliver(&h, "d-9").await, 202);
    assert_eq!(deliver(&h, "d-9").await, 200);
    let runs = store.list_runs().await.unwrap();
    assert_eq!(runs, vec![lost.run.clone()]);
    let history = h.history().await;
    assert_eq!((count(&history, "started"), count(&history, "skipped_duplicate")), (1, 2));
}
