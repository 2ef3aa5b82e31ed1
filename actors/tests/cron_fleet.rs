//! Cron across a fleet: three `tollgate triggers run` processes on one Redis run the same
//! every-second schedule; over ten slots all three fire every slot and exactly ten runs start —
//! one per slot, the others recorded as duplicates.

#[path = "../src/queue/tests/redis_server.rs"]
#[allow(dead_code)] // this test needs no outage
mod redis_server;
#[allow(dead_code)] // the helpers other process tests use
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use support::Process;
use tollgate_connectors::store::RedisBackend;
use tollgate_engine::crypto::MasterKey;
use tollgate_engine::ids::WorkflowId;
use tollgate_engine::store::Store;
use tollgate_engine::trigger::{FireOutcome, FireRecord};

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(120);

const SPEC: &str = r#"
id: cron-fleet
owner: ops
parameters:
  slot: { type: string, required: true }
steps:
  - { id: tick, type: condition, expr: "params.slot != ''" }
triggers:
  - id: every-second
    cron: { schedule: "* * * * * *", missed: none }
    params: { slot: "${{ payload.slot }}" }
"#;

fn slot_of(f: &FireRecord) -> u64 {
    f.key
        .strip_prefix("slot:")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a cron key is a slot: {}", f.key))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_engines_over_ten_slots_start_exactly_ten_runs() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("cron.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let env = [
        ("TOLLGATE_MASTER_KEY", KEY.to_string()),
        ("TOLLGATE_NAMESPACE", "cronfleet".to_string()),
        ("TOLLGATE_HTTP_ADDR", "127.0.0.1:0".to_string()),
    ];
    let (url, spec) = (redis.url(), spec.display().to_string());
    let args = ["--backend", "redis", "--redis-url", &url, "triggers", "run", &spec];
    let fleet: Vec<Process> =
        (1..=3).map(|i| Process::spawn(&format!("engine-{i}"), &args, &env, dir.path())).collect();
    let end = Instant::now() + DEADLINE;
    while !fleet.iter().all(|p| p.has_line("tollgate serve: admin API on")) {
        assert!(
            Instant::now() < end,
            "the fleet did not start:\n{}",
            fleet.iter().map(Process::log).collect::<Vec<_>>().join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Ten whole slots that all three processes are up for.
    let first = (now_ms() / 1000 + 2) * 1000;
    let window: Vec<u64> = (0..10).map(|i| first + i * 1000).collect();
    let last = *window.last().unwrap();

    let store = Store::new(
        Arc::new(RedisBackend::connect(&redis.url(), "cronfleet").await.unwrap()),
        MasterKey::from_hex(KEY).unwrap(),
    );
    let wf = WorkflowId::new("cron-fleet");
    // Wait until every process has fired past the window: each slot then has its three fires.
    let history = loop {
        let history = store.fire_history(&wf, 100_000).await.unwrap();
        let past = history.iter().filter(|f| slot_of(f) > last).count();
        if past >= 3 && window.iter().all(|s| history.iter().filter(|f| slot_of(f) == *s).count() == 3) {
            break history;
        }
        assert!(
            Instant::now() < end,
            "slots were not fired in time; fires so far: {}\n{}",
            history.len(),
            fleet.iter().map(Process::log).collect::<Vec<_>>().join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(fleet);

    let mut per_slot: BTreeMap<u64, Vec<&FireRecord>> = BTreeMap::new();
    for f in &history {
        per_slot.entry(slot_of(f)).or_default().push(f);
    }
    let mut runs = Vec::new();
    for slot in &window {
        let fires = &per_slot[slot];
        let started: Vec<_> = fires
            .iter()
            .filter_map(|f| match &f.outcome {
                FireOutcome::Started { run } => Some(run.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(started.len(), 1, "slot {slot}: exactly one fire starts a run: {fires:#?}");
        assert_eq!(
            fires.iter().filter(|f| f.outcome.label() == "skipped_duplicate").count(),
            2,
            "slot {slot}: the two other engines' fires are duplicates"
        );
        runs.extend(started);
    }
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), 10, "ten slots, ten runs");
    // And no slot anywhere in the history started two runs.
    for (slot, fires) in &per_slot {
        assert!(fires.iter().filter(|f| f.outcome.label() == "started").count() <= 1, "slot {slot} started twice");
    }
    // Each of those runs exists and names its fire.
    for run in &runs {
        let meta = store.run_meta(run).await.unwrap();
        assert_eq!(meta.trigger.as_ref().map(|t| t.trigger.as_str()), Some("every-second"));
    }
}
