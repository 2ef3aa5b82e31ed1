//! Test harness: a whole Tollgate system (embedded in a temp dir, or on the real Redis under a
//! fresh namespace), a real local HTTP server whose answers a test scripts, and waiting on
//! conditions with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;
use tempfile::TempDir;
use tollgate::bootstrap::{self, Role, Running};
use tollgate::config::{BackendKind, Config};
use tollgate::service::{RunView, Tollgate};
use tollgate_engine::ids::RunId;
use tollgate_engine::spec::parse_yaml;

use crate::faults::FullDisk;

/// The Redis the tests use: `TOLLGATE_TEST_REDIS_URL`, else the machine's 127.0.0.1:6379.
pub fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fixed test master key (never used outside tests).
pub const TEST_MASTER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A running system plus what it needs to stay alive.
pub struct TestSystem {
    pub running: Option<Running>,
    pub config: Config,
    pub dir: TempDir,
}

impl TestSystem {
    pub fn t(&self) -> &Tollgate {
        &self.running.as_ref().expect("system is running").tollgate
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Start again on the same data, as `tollgate serve` does after a restart: every unfinished
    /// run is recovered (a run whose attempt the stop interrupted is driven on, not left for
    /// whatever message might next reach it).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.running = Some(bootstrap::start(&self.config, Role::All).await.expect("system restarts"));
        self.t().recover_all().await.expect("unfinished runs recovered");
    }

    /// Start a run of `yaml` with `params`.
    pub async fn start(&self, yaml: &str, params: Value) -> RunId {
        let spec = parse_yaml(yaml).unwrap_or_else(|e| panic!("test spec is invalid: {e}"));
        self.t().start_run(&spec, params.as_object().expect("params object")).await.expect("run starts")
    }

    /// Wait until the run finishes or only waits for a human.
    pub async fn settle(&self, run: &RunId) -> RunView {
        match tokio::time::timeout(Duration::from_secs(60), self.t().wait_settled(run, Duration::from_millis(100)))
            .await
        {
            Ok(view) => view.expect("run view"),
            Err(_) => {
                // Say where it stands: a stall is diagnosed from this.
                let view = self.t().view(run).await;
                let summary = match self.t().engine.store.run_meta(run).await {
                    Ok(meta) => format!("{:?}", self.t().engine.store.run_summary(&meta.workflow, run).await),
                    Err(e) => e.to_string(),
                };
                let steps = view.as_ref().map(|v| {
                    v.step_ids
                        .iter()
                        .zip(&v.state.steps)
                        .map(|(id, s)| format!("{id}: {:?} attempts {:?}", s.status, s.attempts))
                        .collect::<Vec<_>>()
                });
                panic!(
                    "run {run} did not settle within 60 s: status {:?}; summary {summary}; steps {steps:?}",
                    view.as_ref().map(|v| v.state.status.label())
                );
            }
        }
    }

    /// The state of step `id`.
    pub fn step<'v>(view: &'v RunView, id: &str) -> &'v tollgate_engine::run::StepState {
        let i = view.step_ids.iter().position(|s| s == id).unwrap_or_else(|| panic!("no step {id}"));
        &view.state.steps[i]
    }
}

fn base_config(dir: &TempDir) -> Config {
    Config {
        data_dir: dir.path().to_path_buf(),
        master_key: TEST_MASTER_KEY.into(),
        reconcile_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(20),
        ..Config::default()
    }
}

/// A system on the embedded backend (SQLite files in a fresh temp dir).
pub async fn embedded() -> TestSystem {
    embedded_with(|_| {}).await
}

/// With `TOLLGATE_TEST_LOG` set (a tracing filter, e.g. `tollgate=debug`), the engine's log
/// goes to the test's captured output, shown when it fails. Once per test binary.
pub fn logs() {
    if let Ok(filter) = std::env::var("TOLLGATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A system on the embedded backend with some settings changed.
pub async fn embedded_with(change: impl FnOnce(&mut Config)) -> TestSystem {
    logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = base_config(&dir);
    change(&mut config);
    let running = bootstrap::start(&config, Role::All).await.expect("embedded system starts");
    TestSystem { running: Some(running), config, dir }
}

/// A system on the embedded backend whose store refuses writes as a full disk does while the
/// returned [`FullDisk`] says so.
pub async fn embedded_with_full_disk() -> (TestSystem, Arc<FullDisk>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = base_config(&dir);
    let disk = FullDisk::new(bootstrap::open_backend(&config).await.expect("embedded store opens"));
    let running = bootstrap::start_on(&config, Role::All, disk.clone()).await.expect("embedded system starts");
    (TestSystem { running: Some(running), config, dir }, disk)
}

/// A system on the real Redis, isolated under a fresh namespace. Fails loudly without Redis.
pub async fn redis() -> TestSystem {
    redis_with(|_| {}).await
}

/// A system on the real Redis with some settings changed.
pub async fn redis_with(change: impl FnOnce(&mut Config)) -> TestSystem {
    logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        backend: BackendKind::Redis,
        redis_url: redis_url(),
        namespace: format!("tgtest-{}", ulid::Ulid::generate()),
        ..base_config(&dir)
    };
    change(&mut config);
    let running = bootstrap::start(&config, Role::All)
        .await
        .unwrap_or_else(|e| panic!("cannot start on Redis at {} (is it running?): {e:#}", config.redis_url));
    TestSystem { running: Some(running), config, dir }
}

/// Both backends, for tests that must hold on each.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(TestSystem) -> Fut,
    Fut: Future<Output = ()>,
{
    test(embedded().await).await;
    test(redis().await).await;
}

/// Poll `cond` until it holds or `deadline` passes (then panic with `what`).
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !cond().await {
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request the test server received.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the test server answers to request number `n` (0-based): status, extra headers,
/// body, and how long to wait before answering.
pub type Script = Arc<dyn Fn(usize, &Hit) -> (StatusCode, Vec<(&'static str, String)>, String, Duration) + Send + Sync>;

/// A real HTTP server on 127.0.0.1:0 that records every request and answers per `script`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    /// Requests whose client went away before the answer (the handler was dropped).
    pub aborted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(script: Script) -> Self {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let aborted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let state = ServerState { hits: hits.clone(), aborted: aborted.clone(), script };
        let app = axum::Router::new().fallback(any(handle)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind test server");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("test server runs");
        });
        Self { addr, hits, aborted, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits lock").clone()
    }

    pub fn aborted(&self) -> usize {
        self.aborted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct ServerState {
    hits: Arc<Mutex<Vec<Hit>>>,
    aborted: Arc<std::sync::atomic::AtomicUsize>,
    script: Script,
}

/// Counts a request as aborted if its handler is dropped before it answers.
struct AbortGuard(Option<Arc<std::sync::atomic::AtomicUsize>>);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

async fn handle(State(st): State<ServerState>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let hit = Hit { at: Instant::now(), path: uri.path().to_string(), headers, body };
    let n = {
        let mut h = st.hits.lock().expect("hits lock");
        h.push(hit.clone());
        h.len() - 1
    };
    let (status, extra, body, delay) = (st.script)(n, &hit);
    let mut guard = AbortGuard(Some(st.aborted.clone()));
    tokio::time::sleep(delay).await;
    guard.0 = None;
    let mut resp = (status, [("content-type", "application/json")], body).into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().expect("header value"));
    }
    resp
}
