//! Chaos: 30 trials kill -9 a real `tollgate run` process at pseudo-random moments of a
//! fan-out-plus-chain workflow of slow calls, then `tollgate resume` it. Every run must finish,
//! no attempt may ever execute twice at the same time, and the audit must account for every
//! execution the called service saw:
//!
//! - on trials killed at a quiescent moment (every dispatched attempt has reached the service),
//!   the executions the service saw for each step EQUAL the attempts the audit shows as having
//!   (maybe) run, interrupted ones included;
//! - on trials killed at an arbitrary moment, a process can die between claiming an attempt
//!   and sending its request, so the audit may show an interrupted attempt the service never
//!   saw — but never fewer attempts than executions, and every attempt that finished in the
//!   audit was seen.

#[allow(dead_code)] // the helpers other process tests use
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::any;
use serde_json::Value;
use support::{start_run, tollgate, wait_until};
use tollgate::config::Config;

const TRIALS: u64 = 30;
const FAN_OUT: usize = 6;
const CHAIN: usize = 3;

/// The called service: counts executions per step and attempt, notices the same attempt
/// executing twice at once, and can hold every answer while the test prepares a kill.
#[derive(Default)]
struct Service {
    executions: Mutex<HashMap<(String, u32), usize>>,
    running: Mutex<HashMap<(String, u32), usize>>,
    overlaps: Mutex<Vec<String>>,
    hold: AtomicBool,
}

async fn call(State(svc): State<Arc<Service>>, uri: Uri, headers: HeaderMap) -> &'static str {
    let step = uri.path().trim_start_matches('/').to_string();
    let attempt: u32 =
        headers.get("tollgate-attempt").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let key = (step, attempt);
    *svc.executions.lock().unwrap().entry(key.clone()).or_default() += 1;
    {
        let mut running = svc.running.lock().unwrap();
        let n = running.entry(key.clone()).or_default();
        *n += 1;
        if *n > 1 {
            svc.overlaps.lock().unwrap().push(format!("{}#{}", key.0, key.1));
        }
    }
    // Decrement however the handler ends (answered, or dropped with its connection).
    struct Done(Arc<Service>, (String, u32));
    impl Drop for Done {
        fn drop(&mut self) {
            *self.0.running.lock().unwrap().entry(self.1.clone()).or_default() -= 1;
        }
    }
    let _done = Done(svc.clone(), key);
    tokio::time::sleep(Duration::from_millis(120)).await;
    while svc.hold.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r#"{"ok":true}"#
}

fn spec(base: &str) -> String {
    let mut y =
        String::from("id: chaos\nowner: ops\negress: { allow: [\"127.0.0.1\"] }\ndefaults: { timeout: 30s }\nsteps:\n");
    for i in 0..FAN_OUT {
        y.push_str(&format!(
            "  - {{ id: fan{i}, type: api_call, request: {{ method: POST, url: \"{base}/fan{i}\" }} }}\n"
        ));
    }
    let all: Vec<String> = (0..FAN_OUT).map(|i| format!("fan{i}")).collect();
    for i in 0..CHAIN {
        let needs = if i == 0 { all.join(", ") } else { format!("chain{}", i - 1) };
        y.push_str(&format!("  - {{ id: chain{i}, type: api_call, needs: [{needs}], request: {{ method: POST, url: \"{base}/chain{i}\" }} }}\n"));
    }
    y
}

/// A small deterministic generator, so a failing trial can be replayed.
fn pseudo_random(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x2545_F491_4F6C_DD1D);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^ (x >> 33)
}

/// The attempts the run has dispatched (each has its input recorded before its job is
/// enqueued), read from its store.
async fn dispatched_attempts(data: &Path, run: &str) -> Vec<(String, u32)> {
    let config = Config { data_dir: data.to_path_buf(), ..Config::default() };
    let backend = tollgate::bootstrap::open_backend(&config).await.unwrap();
    let prefix = format!("run/{run}/in/");
    backend
        .scan_prefix(&prefix)
        .await
        .unwrap()
        .iter()
        .filter_map(|k| {
            let (step, attempt) = k.strip_prefix(&prefix)?.split_once('/')?;
            Some((step.to_string(), attempt.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_every_run_finishes_and_the_audit_accounts_for_every_execution() {
    let svc: Arc<Service> = Arc::default();
    let app = axum::Router::new().fallback(any(call)).with_state(svc.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let handle = tokio::runtime::Handle::current();
    let mut interrupted_total = 0;

    for trial in 0..TRIALS {
        svc.executions.lock().unwrap().clear();
        svc.hold.store(false, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("chaos.yaml");
        std::fs::write(&file, spec(&base)).unwrap();
        let data: PathBuf = dir.path().join("data");
        let quiescent = trial % 2 == 1;
        // Between 0 and ~1 s into the run: during the fan-out, at the join, or in the chain.
        let delay = Duration::from_millis(pseudo_random(trial) % 1000);

        let (svc_c, data_c, handle_c) = (svc.clone(), data.clone(), handle.clone());
        let result = tokio::task::spawn_blocking(move || {
            let (mut child, run) = start_run(&data_c, &file);
            std::thread::sleep(delay);
            if quiescent {
                // Hold every answer: no attempt finishes, so the run dispatches no new one; once
                // every attempt it has dispatched has reached the service (not merely been
                // claimed: a claimed attempt may not have sent its request yet), nothing is
                // between claim and call. Kill at that point.
                svc_c.hold.store(true, Ordering::SeqCst);
                wait_until("every dispatched attempt to reach the service", Duration::from_secs(60), || {
                    let dispatched = handle_c.block_on(dispatched_attempts(&data_c, &run));
                    let seen = svc_c.executions.lock().unwrap();
                    !dispatched.is_empty() && dispatched.iter().all(|k| seen.contains_key(k))
                });
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            svc_c.hold.store(false, Ordering::SeqCst);
            let out = tollgate(&data_c).args(["resume", &run, "--json"]).output().unwrap();
            assert!(out.status.success(), "trial {trial}: resume failed: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
        .await
        .unwrap();

        assert_eq!(result["status"], "succeeded", "trial {trial} (killed after {delay:?}): {result:#}");
        let executions = svc.executions.lock().unwrap().clone();
        for step in result["steps"].as_array().unwrap() {
            let id = step["id"].as_str().unwrap();
            assert_eq!(step["status"], "succeeded", "trial {trial}: {step:#}");
            let log = step["attempt_log"].as_array().unwrap();
            let statuses: Vec<&str> = log.iter().map(|a| a["status"].as_str().unwrap()).collect();
            let may_have_run = statuses.iter().filter(|s| **s != "not_started").count();
            let interrupted = statuses.iter().filter(|s| **s == "interrupted").count();
            interrupted_total += interrupted;
            let seen: usize = executions.iter().filter(|((s, _), _)| s == id).map(|(_, n)| n).sum();
            // Each attempt executed at most once.
            for ((s, attempt), n) in &executions {
                assert!(!(s == id && *n > 1), "trial {trial}: {id}#{attempt} executed {n} times");
            }
            if quiescent {
                assert_eq!(
                    seen, may_have_run,
                    "trial {trial}: {id}: the service saw {seen} executions, the audit shows {statuses:?}"
                );
            } else {
                assert!(
                    seen <= may_have_run && seen >= may_have_run - interrupted,
                    "trial {trial}: {id}: the service saw {seen} executions, the audit shows {statuses:?}"
                );
            }
        }
    }
    let overlaps = svc.overlaps.lock().unwrap().clone();
    assert!(overlaps.is_empty(), "attempts executed twice at the same time: {overlaps:?}");
    // The trials did exercise recovery of attempts in flight.
    assert!(interrupted_total > 0, "no trial interrupted an attempt in flight");
}
