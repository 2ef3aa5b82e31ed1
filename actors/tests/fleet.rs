//! A fleet of real processes — `tollgate serve` and two `tollgate worker`s — on a Redis of the
//! test's own (AOF, `appendfsync always`). Redis is shut down and started again while chains
//! of steps are running: every run finishes `succeeded` without restarting any Tollgate
//! process, and each process's `/healthz` says unhealthy while its queue worker is gone and
//! healthy again once it is back.

#[path = "../src/queue/tests/redis_server.rs"]
mod redis_server;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use serde_json::{Value, json};

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

/// A `tollgate` child process; its stderr is kept for the failure message. Killed on drop.
struct Process {
    name: &'static str,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(name: &'static str, args: &[&str], env: &[(&str, String)], dir: &std::path::Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TOLLGATE_")) {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tollgate");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self { name, child, stderr }
    }

    /// Waits for a stderr line starting with `prefix` and returns the rest of it.
    fn wait_line(&self, prefix: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(rest) = self.stderr.lock().unwrap().iter().find_map(|l| l.strip_prefix(prefix)) {
                return rest.to_string();
            }
            self.assert_alive();
            assert!(Instant::now() < end, "{}: no line `{prefix}…`:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Not exited (nor a zombie waiting to be reaped).
    fn assert_alive(&self) {
        let alive = std::path::Path::new(&format!("/proc/{}", self.child.id())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).is_ok_and(|s| s.contains(") Z "));
        assert!(alive, "{} exited:\n{}", self.name, self.log());
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the test last saw (health answers, run summaries), for a timeout's message.
type Seen = Mutex<String>;

async fn wait_until<F: Future<Output = bool>>(what: &str, fleet: &[&Process], seen: &Seen, mut cond: impl FnMut() -> F) {
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

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
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
    let workers: Vec<Process> = ["worker-1", "worker-2"].into_iter().map(|n| Process::spawn(n, &["worker"], &env, dir.path())).collect();
    let fleet: Vec<&Process> = std::iter::once(&serve).chain(&workers).collect();
    let admin = format!("http://{}", tokio::task::block_in_place(|| serve.wait_line("tollgate serve: admin API on http://")).split(' ').next().unwrap());
    let mut probes = vec![format!("{admin}/healthz")];
    for w in &workers {
        probes.push(tokio::task::block_in_place(|| w.wait_line("tollgate worker: health on ")));
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
        let r: Value = client.post(format!("{admin}/api/runs")).json(&json!({"spec": spec})).send().await.expect("POST /api/runs").json().await.expect("json");
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
            let states: Vec<String> = views.iter().map(|v| format!("{}: {} after {} steps", v["run"], v["status"], succeeded(v))).collect();
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
    wait_until("every process to report itself healthy again", &fleet, &seen, || health(200, |v| v["checks"]["step_workers"]["running"] == true)).await;

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
