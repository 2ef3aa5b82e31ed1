//! A stalled lease holder cannot write after a successor took over: a real `tollgate run`
//! process driving a run on Redis is paused (SIGSTOP) past the lease TTL, a real
//! `tollgate resume` process takes the run over, and the paused process is continued
//! (SIGCONT). Its lease renewal is refused (fenced), it does not take the run back, the
//! journal receives nothing from it, and the run finishes once, driven by the successor.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::any;
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use tokio::sync::watch;
use tollgate_engine::run::Event;

/// A fixed test master key (never used outside tests).
const MASTER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Short, so the test does not wait long for the paused holder to be taken for dead; the
/// reconcile tick (which renews the lease) runs well within it.
const LEASE_TTL: &str = "6s";
const RECONCILE: &str = "300ms";

/// Everything below waits on a condition; this is how long any one may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(90);

fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The service the step calls: it counts requests and holds each one until the test releases
/// it (or releases all).
#[derive(Clone)]
struct Held {
    hits: Arc<Mutex<usize>>,
    released: watch::Sender<bool>,
}

async fn held(State(h): State<Held>) -> &'static str {
    *h.hits.lock().unwrap() += 1;
    let mut rx = h.released.subscribe();
    let _ = rx.wait_for(|all| *all).await;
    r#"{"ok":true}"#
}

fn spec(base: &str) -> String {
    // The step's timeout is far beyond the test, so no process has a timer of its own to act
    // on: what the successor does is driven by the held request alone.
    format!(
        r#"
id: lease-fencing
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - {{ id: slow, type: api_call, request: {{ method: POST, url: "{base}/slow" }}, timeout: 300s }}
  - {{ id: after, type: code, needs: [slow], script: "return 'done'" }}
"#
    )
}

fn tollgate(dir: &std::path::Path, namespace: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.arg("--data-dir")
        .arg(dir)
        .env("TOLLGATE_BACKEND", "redis")
        .env("TOLLGATE_REDIS_URL", redis_url())
        .env("TOLLGATE_NAMESPACE", namespace)
        .env("TOLLGATE_MASTER_KEY", MASTER_KEY)
        .env("TOLLGATE_LEASE_TTL", LEASE_TTL)
        .env("TOLLGATE_RECONCILE_INTERVAL", RECONCILE)
        .env("TOLLGATE_POLL_INTERVAL", "20ms")
        .env("TOLLGATE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A child process whose stderr lines and stdout are collected as they come.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("start tollgate");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Self { child, stderr, stdout: Some(stdout) }
    }

    fn logged(&self, needle: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Wait for the process to exit; its JSON summary on stdout.
    async fn finish(&mut self, what: &str) -> Value {
        let end = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < end, "{what} did not exit; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let out = self.stdout.take().expect("finished once").join().unwrap();
        assert!(status.success(), "{what} exited with {status}; log:\n{}", self.log());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what} printed no JSON summary ({e}): {out}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failed test must not leave a paused process behind.
        let _ = Command::new("kill").arg("-CONT").arg(self.child.id().to_string()).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + PATIENCE;
    while !cond().await {
        assert!(Instant::now() < end, "timed out after {PATIENCE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The run's lease record as stored: (token, holder).
async fn lease(conn: &mut MultiplexedConnection, ns: &str, run: &str) -> Option<(u64, String)> {
    let raw: Option<String> = redis::cmd("GET").arg(format!("{ns}:run/{run}/lease")).query_async(conn).await.unwrap();
    let raw = raw?;
    let mut parts = raw.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.to_string()))
}

async fn exists(conn: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query_async::<i64>(conn).await.unwrap() == 1
}

/// The run's journal, read and opened through the store as the engine reads it.
async fn journal_events(ns: &str, run: &str) -> Vec<Event> {
    let config = tollgate::config::Config {
        backend: tollgate::config::BackendKind::Redis,
        redis_url: redis_url(),
        namespace: ns.to_string(),
        master_key: MASTER_KEY.to_string(),
        ..Default::default()
    };
    let backend = tollgate::bootstrap::open_backend(&config).await.expect("the store");
    let store =
        tollgate_engine::store::Store::new(backend, tollgate::bootstrap::master_key(&config).expect("master key"));
    let run = tollgate_engine::ids::RunId::from(run);
    let wf = store.run_workflow(&run).await.expect("the run's workflow");
    store.read_journal(&wf, &run).await.expect("the journal")
}

async fn journal_len(conn: &mut MultiplexedConnection, ns: &str, run: &str) -> u64 {
    redis::cmd("LLEN").arg(format!("{ns}:run/{run}/journal")).query_async(conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_cannot_write_after_a_successor_took_over() {
    let (released, _) = watch::channel(false);
    let service = Held { hits: Arc::default(), released: released.clone() };
    let app = axum::Router::new().fallback(any(held)).with_state(service.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let hits = || *service.hits.lock().unwrap();

    let ns = format!("tgtest-lease-{}", ulid::Ulid::generate());
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis at {}: {e}", redis_url()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lease.yaml");
    std::fs::write(&file, spec(&base)).unwrap();

    // The first holder drives the run until its step's request is in flight.
    let mut holder = Proc::spawn({
        let mut c = tollgate(dir.path(), &ns);
        c.arg("run").arg(&file).arg("--json");
        c
    });
    let mut run = String::new();
    wait_for("the run to start", || {
        let found = holder
            .stderr
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix("tollgate: run ")?.strip_suffix(" started").map(str::to_string));
        if let Some(id) = found {
            run = id;
        }
        std::future::ready(!run.is_empty())
    })
    .await;
    wait_for("the first holder's request", || std::future::ready(hits() >= 1)).await;
    let (first_token, first_holder) = lease(&mut conn, &ns, &run).await.expect("the run's lease is taken");
    assert!(
        exists(&mut conn, &format!("{ns}:proc/{first_holder}")).await,
        "the holder's heartbeat is recorded under its liveness id"
    );

    // Paused past the TTL: its heartbeat expires, so it is dead to everyone else.
    holder.signal("STOP");
    let heartbeat = format!("{ns}:proc/{first_holder}");
    let end = Instant::now() + PATIENCE;
    while exists(&mut conn, &heartbeat).await {
        assert!(Instant::now() < end, "the paused holder's heartbeat did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A successor takes the run over and drives it until its own request is in flight; from
    // then on it has nothing to write until the test answers that request.
    let mut successor = Proc::spawn({
        let mut c = tollgate(dir.path(), &ns);
        c.arg("resume").arg(&run).arg("--json");
        c
    });
    let end = Instant::now() + PATIENCE;
    let (second_token, second_holder) = loop {
        if let Some(taken) = lease(&mut conn, &ns, &run).await.filter(|(_, h)| *h != first_holder) {
            break taken;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for the successor to take the lease over; its log:\n{}",
            successor.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        second_token > first_token,
        "the successor's token ({second_token}) must be larger than the stalled holder's ({first_token})"
    );
    wait_for("the successor's request", || std::future::ready(hits() >= 2)).await;
    let quiet_len = journal_len(&mut conn, &ns, &run).await;

    // The stalled holder wakes up: its renewal is refused, and it does not take the run back.
    holder.signal("CONT");
    let fenced = format!("lease run/{run}/lease no longer holds token {first_token}");
    wait_for("the woken holder to be fenced", || std::future::ready(holder.logged(&fenced))).await;
    let refused = format!("is driven by another process ({second_holder})");
    wait_for("the woken holder to find the run driven by the successor", || {
        std::future::ready(holder.logged(&refused))
    })
    .await;
    assert_eq!(
        lease(&mut conn, &ns, &run).await,
        Some((second_token, second_holder.clone())),
        "the successor still holds the lease"
    );
    // The woken holder's worker gives up its call (the successor abandoned that attempt) and
    // records that late result; the successor journals it as superseded. Nothing else may have
    // reached the journal: the woken holder's own appends are fenced.
    let journal = journal_events(&ns, &run).await;
    for event in &journal[quiet_len as usize..] {
        assert!(
            matches!(event, Event::StepFailed { attempt: 1, error, .. } if error.code == "cancelled"),
            "after the takeover the journal received {event:?}, not only the abandoned attempt's late result"
        );
    }
    assert!(
        journal.len() as u64 <= quiet_len + 1,
        "more than the late result was journaled: {:?}",
        &journal[quiet_len as usize..]
    );

    // The service answers: the successor finishes the run, once.
    released.send_replace(true);
    let resumed = successor.finish("the successor (`tollgate resume`)").await;
    assert_eq!(resumed["status"], "succeeded", "{resumed:#}");
    let steps = resumed["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["status"] == "succeeded"), "{steps:#?}");
    assert_eq!(steps.iter().find(|s| s["id"] == "after").unwrap()["attempts"], 1, "{steps:#?}");
    // Nobody else appended while the successor drove the run: none of its appends met a
    // concurrent writer, and none of them was fenced.
    let log = successor.stderr.lock().unwrap().join("\n");
    assert!(
        !log.contains("concurrent writer") && !log.contains("no longer holds token"),
        "the successor met another writer:\n{log}"
    );
    // The woken holder sees the finished run and exits normally.
    let seen = holder.finish("the woken holder (`tollgate run`)").await;
    assert_eq!(seen["status"], "succeeded");

    let backend = tollgate_connectors::store::RedisBackend::connect(&redis_url(), &ns).await.unwrap();
    backend.clear_namespace().await.unwrap();
}
