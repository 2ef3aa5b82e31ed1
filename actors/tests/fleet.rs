//! A fleet of real processes — `tollgate serve` and two `tollgate worker`s — on a Redis of the
//! test's own (AOF, `appendfsync always`). Redis is shut down and started again while chains
//! of steps are running: every run finishes `succeeded` without restarting any Tollgate
//! process, and each process's `/healthz` says unhealthy while its queue worker is gone and
//! healthy again once it is back.

#[path = "../src/queue/tests/redis_server.rs"]
mod redis_server;
#[allow(dead_code)] // the helpers other process tests use
mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use serde_json::{Value, json};
use support::Process;

const MASTER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Runs started at once, each a chain of `STEPS` code steps.
const RUNS: usize = 3;
const STEPS: usize = 30;
/// Upper bound for anything the fleet must get done; far above what it needs.
const DEADLINE: Duration = Duration::from_secs(120);

/// A chain of code steps of a few milliseconds each. No retry policy: an outcome or a job lost
/// to the outage would fail its step (timeout) instead of being hidden by a second attempt.
fn chain_spec() -> String {
    let mut yaml = String::from("id: fleet-chain\nowner: ops\nsteps:\n");
    for i in 1..=STEPS {
        let needs = if i == 1 { String::new() } else { format!(", needs: [s{}]", i - 1) };
        yaml.push_str(&format!(
            "  - {{ id: s{i}, type: code{needs}, timeout: 60s, script: \"let x = 0; for (let i = 0; i < 20000; i++) x += i; return x\" }}\n"
        ));
    }
    yaml
}

/// What the test last saw (health answers, run summaries), for a timeout's message.
type Seen = Mutex<String>;

async fn wait_until<F: Future<Output = bool>>(
    what: &str,
    fleet: &[&Process],
    seen: &Seen,
    mut cond: impl FnMut() -> F,
) {
    let end = Instant::now() + DEADLINE;
    while !cond().await {
        for p in fleet {
            p.assert_alive();
        }
        if Instant::now() >= end {
            let logs: Vec<String> = fleet.iter().map(|p| format!("--- {} ---\n{}", p.name, p.log())).collect();
            panic!("timed out waiting for {what}; last seen: {}\n{}", seen.lock().unwrap(), logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request bound far above what the fleet needs: a debug build's first spec validation on
/// a loaded machine (it compiles the gate mesh) can take seconds.
fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_stalls_nothing() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let env = vec![
        ("TOLLGATE_BACKEND", "redis".to_string()),
        ("TOLLGATE_REDIS_URL", redis.url()),
        ("TOLLGATE_MASTER_KEY", MASTER_KEY.to_string()),
        ("TOLLGATE_NAMESPACE", "fleet".to_string()),
        ("TOLLGATE_HTTP_ADDR", "127.0.0.1:0".to_string()),
        ("TOLLGATE_HEALTH_ADDR", "127.0.0.1:0".to_string()),
        ("TOLLGATE_RECONCILE_INTERVAL", "100ms".to_string()),
        ("TOLLGATE_WORKER_CONCURRENCY", "4".to_string()),
        ("TOLLGATE_LOG", "warn,tollgate=info".to_string()),
    ];
    let serve = Process::spawn("serve", &["serve"], &env, dir.path());
    let workers: Vec<Process> =
        ["worker-1", "worker-2"].into_iter().map(|n| Process::spawn(n, &["worker"], &env, dir.path())).collect();
    let fleet: Vec<&Process> = std::iter::once(&serve).chain(&workers).collect();
    let admin = format!(
        "http://{}",
        tokio::task::block_in_place(|| serve.wait_line("tollgate serve: admin API on http://", DEADLINE))
            .split(' ')
            .next()
            .unwrap()
    );
    let mut probes = vec![format!("{admin}/healthz")];
    for w in &workers {
        probes.push(tokio::task::block_in_place(|| w.wait_line("tollgate worker: health on ", DEADLINE)));
    }
    let client = http();
    let seen = Seen::default();
    // Whether every process's `/healthz` answers `status` with a body that satisfies `body`.
    let health = |status: u16, body: fn(&Value) -> bool| {
        let (client, probes, seen) = (client.clone(), probes.clone(), &seen);
        async move {
            for probe in probes {
                let Ok(r) = client.get(&probe).send().await else { return false };
                let code = r.status().as_u16();
                let v = r.json::<Value>().await.unwrap_or(Value::Null);
                *seen.lock().unwrap() = format!("{probe}: {code} {v}");
                if code != status || !body(&v) {
                    return false;
                }
            }
            true
        }
    };
    wait_until("every process to report itself healthy", &fleet, &seen, || health(200, |v| v["healthy"] == true)).await;

    let spec = chain_spec();
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let r: Value = client
            .post(format!("{admin}/api/runs"))
            .json(&json!({"spec": spec}))
            .send()
            .await
            .expect("POST /api/runs")
            .json()
            .await
            .expect("json");
        runs.push(r["run"].as_str().unwrap_or_else(|| panic!("no run id: {r}")).to_string());
    }
    let view = |run: String| {
        let (client, admin) = (client.clone(), admin.clone());
        async move {
            match client.get(format!("{admin}/api/runs/{run}")).send().await {
                Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        }
    };
    // Whether the runs' summaries, together, satisfy `pred`.
    let runs_are = |pred: fn(&[Value]) -> bool| {
        let (runs, view, seen) = (runs.clone(), &view, &seen);
        async move {
            let mut views = Vec::new();
            for run in runs {
                views.push(view(run).await);
            }
            let states: Vec<String> =
                views.iter().map(|v| format!("{}: {} after {} steps", v["run"], v["status"], succeeded(v))).collect();
            *seen.lock().unwrap() = states.join("; ");
            pred(&views)
        }
    };
    fn succeeded(v: &Value) -> usize {
        v["steps"].as_array().map_or(0, |s| s.iter().filter(|s| s["status"] == "succeeded").count())
    }

    // Mid-run: a run is a few steps in, and none has finished. The first run to get there has
    // more than 25 steps to go, far more than one look at the runs takes.
    wait_until("a run to be a few steps in", &fleet, &seen, || {
        runs_are(|vs| vs.iter().any(|v| succeeded(v) >= 3) && vs.iter().all(|v| v["status"] == "running"))
    })
    .await;
    tokio::task::block_in_place(|| redis.shutdown());
    // Each process notices that its queue worker is gone, and says so. Redis stays away until
    // every process has also failed to start a fresh worker (a second restart), so the outage
    // outlasts the first attempts to recover from it — run actors' included.
    wait_until("every process to report itself unhealthy through a failed restart", &fleet, &seen, || {
        health(503, |v| v["healthy"] == false && v["checks"]["step_workers"]["restarts"].as_u64() >= Some(2))
    })
    .await;
    tokio::task::block_in_place(|| redis.start_again());
    wait_until("every process to report itself healthy again", &fleet, &seen, || {
        health(200, |v| v["checks"]["step_workers"]["running"] == true)
    })
    .await;

    wait_until("every run to finish", &fleet, &seen, || {
        runs_are(|vs| vs.iter().all(|v| matches!(v["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))))
    })
    .await;
    for run in &runs {
        let v = view(run.clone()).await;
        assert_eq!(v["status"], "succeeded", "run {run}: {v:#}\n{}", serve.log());
        assert_eq!(succeeded(&v), STEPS);
    }
    for p in &fleet {
        p.assert_alive();
    }
}

/// The process (of `pids`) holding the client end of a TCP connection from 127.0.0.1:`port`.
fn owner_of_connection(port: u16, pids: &[u32]) -> Option<u32> {
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str())).then(|| cols.get(9).map(|s| s.to_string())).flatten()
    })?;
    let target = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target))
            })
            .unwrap_or(false)
    })
}

/// Requests a held service received, which of them were dropped unanswered (the client went
/// away), and whether to answer yet.
#[derive(Default)]
struct Held {
    requests: Mutex<Vec<(String, u16)>>,
    dropped: Mutex<Vec<u16>>,
    release: tokio::sync::Notify,
    released: std::sync::atomic::AtomicBool,
}

/// Notes the request from `port` as dropped unless it was answered.
struct Unanswered(Arc<Held>, u16, bool);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.2 {
            self.0.dropped.lock().unwrap().push(self.1);
        }
    }
}

/// How the test takes a worker out in the middle of its step.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lost {
    /// kill -9: the process is gone.
    Killed,
    /// SIGSTOP until the run has moved on to a new attempt, then SIGCONT.
    Paused,
}

/// A worker killed with -9 while its step's HTTP call is in flight: the run goes on on the other
/// processes, and the audit shows that step's first attempt `interrupted` and a second one that
/// succeeded — as many attempts as the service saw requests for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_is_replaced_and_its_attempt_recorded_interrupted() {
    worker_lost_mid_step(Lost::Killed).await;
}

/// A worker paused (SIGSTOP) mid-call long enough to be taken for dead: the run moves on with a
/// new attempt elsewhere, and when the worker wakes it abandons its call (the service sees the
/// connection dropped) while the new attempt is still in flight — never two executions of the
/// step running on. Its late result is kept on the audit, never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_that_wakes_abandons_the_attempt_the_run_gave_up_on() {
    worker_lost_mid_step(Lost::Paused).await;
}

async fn worker_lost_mid_step(how: Lost) {
    use axum::extract::{ConnectInfo, Path as UrlPath, State};
    use std::sync::atomic::Ordering;

    let held = Arc::new(Held::default());
    let app = axum::Router::new()
        .route(
            "/hold/{step}",
            axum::routing::post(
                |State(h): State<Arc<Held>>,
                 UrlPath(step): UrlPath<String>,
                 ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                    h.requests.lock().unwrap().push((step, peer.port()));
                    // Dropped with the request's future if the client goes away first.
                    let mut guard = Unanswered(Arc::clone(&h), peer.port(), false);
                    while !h.released.load(Ordering::SeqCst) {
                        let wait = h.release.notified();
                        if h.released.load(Ordering::SeqCst) {
                            break;
                        }
                        wait.await;
                    }
                    guard.2 = true;
                    axum::Json(json!({ "ok": true }))
                },
            ),
        )
        .with_state(Arc::clone(&held));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let service = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
    });

    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = vec![
        ("TOLLGATE_BACKEND", "redis".to_string()),
        ("TOLLGATE_REDIS_URL", redis.url()),
        ("TOLLGATE_MASTER_KEY", MASTER_KEY.to_string()),
        ("TOLLGATE_NAMESPACE", "fleet-lost".to_string()),
        ("TOLLGATE_HTTP_ADDR", "127.0.0.1:0".to_string()),
        ("TOLLGATE_HEALTH_ADDR", "127.0.0.1:0".to_string()),
        ("TOLLGATE_RECONCILE_INTERVAL", "100ms".to_string()),
        // Two slots each: serve starts two of the three calls itself (eager dispatch), so a
        // worker takes the third from the queue, and the other worker has room for its retry.
        ("TOLLGATE_WORKER_CONCURRENCY", "2".to_string()),
        ("TOLLGATE_LOG", "warn,tollgate=info".to_string()),
    ];
    if how == Lost::Paused {
        // A paused process is taken for dead once its heartbeat expires.
        env.push(("TOLLGATE_LEASE_TTL", "3s".to_string()));
    }
    let serve = Process::spawn("serve", &["serve"], &env, dir.path());
    let mut workers: Vec<Process> =
        ["worker-1", "worker-2"].into_iter().map(|n| Process::spawn(n, &["worker"], &env, dir.path())).collect();
    let admin = format!(
        "http://{}",
        tokio::task::block_in_place(|| serve.wait_line("tollgate serve: admin API on http://", DEADLINE))
            .split(' ')
            .next()
            .unwrap()
    );
    for w in &workers {
        tokio::task::block_in_place(|| w.wait_line("tollgate worker: health on ", DEADLINE));
    }
    let client = http();
    let seen = Seen::default();
    {
        let fleet: Vec<&Process> = std::iter::once(&serve).chain(&workers).collect();
        wait_until("serve to be healthy", &fleet, &seen, || {
            let client = client.clone();
            let url = format!("{admin}/healthz");
            async move { client.get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    let mut spec = String::from("id: fleet-lost\nowner: ops\negress: { allow: [\"127.0.0.1\"] }\nsteps:\n");
    for s in ["a", "b", "c"] {
        spec.push_str(&format!("  - {{ id: {s}, type: api_call, timeout: 120s, request: {{ method: POST, url: \"http://{service}/hold/{s}\" }} }}\n"));
    }
    let r: Value = client
        .post(format!("{admin}/api/runs"))
        .json(&json!({ "spec": spec }))
        .send()
        .await
        .expect("POST /api/runs")
        .json()
        .await
        .expect("json");
    let run = r["run"].as_str().unwrap_or_else(|| panic!("no run id: {r}")).to_string();

    // Find the worker that holds a call.
    let pids: Vec<u32> = workers.iter().map(|w| w.child.id()).collect();
    let found: Mutex<Option<(usize, String, u16)>> = Mutex::new(None);
    {
        let fleet: Vec<&Process> = std::iter::once(&serve).chain(&workers).collect();
        wait_until("a worker to be in the middle of a call", &fleet, &seen, || {
            let requests = held.requests.lock().unwrap().clone();
            *seen.lock().unwrap() = format!("requests: {requests:?}");
            let hit = requests.iter().find_map(|(step, port)| {
                let pid = owner_of_connection(*port, &pids)?;
                Some((pids.iter().position(|p| *p == pid)?, step.clone(), *port))
            });
            let ready = hit.is_some();
            *found.lock().unwrap() = hit;
            async move { ready }
        })
        .await;
    }
    let (victim, step, first_port) = found.into_inner().unwrap().expect("found");
    let calls_to = |step: &str| held.requests.lock().unwrap().iter().filter(|(s, _)| s == step).count();
    let mut lost = workers.remove(victim);
    let fleet: Vec<&Process> = std::iter::once(&serve).chain(&workers).collect();
    match how {
        Lost::Killed => {
            lost.child.kill().expect("kill -9");
            lost.child.wait().expect("reap");
        }
        Lost::Paused => {
            signal(lost.child.id(), "STOP");
            wait_until("the run to start the step again elsewhere", &fleet, &seen, || {
                let n = calls_to(&step);
                *seen.lock().unwrap() = format!("{n} calls to {step}");
                async move { n >= 2 }
            })
            .await;
            signal(lost.child.id(), "CONT");
            // Woken, it drops its call while the new attempt is still held by the service.
            wait_until("the woken worker to abandon its call", &fleet, &seen, || {
                let dropped = held.dropped.lock().unwrap().contains(&first_port);
                async move { dropped }
            })
            .await;
            assert!(!held.released.load(Ordering::SeqCst));
        }
    }
    held.released.store(true, Ordering::SeqCst);
    held.release.notify_waiters();

    let view = || {
        let (client, url) = (client.clone(), format!("{admin}/api/runs/{run}"));
        async move { client.get(url).send().await.ok()?.json::<Value>().await.ok() }
    };
    wait_until("the run to finish", &fleet, &seen, || async {
        let v = view().await.unwrap_or(Value::Null);
        *seen.lock().unwrap() = v.to_string();
        matches!(v["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    })
    .await;
    let v = view().await.expect("run view");
    assert_eq!(v["status"], "succeeded", "{v:#}\n{}", serve.log());
    let steps = v["steps"].as_array().expect("steps");
    let lost_step = steps.iter().find(|s| s["id"] == step.as_str()).expect("the lost worker's step");
    let log = lost_step["attempt_log"].as_array().expect("attempt log");
    let statuses: Vec<&str> = log.iter().map(|a| a["status"].as_str().unwrap_or("?")).collect();
    match how {
        Lost::Killed => assert_eq!(statuses, ["interrupted", "succeeded"], "{lost_step:#}"),
        // Its abandonment may reach the run as a late result: kept as superseded, never used.
        Lost::Paused => assert!(
            statuses == ["interrupted", "succeeded"]
                || (statuses == ["superseded", "succeeded"]
                    && log[0]["late_result"].as_str().is_some_and(|r| r.contains("cancelled"))),
            "{lost_step:#}"
        ),
    }
    // The audit and the service agree, step by step.
    let requests = held.requests.lock().unwrap().clone();
    for s in steps {
        let id = s["id"].as_str().unwrap();
        let calls = requests.iter().filter(|(step, _)| step == id).count();
        assert_eq!(calls as u64, s["attempts"].as_u64().unwrap(), "step {id}: the service saw {calls} calls: {s:#}");
    }
    drop(lost);
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}
