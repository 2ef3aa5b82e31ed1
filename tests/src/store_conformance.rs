//! The conformance suite every storage [`Backend`] must pass: the same checks run against
//! the in-memory, SQLite and Redis backends (see `tests/store_conformance.rs`), so the
//! engine can rely on one set of semantics whichever store it is given.
//!
//! Each check writes under its own fresh prefix (`conformance/{ulid}/{check}/`), so the
//! suite can run twice against one store and checks never see each other's keys. A failed
//! check panics with a message naming it, like any test assertion.
//!
//! Semantics pinned here beyond the trait's doc comments:
//! - a name is one record: `delete` removes the value, log or index under it, and
//!   `scan_prefix` lists the names of values, logs and indexes alike (Redis has a single
//!   keyspace, and a raw dump should see everything);
//! - an empty value is a value (`Some(vec![])`, not `None`);
//! - `append` with no entries only checks the length;
//! - `put` without a TTL clears an earlier TTL on the same key;
//! - a lease's tokens only grow, across release, expiry and takeover; a grant that is no
//!   longer current can neither renew, nor release, nor take the lease back, nor write a
//!   fenced append (which is refused as `Fenced` before its length is looked at); a grant
//!   that expired with nobody taking it over may still renew.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::Instant;
use tollgate_engine::store::{Backend, Lease, LeaseGrant, StoreError};
use ulid::Ulid;

/// Short enough to keep the suite quick, long enough that a loaded machine still reads the
/// value back before it expires.
const TTL: Duration = Duration::from_millis(200);

/// How long a condition (an expiry) may take before the check fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// Runs every check, in order, against `backend`.
pub async fn run_all(backend: Arc<dyn Backend>) {
    let b = &backend;
    get_put_round_trip(b).await;
    overwrite(b).await;
    put_if_absent_first_writer_wins(b).await;
    put_if_absent_race(b).await;
    ttl_expiry(b).await;
    append_detects_conflicts(b).await;
    concurrent_appenders(b).await;
    read_log_from_offsets(b).await;
    index_membership_and_order(b).await;
    index_pages(b).await;
    scan_prefix_matches_only_the_prefix(b).await;
    delete_removes_any_record(b).await;
    large_values(b).await;
    binary_values(b).await;
    put_many_writes_all_and_clears_ttls(b).await;
    batched_reads_and_appends(b).await;
    leases_grant_growing_tokens_to_one_holder(b).await;
    leases_expire_and_tokens_keep_growing(b).await;
    lease_races_have_one_winner(b).await;
    fenced_appends_need_the_current_grant(b).await;
}

/// A fresh key prefix for one check.
fn scope(check: &str) -> String {
    format!("conformance/{}/{check}/", Ulid::generate())
}

/// Unwraps a store call, failing the check with what was being done.
#[track_caller]
fn ok<T>(result: Result<T, StoreError>, doing: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{doing}: unexpected store error: {e}"),
    }
}

/// Waits for a condition without a bare sleep: callers loop on their condition and call
/// [`Deadline::tick`], which fails the check once the deadline has passed.
struct Deadline {
    end: Instant,
    what: String,
}

impl Deadline {
    fn new(what: impl Into<String>) -> Self {
        Self { end: Instant::now() + PATIENCE, what: what.into() }
    }

    async fn tick(&self) {
        assert!(Instant::now() < self.end, "{} did not happen within {PATIENCE:?}", self.what);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bytes that are not all the same and not text: a xorshift stream.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Values come back byte for byte; absent keys are `None`; an empty value is not absence.
pub async fn get_put_round_trip(b: &Arc<dyn Backend>) {
    let s = scope("round-trip");
    let (k, empty) = (format!("{s}wf/01J/spec/1"), format!("{s}empty"));
    assert_eq!(ok(b.get(&k).await, "get missing"), None, "a key never written must read as None");
    ok(b.put(&k, b"sealed bytes", None).await, "put");
    assert_eq!(ok(b.get(&k).await, "get"), Some(b"sealed bytes".to_vec()));
    ok(b.put(&empty, b"", None).await, "put empty");
    assert_eq!(
        ok(b.get(&empty).await, "get empty"),
        Some(Vec::new()),
        "an empty value must read as Some(empty), not None"
    );
    assert_eq!(ok(b.get(&format!("{s}wf/01J/spec")).await, "get parent"), None, "a key's parent path is not a key");
}

/// `put` replaces what was there.
pub async fn overwrite(b: &Arc<dyn Backend>) {
    let k = format!("{}k", scope("overwrite"));
    ok(b.put(&k, b"first, and longer", None).await, "put 1");
    ok(b.put(&k, b"second", None).await, "put 2");
    assert_eq!(ok(b.get(&k).await, "get"), Some(b"second".to_vec()), "put must replace the value entirely");
}

/// `put_if_absent` writes once; later claims fail and leave the value alone until deleted.
pub async fn put_if_absent_first_writer_wins(b: &Arc<dyn Backend>) {
    let k = format!("{}decision", scope("put-if-absent"));
    assert!(ok(b.put_if_absent(&k, b"approve", None).await, "first claim"), "the first put_if_absent must write");
    assert!(!ok(b.put_if_absent(&k, b"reject", None).await, "second claim"), "a second put_if_absent must not write");
    assert_eq!(ok(b.get(&k).await, "get"), Some(b"approve".to_vec()), "a failed claim must not change the value");
    ok(b.put(&k, b"overwritten", None).await, "put");
    assert!(!ok(b.put_if_absent(&k, b"x", None).await, "claim after put"), "a key written by put is taken");
    ok(b.delete(&k).await, "delete");
    assert!(ok(b.put_if_absent(&k, b"again", None).await, "claim after delete"), "a deleted key is free again");
    assert_eq!(ok(b.get(&k).await, "get"), Some(b"again".to_vec()));
}

/// 16 tasks released together claim the same key: exactly one wins, and its value stays.
pub async fn put_if_absent_race(b: &Arc<dyn Backend>) {
    const RACERS: usize = 16;
    let s = scope("put-if-absent-race");
    for round in 0..5 {
        let k = format!("{s}{round}");
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let (b, k, barrier) = (Arc::clone(b), k.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    ok(b.put_if_absent(&k, format!("racer {i}").as_bytes(), None).await, "racing claim")
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            if task.await.expect("racing task panicked") {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one of {RACERS} racing claims must win, got {winners:?}");
        let expected = format!("racer {}", winners[0]).into_bytes();
        assert_eq!(ok(b.get(&k).await, "get"), Some(expected), "round {round}: the stored value must be the winner's");
    }
}

/// Values with a TTL vanish after it (from get, put_if_absent and scans); `put` without a
/// TTL makes a key permanent again.
pub async fn ttl_expiry(b: &Arc<dyn Backend>) {
    let s = scope("ttl");

    let k = format!("{s}dedup");
    assert!(ok(b.put_if_absent(&k, b"claim 1", Some(TTL)).await, "claim with ttl"));
    assert_eq!(
        ok(b.get(&k).await, "get before expiry"),
        Some(b"claim 1".to_vec()),
        "a value must be visible before its TTL"
    );
    assert!(!ok(b.put_if_absent(&k, b"claim 2", Some(TTL)).await, "claim before expiry"), "a live claim must hold");
    let d = Deadline::new("expiry of a value with a 200 ms TTL");
    while ok(b.get(&k).await, "get while waiting for expiry").is_some() {
        d.tick().await;
    }
    assert!(ok(b.put_if_absent(&k, b"claim 3", None).await, "claim after expiry"), "an expired key must be free again");
    assert_eq!(ok(b.get(&k).await, "get"), Some(b"claim 3".to_vec()));

    // Written before the sentinel with the same TTL, so expired by the time it is; only
    // the scan looks at it, which must hide it even if nothing read it since.
    let quiet = format!("{s}list/quiet");
    ok(b.put(&quiet, b"q", Some(TTL)).await, "put quiet ttl value");
    let kept = format!("{s}list/kept");
    ok(b.put(&kept, b"t", Some(TTL)).await, "put ttl value");
    ok(b.put(&kept, b"permanent", None).await, "put without ttl over a ttl value");
    let sentinel = format!("{s}list/sentinel");
    ok(b.put(&sentinel, b"s", Some(TTL)).await, "put sentinel");
    let d = Deadline::new("expiry of the sentinel");
    while ok(b.get(&sentinel).await, "get sentinel").is_some() {
        d.tick().await;
    }
    assert_eq!(
        ok(b.get(&kept).await, "get kept"),
        Some(b"permanent".to_vec()),
        "put without a TTL must clear the earlier TTL"
    );
    assert_eq!(ok(b.scan_prefix(&format!("{s}list/")).await, "scan"), [kept], "a scan must not list expired keys");
}

fn expect_conflict(result: Result<(), StoreError>, expected: u64, actual: u64, doing: &str) {
    match result {
        Err(StoreError::Conflict { expected: e, actual: a, .. }) if (e, a) == (expected, actual) => {}
        other => panic!("{doing}: expected Conflict {{ expected: {expected}, actual: {actual} }}, got {other:?}"),
    }
}

/// Appends succeed only at the current length; a refused append changes nothing.
pub async fn append_detects_conflicts(b: &Arc<dyn Backend>) {
    let log = format!("{}journal", scope("append"));
    let e = |s: &str| s.as_bytes().to_vec();
    expect_conflict(b.append(&log, 1, &[e("x")]).await, 1, 0, "append to a missing log at 1");
    ok(b.append(&log, 0, &[e("a"), e("b")]).await, "first append");
    expect_conflict(b.append(&log, 0, &[e("x")]).await, 0, 2, "stale append");
    expect_conflict(b.append(&log, 3, &[e("x")]).await, 3, 2, "append from the future");
    expect_conflict(b.append(&log, 1, &[e("x"), e("y")]).await, 1, 2, "stale batch append");
    ok(b.append(&log, 2, &[]).await, "empty append at the right length");
    expect_conflict(b.append(&log, 5, &[]).await, 5, 2, "empty append at the wrong length");
    ok(b.append(&log, 2, &[e("c")]).await, "second append");
    assert_eq!(ok(b.read_log(&log, 0).await, "read"), [e("a"), e("b"), e("c")], "refused appends must leave no trace");
    ok(b.append(&log, 3, &[e("d"), e("e"), e("f")]).await, "batch append");
    assert_eq!(ok(b.read_log(&log, 0).await, "read").len(), 6);
    let empty = format!("{log}-empty");
    ok(b.append(&empty, 0, &[]).await, "empty append to a missing log");
    assert!(ok(b.read_log(&empty, 0).await, "read").is_empty());
}

/// Two writers at the same expected length: one wins, the other sees a conflict, and
/// entries never interleave; writers that retry on conflict lose nothing.
pub async fn concurrent_appenders(b: &Arc<dyn Backend>) {
    let log = format!("{}journal", scope("concurrent-append"));
    for round in 0..20u64 {
        let expected = round * 2;
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = ["left", "right"]
            .into_iter()
            .map(|who| {
                let (b, log, barrier) = (Arc::clone(b), log.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let entries = [format!("{round}:{who}:0").into_bytes(), format!("{round}:{who}:1").into_bytes()];
                    barrier.wait().await;
                    b.append(&log, expected, &entries).await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.expect("appending task panicked") {
                Ok(()) => wins += 1,
                other => expect_conflict(other, expected, expected + 2, "losing concurrent append"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one of two appends at length {expected} must win");
    }
    let entries = ok(b.read_log(&log, 0).await, "read");
    assert_eq!(entries.len(), 40, "20 rounds of one winning two-entry append");
    for (round, pair) in entries.chunks(2).enumerate() {
        let first = String::from_utf8_lossy(&pair[0]).into_owned();
        let Some(writer) = first.strip_suffix(":0") else { panic!("entry {first:?} is not the first of a pair") };
        assert_eq!(String::from_utf8_lossy(&pair[1]), format!("{writer}:1"), "a batch must stay contiguous");
        assert!(writer.starts_with(&format!("{round}:")), "round {round} holds {writer}");
    }

    // Eight writers, each appending ten entries with read-length-and-retry.
    const WRITERS: usize = 8;
    const EACH: usize = 10;
    let log = format!("{log}-retry");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (b, log) = (Arc::clone(b), log.clone());
            tokio::spawn(async move {
                for n in 0..EACH {
                    let entry = format!("{w}:{n}").into_bytes();
                    loop {
                        let len = ok(b.read_log(&log, 0).await, "read length").len() as u64;
                        match b.append(&log, len, std::slice::from_ref(&entry)).await {
                            Ok(()) => break,
                            Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                            Err(e) => panic!("retrying append: unexpected store error: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("retrying appender panicked");
    }
    let entries: Vec<String> =
        ok(b.read_log(&log, 0).await, "read").into_iter().map(|e| String::from_utf8_lossy(&e).into_owned()).collect();
    assert_eq!(entries.len(), WRITERS * EACH, "every retried append must land exactly once");
    for w in 0..WRITERS {
        let mine: Vec<&String> = entries.iter().filter(|e| e.starts_with(&format!("{w}:"))).collect();
        let want: Vec<String> = (0..EACH).map(|n| format!("{w}:{n}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "writer {w}'s entries must appear once each, in order");
    }
}

/// `read_log(from)` returns the suffix starting at `from`; past the end, nothing.
pub async fn read_log_from_offsets(b: &Arc<dyn Backend>) {
    let log = format!("{}journal", scope("read-log"));
    let entries: Vec<Vec<u8>> = (0..5).map(|i| format!("event {i}").into_bytes()).collect();
    ok(b.append(&log, 0, &entries[..2]).await, "append");
    ok(b.append(&log, 2, &entries[2..]).await, "append");
    for from in 0..=5 {
        assert_eq!(ok(b.read_log(&log, from).await, "read"), entries[from as usize..], "read_log from {from}");
    }
    assert!(ok(b.read_log(&log, 6).await, "read past end").is_empty());
    assert!(
        ok(b.read_log(&log, u64::MAX).await, "read from u64::MAX").is_empty(),
        "a huge offset must not wrap around"
    );
    assert!(ok(b.read_log(&format!("{log}-missing"), 0).await, "read missing").is_empty());
}

/// Index members come back once each, in byte order, and only for their own index.
pub async fn index_membership_and_order(b: &Arc<dyn Backend>) {
    let s = scope("index");
    let (runs, other) = (format!("{s}runs"), format!("{s}runs-active"));
    let (early, late) = (Ulid::from_parts(1_000, 7).to_string(), Ulid::from_parts(2_000, 3).to_string());
    for m in ["9", &late, "10", "1", &early, "1"] {
        ok(b.index_add(&runs, m).await, "index_add");
    }
    ok(b.index_add(&other, "only-here").await, "index_add other");
    assert_eq!(
        ok(b.index_members(&runs).await, "members"),
        [early.as_str(), late.as_str(), "1", "10", "9"],
        "members must be unique and in ascending byte order (ULIDs sort by time)"
    );
    ok(b.index_remove(&runs, "10").await, "index_remove");
    ok(b.index_remove(&runs, "not-a-member").await, "index_remove missing member");
    ok(b.index_remove(&format!("{s}missing"), "x").await, "index_remove on a missing index");
    assert_eq!(ok(b.index_members(&runs).await, "members"), [early.as_str(), late.as_str(), "1", "9"]);
    assert_eq!(ok(b.index_members(&other).await, "members other"), ["only-here"]);
    assert!(ok(b.index_members(&format!("{s}missing")).await, "members missing").is_empty());
    for m in ["1", "9", &early, &late] {
        ok(b.index_remove(&runs, m).await, "index_remove");
    }
    assert!(ok(b.index_members(&runs).await, "members").is_empty());
    ok(b.index_add(&runs, "back").await, "index_add after emptying");
    assert_eq!(ok(b.index_members(&runs).await, "members"), ["back"]);
}

/// Pages of an index come newest first (descending byte order), below the cursor, at most
/// `limit` long; walking them visits every member once.
pub async fn index_pages(b: &Arc<dyn Backend>) {
    let s = scope("index-pages");
    let idx = format!("{s}runs");
    let ids: Vec<String> = (0..25u64).map(|i| Ulid::from_parts(1_000 + i, 0).to_string()).collect();
    for id in ids.iter().rev() {
        ok(b.index_add(&idx, id).await, "index_add");
    }
    ok(b.index_add(&format!("{s}other"), "zzz").await, "index_add other");
    let newest: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(ok(b.index_page_desc(&idx, None, 10).await, "first page"), newest[..10]);
    assert_eq!(ok(b.index_page_desc(&idx, Some(&ids[15]), 10).await, "second page"), newest[10..20]);
    assert_eq!(ok(b.index_page_desc(&idx, Some(&ids[5]), 10).await, "last page"), newest[20..]);
    assert!(ok(b.index_page_desc(&idx, Some(&ids[0]), 10).await, "past the end").is_empty());
    assert_eq!(ok(b.index_page_desc(&idx, Some("~"), 2).await, "cursor above every member"), newest[..2]);
    let between = format!("{}~", ids[10]);
    assert_eq!(ok(b.index_page_desc(&idx, Some(&between), 3).await, "cursor between members"), newest[14..17]);
    assert!(ok(b.index_page_desc(&format!("{s}missing"), None, 10).await, "missing index").is_empty());
    assert!(ok(b.index_page_desc(&idx, None, 0).await, "limit 0").is_empty());
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = ok(b.index_page_desc(&idx, cursor.as_deref(), 7).await, "walk");
        if page.is_empty() {
            break;
        }
        cursor = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(seen, newest);
}

/// A prefix matches literally — `run/1/` not `run/10/`, `*` not as a wildcard — and a scan
/// lists values, logs and indexes, ascending.
pub async fn scan_prefix_matches_only_the_prefix(b: &Arc<dyn Backend>) {
    let s = scope("scan");
    for k in ["run/1", "run/1/meta", "run/10", "run/10/meta", "run/2/meta", "run/1/in/a/1"] {
        ok(b.put(&format!("{s}{k}"), b"v", None).await, "put");
    }
    ok(b.append(&format!("{s}run/1/journal"), 0, &[b"e".to_vec()]).await, "append");
    ok(b.index_add(&format!("{s}run/1/idx"), "m").await, "index_add");
    let names = |keys: Vec<String>| {
        keys.into_iter().map(|k| k.strip_prefix(&s).map(str::to_owned).unwrap_or(k)).collect::<Vec<_>>()
    };

    assert_eq!(
        names(ok(b.scan_prefix(&format!("{s}run/1/")).await, "scan run/1/")),
        ["run/1/idx", "run/1/in/a/1", "run/1/journal", "run/1/meta"],
        "scan of run/1/ must list values, logs and indexes under run/1/ only, ascending"
    );
    assert_eq!(
        names(ok(b.scan_prefix(&format!("{s}run/1")).await, "scan run/1")),
        ["run/1", "run/1/idx", "run/1/in/a/1", "run/1/journal", "run/1/meta", "run/10", "run/10/meta"],
        "a prefix is a string prefix: run/1 also matches run/10"
    );
    assert_eq!(names(ok(b.scan_prefix(&format!("{s}run/2")).await, "scan run/2")), ["run/2/meta"]);
    assert!(ok(b.scan_prefix(&format!("{s}run/3")).await, "scan run/3").is_empty());
    assert_eq!(ok(b.scan_prefix(&format!("{s}run/1/meta")).await, "scan exact key"), [format!("{s}run/1/meta")]);

    // Characters that are wildcards to Redis globs or SQL LIKE must match only themselves.
    for k in ["g/a*", "g/ab", "g/a?", "g/a[b]", "g/ac", "g/a\\", "g/a%", "g/a_", "g/é/1", "g/e/1"] {
        ok(b.put(&format!("{s}{k}"), b"v", None).await, "put");
    }
    for (prefix, want) in [
        ("g/a*", vec!["g/a*"]),
        ("g/a?", vec!["g/a?"]),
        ("g/a[", vec!["g/a[b]"]),
        ("g/a\\", vec!["g/a\\"]),
        ("g/a%", vec!["g/a%"]),
        ("g/a_", vec!["g/a_"]),
        ("g/é", vec!["g/é/1"]),
        ("g/", vec!["g/a%", "g/a*", "g/a?", "g/a[b]", "g/a\\", "g/a_", "g/ab", "g/ac", "g/e/1", "g/é/1"]),
    ] {
        assert_eq!(names(ok(b.scan_prefix(&format!("{s}{prefix}")).await, "scan")), want, "scan of {prefix:?}");
    }
}

/// `delete` removes whatever the name holds and is a no-op on a missing name.
pub async fn delete_removes_any_record(b: &Arc<dyn Backend>) {
    let s = scope("delete");
    let (value, log, index, neighbour) = (format!("{s}v"), format!("{s}log"), format!("{s}idx"), format!("{s}v2"));
    ok(b.put(&value, b"v", None).await, "put");
    ok(b.put(&neighbour, b"stays", None).await, "put");
    ok(b.append(&log, 0, &[b"e".to_vec()]).await, "append");
    ok(b.index_add(&index, "m").await, "index_add");
    for name in [&value, &log, &index] {
        ok(b.delete(name).await, "delete");
    }
    ok(b.delete(&format!("{s}missing")).await, "delete missing");
    assert_eq!(ok(b.get(&value).await, "get"), None, "a deleted value must be gone");
    assert!(ok(b.read_log(&log, 0).await, "read").is_empty(), "a deleted log must be gone");
    ok(b.append(&log, 0, &[b"fresh".to_vec()]).await, "append to a deleted log starts at 0");
    assert!(ok(b.index_members(&index).await, "members").is_empty(), "a deleted index must be gone");
    assert_eq!(ok(b.get(&neighbour).await, "get"), Some(b"stays".to_vec()), "delete must not touch other keys");
    assert_eq!(ok(b.scan_prefix(&s).await, "scan"), [log, neighbour]);
}

/// A 1 MiB value survives as a value and as a log entry.
pub async fn large_values(b: &Arc<dyn Backend>) {
    let s = scope("large");
    let big = pseudo_random(1 << 20, 0x5eed);
    ok(b.put(&format!("{s}v"), &big, None).await, "put 1 MiB");
    assert!(ok(b.get(&format!("{s}v")).await, "get 1 MiB") == Some(big.clone()), "a 1 MiB value must round-trip");
    let entries = [b"small".to_vec(), big.clone(), b"after".to_vec()];
    ok(b.append(&format!("{s}log"), 0, &entries).await, "append 1 MiB");
    let read = ok(b.read_log(&format!("{s}log"), 1).await, "read 1 MiB");
    assert!(read == entries[1..], "a 1 MiB log entry must round-trip");
}

/// Values are bytes, not text: NULs, invalid UTF-8 and every byte value round-trip.
pub async fn binary_values(b: &Arc<dyn Backend>) {
    let s = scope("binary");
    let every_byte: Vec<u8> = (0..=255).collect();
    let nuls = b"\0\0sealed\0\xff\xfe\0".to_vec();
    for (name, value) in [("every-byte", &every_byte), ("nuls", &nuls)] {
        let k = format!("{s}{name}");
        ok(b.put(&k, value, None).await, "put binary");
        assert_eq!(ok(b.get(&k).await, "get binary").as_ref(), Some(value), "{name} must round-trip");
        assert!(ok(b.put_if_absent(&format!("{k}/claim"), value, None).await, "claim binary"));
        assert_eq!(ok(b.get(&format!("{k}/claim")).await, "get claim").as_ref(), Some(value));
    }
    let log = format!("{s}log");
    let entries = vec![nuls.clone(), Vec::new(), every_byte.clone(), vec![0]];
    ok(b.append(&log, 0, &entries).await, "append binary");
    assert_eq!(ok(b.read_log(&log, 0).await, "read binary"), entries, "binary and empty log entries must round-trip");
}

/// `put_many` writes every item, overwriting earlier values and their TTLs.
pub async fn put_many_writes_all_and_clears_ttls(b: &Arc<dyn Backend>) {
    let p = scope("put_many");
    b.put(&format!("{p}k0"), b"old", Some(Duration::from_millis(300))).await.unwrap();
    let items: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("{p}k{i}"), format!("v{i}").into_bytes())).collect();
    b.put_many(&items).await.unwrap();
    b.put_many(&[]).await.unwrap();
    for (k, v) in &items {
        assert_eq!(b.get(k).await.unwrap().as_ref(), Some(v), "{k}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await; // past the old TTL, which put_many cleared
    assert_eq!(b.get(&format!("{p}k0")).await.unwrap(), Some(b"v0".to_vec()));
}

/// `get_many` answers in key order with gaps for missing keys; `append_with` writes its puts
/// only when the append succeeds; `log_len` counts entries.
pub async fn batched_reads_and_appends(b: &Arc<dyn Backend>) {
    let p = scope("batched");
    b.put(&format!("{p}a"), b"1", None).await.unwrap();
    b.put(&format!("{p}c"), b"3", None).await.unwrap();
    let keys = [format!("{p}a"), format!("{p}b"), format!("{p}c")];
    assert_eq!(b.get_many(&keys).await.unwrap(), vec![Some(b"1".to_vec()), None, Some(b"3".to_vec())]);
    assert!(b.get_many(&[]).await.unwrap().is_empty());

    let log = format!("{p}log");
    assert_eq!(b.log_len(&log).await.unwrap(), 0);
    let puts = vec![(format!("{p}in1"), b"x".to_vec())];
    b.append_with(&log, 0, &[b"e0".to_vec()], &puts, None).await.unwrap();
    assert_eq!(b.get(&format!("{p}in1")).await.unwrap(), Some(b"x".to_vec()));
    let stale = vec![(format!("{p}in2"), b"y".to_vec())];
    assert!(matches!(b.append_with(&log, 0, &[b"e0'".to_vec()], &stale, None).await, Err(StoreError::Conflict { .. })));
    assert_eq!(b.get(&format!("{p}in2")).await.unwrap(), None, "puts of a refused append must not be written");
    assert_eq!(b.read_log(&log, 0).await.unwrap(), vec![b"e0".to_vec()]);
    assert_eq!(b.log_len(&log).await.unwrap(), 1);
}

/// A lease the check expects to be granted.
#[track_caller]
fn granted(grant: Result<LeaseGrant, StoreError>, doing: &str) -> Lease {
    match ok(grant, doing) {
        LeaseGrant::Granted(lease) => lease,
        LeaseGrant::Held(held) => panic!("{doing}: expected a grant, the lease is held by {held:?}"),
    }
}

/// A lease the check expects to be held by someone else.
#[track_caller]
fn held(grant: Result<LeaseGrant, StoreError>, doing: &str) -> Lease {
    match ok(grant, doing) {
        LeaseGrant::Held(lease) => lease,
        LeaseGrant::Granted(lease) => panic!("{doing}: expected the lease to be held, it was granted: {lease:?}"),
    }
}

#[track_caller]
fn expect_fenced<T: std::fmt::Debug>(result: Result<T, StoreError>, lease: &Lease, doing: &str) {
    match result {
        Err(StoreError::Fenced { key, token }) if key == lease.key && token == lease.token => {}
        other => panic!("{doing}: expected Fenced {{ key: {}, token: {} }}, got {other:?}", lease.key, lease.token),
    }
}

const LONG: Duration = Duration::from_secs(60);

/// One holder at a time; only the current grant renews and releases; taking over needs the
/// exact current grant; tokens grow across takeover and release.
pub async fn leases_grant_growing_tokens_to_one_holder(b: &Arc<dyn Backend>) {
    let key = format!("{}lease", scope("lease"));
    let a1 = granted(b.lease_acquire(&key, "proc-a", LONG, None).await, "first acquire");
    assert_eq!((a1.key.as_str(), a1.holder.as_str()), (key.as_str(), "proc-a"));
    assert_eq!(
        held(b.lease_acquire(&key, "proc-b", LONG, None).await, "acquire of a held lease"),
        a1,
        "a held lease names its holder"
    );
    let wrong_token = Lease { token: a1.token + 1, ..a1.clone() };
    let wrong_holder = Lease { holder: "proc-c".into(), ..a1.clone() };
    for over in [&wrong_token, &wrong_holder] {
        assert_eq!(held(b.lease_acquire(&key, "proc-b", LONG, Some(over)).await, "takeover naming another grant"), a1);
    }
    ok(b.lease_renew(&a1, LONG).await, "renewal by the holder");
    expect_fenced(b.lease_renew(&wrong_token, LONG).await, &wrong_token, "renewal with a wrong token");
    expect_fenced(b.lease_renew(&wrong_holder, LONG).await, &wrong_holder, "renewal by another holder");

    // b found a dead: it takes over, naming a's grant.
    let b1 = granted(b.lease_acquire(&key, "proc-b", LONG, Some(&a1)).await, "takeover naming the current grant");
    assert!(b1.token > a1.token, "a takeover must carry a larger token ({} after {})", b1.token, a1.token);
    // a stalled and woke up: nothing it holds works any more.
    expect_fenced(b.lease_renew(&a1, LONG).await, &a1, "renewal by the holder that was taken over");
    assert!(!ok(b.lease_release(&a1).await, "release by the stale holder"), "a stale grant must not release the lease");
    assert_eq!(held(b.lease_acquire(&key, "proc-a", LONG, Some(&a1)).await, "the stale holder takes it back"), b1);
    assert_eq!(held(b.lease_acquire(&key, "proc-a", LONG, None).await, "the stale holder asks again"), b1);
    ok(b.lease_renew(&b1, LONG).await, "the successor's lease is untouched");

    assert!(ok(b.lease_release(&b1).await, "release"), "the holder releases its lease");
    assert!(!ok(b.lease_release(&b1).await, "second release"), "a released grant is no longer current");
    expect_fenced(b.lease_renew(&b1, LONG).await, &b1, "renewal after release");
    let a2 = granted(b.lease_acquire(&key, "proc-a", LONG, None).await, "acquire after release");
    assert!(a2.token > b1.token, "tokens must keep growing after a release ({} after {})", a2.token, b1.token);

    match b.lease_acquire(&format!("{key}-2"), "not an id", LONG, None).await {
        Err(StoreError::Forbidden(_)) => {}
        other => panic!("a holder with spaces must be refused as Forbidden, got {other:?}"),
    }
}

/// An expired lease is free, and its next grant has a larger token than the grant a stalled
/// holder still carries; a grant that expired with nobody taking it may still renew.
pub async fn leases_expire_and_tokens_keep_growing(b: &Arc<dyn Backend>) {
    let s = scope("lease-expiry");
    let key = format!("{s}lease");
    let a1 = granted(b.lease_acquire(&key, "proc-a", TTL, None).await, "acquire with a short TTL");
    let d = Deadline::new("expiry of a lease with a 200 ms TTL");
    let b1 = loop {
        match ok(b.lease_acquire(&key, "proc-b", LONG, None).await, "acquire while waiting for expiry") {
            LeaseGrant::Granted(lease) => break lease,
            LeaseGrant::Held(h) => assert_eq!(h, a1, "only a holds the lease until it expires"),
        }
        d.tick().await;
    };
    assert!(
        b1.token > a1.token,
        "an expired lease re-acquired must carry a larger token ({} after {})",
        b1.token,
        a1.token
    );
    expect_fenced(b.lease_renew(&a1, LONG).await, &a1, "renewal by the holder whose lease expired and was taken");
    assert_eq!(held(b.lease_acquire(&key, "proc-a", LONG, None).await, "the expired holder asks again"), b1);

    // Expired, but nobody took it: the holder may renew, and then holds it again.
    let key2 = format!("{s}lease-2");
    let c1 = granted(b.lease_acquire(&key2, "proc-c", TTL, None).await, "acquire with a short TTL");
    let sentinel = format!("{s}sentinel");
    ok(b.put(&sentinel, b"s", Some(TTL)).await, "put sentinel");
    let d = Deadline::new("expiry of the sentinel");
    while ok(b.get(&sentinel).await, "get sentinel").is_some() {
        d.tick().await;
    }
    ok(b.lease_renew(&c1, LONG).await, "renewal of an expired lease nobody took");
    assert_eq!(held(b.lease_acquire(&key2, "proc-d", LONG, None).await, "acquire of the renewed lease"), c1);
}

/// Racing acquires of a free lease, and racing takeovers of one grant: one winner each.
pub async fn lease_races_have_one_winner(b: &Arc<dyn Backend>) {
    const RACERS: usize = 16;
    let key = format!("{}lease", scope("lease-race"));
    let race = |over: Option<Lease>| {
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let (b, key, barrier, over) = (Arc::clone(b), key.clone(), Arc::clone(&barrier), over.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    ok(b.lease_acquire(&key, &format!("racer-{i}"), LONG, over.as_ref()).await, "racing acquire")
                })
            })
            .collect();
        async move {
            let mut winners = Vec::new();
            for task in tasks {
                if let LeaseGrant::Granted(lease) = task.await.expect("racing task panicked") {
                    winners.push(lease);
                }
            }
            winners
        }
    };
    let first = race(None).await;
    assert_eq!(first.len(), 1, "exactly one of {RACERS} racing acquires must win, got {first:?}");
    let second = race(Some(first[0].clone())).await;
    assert_eq!(second.len(), 1, "exactly one of {RACERS} racing takeovers must win, got {second:?}");
    assert!(second[0].token > first[0].token);
    expect_fenced(b.lease_renew(&first[0], LONG).await, &first[0], "renewal by the first winner after the takeover");
}

/// A fenced append (one entry, several, with puts) writes only with the current grant of its
/// lease, refuses anything else as `Fenced` before looking at the length, and writes nothing
/// then.
pub async fn fenced_appends_need_the_current_grant(b: &Arc<dyn Backend>) {
    let s = scope("fenced-append");
    let (key, log) = (format!("{s}lease"), format!("{s}journal"));
    let e = |s: &str| s.as_bytes().to_vec();
    let input = |n: u32| vec![(format!("{s}in/{n}"), format!("input {n}").into_bytes())];

    let never = Lease { key: format!("{s}no-lease"), holder: "proc-a".into(), token: 1 };
    expect_fenced(
        b.append_with(&log, 0, &[e("x")], &[], Some(&never)).await,
        &never,
        "append fenced by a lease never taken",
    );

    let a = granted(b.lease_acquire(&key, "proc-a", LONG, None).await, "acquire");
    ok(b.append_with(&log, 0, &[e("e0")], &input(0), Some(&a)).await, "fenced append with puts");
    ok(b.append_with(&log, 1, &[e("e1")], &[], Some(&a)).await, "fenced append of one entry");
    ok(b.append_with(&log, 2, &[e("e2"), e("e3")], &[], Some(&a)).await, "fenced append of two entries");
    expect_conflict(b.append_with(&log, 1, &[e("x")], &[], Some(&a)).await, 1, 4, "fenced append at a stale length");

    let bl = granted(b.lease_acquire(&key, "proc-b", LONG, Some(&a)).await, "takeover");
    for (entries, puts, doing) in [
        (vec![e("x")], vec![], "one entry by the holder that was taken over"),
        (vec![e("x"), e("y")], vec![], "two entries by the holder that was taken over"),
        (vec![e("x")], input(1), "an entry and a put by the holder that was taken over"),
    ] {
        expect_fenced(b.append_with(&log, 4, &entries, &puts, Some(&a)).await, &a, doing);
    }
    expect_fenced(
        b.append_with(&log, 0, &[e("x")], &[], Some(&a)).await,
        &a,
        "stale grant and stale length: the fence speaks first",
    );
    for wrong in [
        Lease { token: bl.token + 1, ..bl.clone() },
        Lease { token: bl.token - 1, ..bl.clone() },
        Lease { holder: "proc-a".into(), ..bl.clone() },
    ] {
        expect_fenced(
            b.append_with(&log, 4, &[e("x")], &[], Some(&wrong)).await,
            &wrong,
            "a grant that differs in token or holder",
        );
    }
    assert_eq!(ok(b.get(&input(1)[0].0).await, "get refused put"), None, "a fenced append must not write its puts");
    assert_eq!(ok(b.get(&input(0)[0].0).await, "get put"), Some(b"input 0".to_vec()));

    ok(b.append_with(&log, 4, &[e("e4")], &input(2), Some(&bl)).await, "the successor appends");
    assert_eq!(
        ok(b.read_log(&log, 0).await, "read"),
        [e("e0"), e("e1"), e("e2"), e("e3"), e("e4")],
        "refused appends must leave no trace"
    );
    assert!(ok(b.lease_release(&bl).await, "release"));
    expect_fenced(b.append_with(&log, 5, &[e("x")], &[], Some(&bl)).await, &bl, "append fenced by a released grant");
}
