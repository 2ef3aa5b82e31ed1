//! Runs the storage conformance suite against every backend — in memory, SQLite (own pools
//! and a shared pool), and a real Redis — plus what only one backend can show: SQLite data
//! surviving a reopen, Redis keys staying inside their namespace.
//!
//! Redis is expected at 127.0.0.1:6379 (`TOLLGATE_TEST_REDIS_URL` overrides). If it cannot
//! be reached these tests fail, never skip: a store test that silently did nothing would
//! pass the one configuration we ship for fleets untested.

use std::sync::Arc;

use tollgate_connectors::store::{RedisBackend, SqliteBackend};
use tollgate_engine::store::memory::MemoryBackend;
use tollgate_engine::store::{Backend, StoreError};
use tollgate_tests::store_conformance::run_all;
use ulid::Ulid;

fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A namespace no other run, test or tenant uses.
fn fresh_namespace() -> String {
    format!("tollgate-test-{}", Ulid::generate())
}

async fn redis_backend(namespace: &str) -> RedisBackend {
    let url = redis_url();
    match RedisBackend::connect(&url, namespace).await {
        Ok(b) => b,
        Err(e) => panic!(
            "these tests need a Redis server at {url} (set TOLLGATE_TEST_REDIS_URL to use another; \
             e.g. `redis-server --daemonize yes`): {e}"
        ),
    }
}

/// Runs `test` against a Redis backend on a fresh namespace, then deletes the namespace —
/// also when the test fails, so failed runs leave nothing behind.
async fn with_redis<F, Fut>(test: F)
where
    F: FnOnce(RedisBackend, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let namespace = fresh_namespace();
    let backend = redis_backend(&namespace).await;
    // A spawned task turns a panic into a JoinError, which lets cleanup run first.
    let outcome = tokio::spawn(test(backend.clone(), namespace.clone())).await;
    let removed = backend.clear_namespace().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    removed.expect("clearing the test namespace");
    assert!(
        backend.scan_prefix("").await.expect("scan after clearing").is_empty(),
        "clear_namespace must leave namespace {namespace} empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend_conforms() {
    run_all(Arc::new(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backend_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = SqliteBackend::open(&dir.path().join("store.db")).await.expect("open sqlite store");
    run_all(Arc::new(backend.clone())).await;
    // Twice on the same file: the suite must not depend on an empty store.
    run_all(Arc::new(backend.clone())).await;
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backend_on_a_shared_pool_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = SqliteBackend::shared_pool(&dir.path().join("shared.db")).await.expect("open pool");
    let backend = SqliteBackend::from_pool(pool.clone()).await.expect("backend on shared pool");
    run_all(Arc::new(backend.clone())).await;
    // A second user of the same pool (as the apalis-sqlite queue would be) sees the same
    // file, and re-running the idempotent schema setup on it is harmless.
    backend.put("shared/probe", b"seen", None).await.expect("put");
    let other = SqliteBackend::from_pool(pool).await.expect("second backend on the pool");
    assert_eq!(other.get("shared/probe").await.expect("get"), Some(b"seen".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("durable.db");
    {
        let b = SqliteBackend::open(&path).await.expect("open");
        b.put("wf/1/key", b"salt\0", None).await.expect("put");
        b.append("run/1/journal", 0, &[b"started".to_vec(), b"dispatched".to_vec()]).await.expect("append");
        b.append("run/1/journal", 2, &[b"succeeded".to_vec()]).await.expect("append");
        b.index_add("idx/runs", "1").await.expect("index_add");
        assert!(b.put_if_absent("run/1/out/a/1", b"outcome", None).await.expect("claim"));
        // Dropped without close(), as a crashed process would leave it.
    }
    let b = SqliteBackend::open(&path).await.expect("reopen");
    assert_eq!(b.get("wf/1/key").await.expect("get"), Some(b"salt\0".to_vec()));
    assert_eq!(
        b.read_log("run/1/journal", 0).await.expect("read"),
        [b"started".to_vec(), b"dispatched".to_vec(), b"succeeded".to_vec()]
    );
    assert_eq!(b.index_members("idx/runs").await.expect("members"), ["1"]);
    assert!(
        !b.put_if_absent("run/1/out/a/1", b"second", None).await.expect("claim"),
        "a recorded outcome must stay claimed"
    );
    match b.append("run/1/journal", 2, &[b"stale".to_vec()]).await {
        Err(StoreError::Conflict { expected: 2, actual: 3, .. }) => {}
        other => panic!("a reopened log must keep its length for conflict checks, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_backend_conforms() {
    with_redis(|backend, _| async move {
        let backend = Arc::new(backend);
        run_all(backend.clone()).await;
        run_all(backend).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_stay_inside_the_namespace() {
    with_redis(|backend, namespace| async move {
        backend.put("wf/1/key", b"v", None).await.expect("put");
        backend.put("trigger/1/fire/abc", b"v", Some(std::time::Duration::from_secs(60))).await.expect("put ttl");
        assert!(backend.put_if_absent("run/1/out/a/1", b"v", None).await.expect("claim"));
        backend.append("run/1/journal", 0, &[b"e".to_vec()]).await.expect("append");
        backend.index_add("idx/runs", "1").await.expect("index_add");

        // Everything any backend wrote for this run carries the unique namespace somewhere;
        // a raw dump of the server must find each of those keys at the start of the name.
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let mut raw = client.get_multiplexed_async_connection().await.expect("raw redis connection");
        let mut dumped: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{namespace}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut raw)
                .await
                .expect("raw SCAN");
            dumped.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        dumped.sort();
        dumped.dedup();
        let expected: Vec<String> = ["idx/runs", "run/1/journal", "run/1/out/a/1", "trigger/1/fire/abc", "wf/1/key"]
            .iter()
            .map(|k| format!("{namespace}:{k}"))
            .collect();
        assert_eq!(dumped, expected, "every key must be stored as `{{namespace}}:{{key}}`");

        // The raw value is the caller's bytes, nothing added.
        let raw_value: Vec<u8> =
            redis::cmd("GET").arg(format!("{namespace}:wf/1/key")).query_async(&mut raw).await.expect("raw GET");
        assert_eq!(raw_value, b"v");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_namespaces_do_not_see_each_other() {
    let (ns_a, ns_b) = (fresh_namespace(), fresh_namespace());
    let (a, b) = (redis_backend(&ns_a).await, redis_backend(&ns_b).await);
    let outcome = tokio::spawn({
        let (a, b) = (a.clone(), b.clone());
        async move {
            a.put("wf/1/key", b"tenant a", None).await.expect("put a");
            a.index_add("idx/runs", "1").await.expect("index_add a");
            assert_eq!(b.get("wf/1/key").await.expect("get b"), None, "tenant b must not read tenant a's value");
            assert!(
                b.put_if_absent("wf/1/key", b"tenant b", None).await.expect("claim b"),
                "tenant b's key is its own"
            );
            assert!(b.index_members("idx/runs").await.expect("members b").is_empty());
            assert_eq!(a.scan_prefix("").await.expect("scan a"), ["idx/runs", "wf/1/key"]);
            assert_eq!(a.get("wf/1/key").await.expect("get a"), Some(b"tenant a".to_vec()));
        }
    })
    .await;
    let cleared = (a.clear_namespace().await, b.clear_namespace().await);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    assert_eq!((cleared.0.expect("clear a"), cleared.1.expect("clear b")), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_is_unavailable() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    match RedisBackend::connect("redis://127.0.0.1:1", &fresh_namespace()).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("connecting to a closed port must fail as Unavailable, got {:?}", other.map(|_| ())),
    }
}
