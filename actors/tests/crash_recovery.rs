//! kill -9 of a real `tollgate run` process at several points of a run, then `tollgate resume`:
//! the run finishes, no completed step runs again, and a side-effecting step takes effect once.

#[allow(dead_code)] // the helpers other process tests use
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::any;
use serde_json::Value;
use support::{start_run, tollgate, wait_until};

/// A side-effecting service: counts requests per path and applies each idempotency key once.
#[derive(Default)]
struct Ledger {
    hits: HashMap<String, usize>,
    effects: HashMap<String, Vec<String>>,
    responded: HashMap<String, usize>,
}

async fn effect(State(ledger): State<Arc<Mutex<Ledger>>>, uri: Uri, headers: HeaderMap) -> &'static str {
    let path = uri.path().to_string();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    {
        let mut l = ledger.lock().unwrap();
        *l.hits.entry(path.clone()).or_default() += 1;
        let applied = l.effects.entry(path.clone()).or_default();
        if !applied.contains(&key) {
            applied.push(key);
        }
    }
    // Slow enough that a kill can land while the request is in flight.
    tokio::time::sleep(Duration::from_millis(400)).await;
    *ledger.lock().unwrap().responded.entry(path).or_default() += 1;
    r#"{"ok":true}"#
}

fn spec(base: &str) -> String {
    format!(
        r#"
id: crash-safe
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
defaults:
  retry: {{ max_attempts: 3, backoff: {{ initial: 100ms }} }}
steps:
  - {{ id: prepare, type: code, script: "let x = 0; for (let i = 0; i < 100000; i++) x += i; return x" }}
  - {{ id: charge, type: api_call, needs: [prepare], request: {{ method: POST, url: "{base}/charge" }}, timeout: 5s }}
  - {{ id: pause, type: delay, duration: 1500ms, needs: [charge] }}
  - {{ id: notify, type: api_call, needs: [pause], request: {{ method: POST, url: "{base}/notify" }}, timeout: 5s }}
  - {{ id: done, type: code, needs: [notify], script: "return 'done'" }}
"#
    )
}

fn run_json(data: &std::path::Path, run: &str) -> Value {
    let out = tollgate(data).args(["runs", "show", run, "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn step_status(v: &Value, step: &str) -> String {
    v["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == step))
        .map(|s| s["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// While the charge request is in flight (step running, outcome not recorded).
    ChargeInFlight,
    /// After charge completed (journaled), normally during the durable delay.
    DuringDelay,
    /// While the notify request is in flight.
    NotifyInFlight,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_point_then_resume_finishes_with_effects_applied_once() {
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let app = axum::Router::new().fallback(any(effect)).with_state(ledger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    for point in [KillPoint::ChargeInFlight, KillPoint::DuringDelay, KillPoint::NotifyInFlight] {
        *ledger.lock().unwrap() = Ledger::default();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("crash.yaml");
        std::fs::write(&file, spec(&base)).unwrap();
        let data = dir.path().join("data");
        let base_c = data.clone();
        let ledger_c = ledger.clone();
        let result = tokio::task::spawn_blocking(move || {
            let (mut child, run) = start_run(&base_c, &file);
            let hits = |path: &str| ledger_c.lock().unwrap().hits.get(path).copied().unwrap_or(0);
            match point {
                KillPoint::ChargeInFlight => {
                    wait_until("the charge request", Duration::from_secs(30), || hits("/charge") >= 1)
                }
                // Once the journal says charge succeeded, the kill lands in the delay (or, on a
                // slow machine, after it): either way charge must not run again.
                KillPoint::DuringDelay => wait_until("charge to be journaled", Duration::from_secs(60), || {
                    step_status(&run_json(&base_c, &run), "charge") == "succeeded"
                }),
                KillPoint::NotifyInFlight => {
                    wait_until("the notify request", Duration::from_secs(30), || hits("/notify") >= 1)
                }
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let out = tollgate(&base_c).args(["resume", &run, "--json"]).output().unwrap();
            assert!(out.status.success(), "{point:?}: resume failed: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
        .await
        .unwrap();

        assert_eq!(result["status"], "succeeded", "{point:?}: {result:#}");
        let l = ledger.lock().unwrap();
        for path in ["/charge", "/notify"] {
            assert_eq!(
                l.effects.get(path).map(Vec::len),
                Some(1),
                "{point:?}: {path} must take effect exactly once: {:?}",
                l.effects
            );
        }
        // A step that had completed before the kill was not run again.
        if matches!(point, KillPoint::DuringDelay | KillPoint::NotifyInFlight) {
            assert_eq!(l.hits["/charge"], 1, "{point:?}: charge ran again after it had completed");
        }
        let steps = result["steps"].as_array().unwrap();
        assert!(steps.iter().all(|s| s["status"] == "succeeded"), "{point:?}: {steps:#?}");
    }
}
