//! Rough throughput of each storage backend on this machine: journal appends and value
//! puts per second, from one task and from several at once. Prints figures; asserts nothing.
//!
//! ```text
//! cargo run --release -p tollgate-connectors --example store_throughput [redis-url]
//! ```
//! The Redis URL defaults to `redis://127.0.0.1:6379`; an unreachable Redis is reported
//! and skipped (this is a measurement, not a test). SQLite runs on a temporary file.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate_connectors::store::{RedisBackend, SqliteBackend};
use tollgate_engine::store::Backend;
use tollgate_engine::store::memory::MemoryBackend;

/// Operations per measurement, split across the tasks.
const OPS: usize = 20_000;
/// Tasks in the concurrent measurements: runs journaling side by side.
const TASKS: usize = 8;
/// About the size of a sealed journal event.
const VALUE: [u8; 200] = [0xab; 200];

#[tokio::main]
async fn main() {
    let redis_url = std::env::args().nth(1).unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return eprintln!("cannot create a temp dir: {e}"),
    };
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());

    println!("{OPS} ops per figure, {}-byte values, concurrent = {TASKS} tasks\n", VALUE.len());
    println!(
        "{:<8} {:>16} {:>16} {:>16} {:>16}",
        "backend", "append/s 1 task", "append/s conc.", "put/s 1 task", "put/s conc."
    );

    measure("memory", Arc::new(MemoryBackend::new())).await;
    match SqliteBackend::open(&dir.path().join("throughput.db")).await {
        Ok(b) => measure("sqlite", Arc::new(b)).await,
        Err(e) => println!("sqlite: cannot open: {e}"),
    }
    match RedisBackend::connect(&redis_url, &format!("tollgate-throughput-{stamp}")).await {
        Ok(b) => {
            measure("redis", Arc::new(b.clone())).await;
            if let Err(e) = b.clear_namespace().await {
                eprintln!("redis: could not clear the namespace: {e}");
            }
        }
        Err(e) => println!("redis: skipped, {e}"),
    }
}

async fn measure(name: &str, backend: Arc<dyn Backend>) {
    let appends = rate(&backend, 1, append_run).await;
    let appends_conc = rate(&backend, TASKS, append_run).await;
    let puts = rate(&backend, 1, put_run).await;
    let puts_conc = rate(&backend, TASKS, put_run).await;
    println!("{name:<8} {appends:>16} {appends_conc:>16} {puts:>16} {puts_conc:>16}");
}

/// Runs `work` on `tasks` tasks, `OPS / tasks` operations each, and formats ops/s.
async fn rate<F, Fut>(backend: &Arc<dyn Backend>, tasks: usize, work: F) -> String
where
    F: Fn(Arc<dyn Backend>, String, usize) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let each = OPS / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(work(Arc::clone(backend), format!("bench/{run}/{t}"), each))
        })
        .collect();
    for handle in handles {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("error: {e}"),
            Err(e) => return format!("task failed: {e}"),
        }
    }
    per_second(tasks * each, start.elapsed())
}

/// One run's journal: each event appended at the length the previous append left.
async fn append_run(b: Arc<dyn Backend>, scope: String, n: usize) -> Result<(), String> {
    let log = format!("{scope}/journal");
    for i in 0..n {
        b.append(&log, i as u64, &[VALUE.to_vec()]).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn put_run(b: Arc<dyn Backend>, scope: String, n: usize) -> Result<(), String> {
    for i in 0..n {
        b.put(&format!("{scope}/out/{i}"), &VALUE, None).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn per_second(ops: usize, took: Duration) -> String {
    format!("{:.0}", ops as f64 / took.as_secs_f64())
}
