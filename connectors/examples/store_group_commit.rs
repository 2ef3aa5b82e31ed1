//! Measures the SQLite store's writes: the group commit and the journal append with puts.
//!
//! ```text
//! cargo run --release -p tollgate-connectors --example store_group_commit -- [--rounds N]
//! ```
//!
//! Three figures, each the best of three passes on a fresh file:
//! - *lone*: one `put` at a time (the idle path: one autocommit statement);
//! - *burst*: rounds of 200 concurrent writes (100 `put_if_absent`, 100 `put`), which share
//!   group commits; writes/s over all rounds;
//! - *append*: `append_with` of 20 entries and 20 puts, one call at a time.

use std::time::{Duration, Instant};

use futures::future::join_all;
use tollgate_connectors::store::SqliteBackend;
use tollgate_engine::store::Backend;

const BURST: usize = 200;
const TTL: Option<Duration> = Some(Duration::from_secs(600));

#[tokio::main]
async fn main() {
    let mut rounds = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().and_then(|n| n.parse().ok()).expect("--rounds N"),
            other => panic!("unknown argument {other}"),
        }
    }
    let (mut lone, mut burst, mut append) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("store.db")).await.unwrap();
        lone = lone.min(lone_puts(&backend, 2_000).await);
        burst = burst.min(bursts(&backend, rounds).await);
        append = append.min(appends(&backend, 500).await);
        backend.close().await;
    }
    println!("lone put:    {:>8.1} µs/write", lone.as_secs_f64() * 1e6 / 2_000.0);
    println!(
        "burst:       {:>8.0} writes/s ({rounds} rounds of {BURST})",
        (rounds * BURST) as f64 / burst.as_secs_f64()
    );
    println!("append_with: {:>8.1} µs/call (20 entries, 20 puts)", append.as_secs_f64() * 1e6 / 500.0);
}

async fn lone_puts(backend: &SqliteBackend, n: usize) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        backend.put(&format!("lone/{i}"), b"value", None).await.unwrap();
    }
    started.elapsed()
}

async fn bursts(backend: &SqliteBackend, rounds: usize) -> Duration {
    let value = vec![7u8; 200];
    let started = Instant::now();
    for round in 0..rounds {
        let writes = (0..BURST).map(|i| {
            let (backend, value) = (backend.clone(), &value);
            async move {
                let key = format!("burst/{round}/{}", i / 2);
                if i % 2 == 0 {
                    backend.put_if_absent(&key, value, TTL).await.unwrap();
                } else {
                    backend.put(&format!("{key}/out"), value, None).await.unwrap();
                }
            }
        });
        join_all(writes).await;
    }
    started.elapsed()
}

async fn appends(backend: &SqliteBackend, calls: usize) -> Duration {
    let entries: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; 300]).collect();
    let started = Instant::now();
    for call in 0..calls {
        let puts: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("append/{call}/{i}"), vec![1u8; 200])).collect();
        backend.append_with("append/journal", (call * 20) as u64, &entries, &puts, None).await.unwrap();
    }
    started.elapsed()
}
