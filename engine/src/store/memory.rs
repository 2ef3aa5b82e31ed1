//! memory
//!
//! [`MemoryBackend`]: the [`Backend`] port held in process memory, for unit tests and
//! throw-away runs. It follows the same semantics as the Redis and SQLite backends (the
//! conformance suite in `tollgate-tests` runs against all three): one namespace of names
//! shared by values, logs and indexes, TTLs measured on the monotonic clock, appends
//! checked against the expected length, lease records in the shared layout of
//! [`crate::store::lease`] (their expiry on the wall clock, as the record says).
//!
//! Every method completes without awaiting anything, so the futures it returns are ready on
//! their first poll; that keeps the engine free of an async runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::store::lease::{LeaseRecord, check_holder, decide_acquire, decide_renew, fenced};
use crate::store::{Backend, Lease, LeaseGrant, StoreError};

/// An in-memory [`Backend`]. Cheap to create; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    values: BTreeMap<String, Value>,
    logs: BTreeMap<String, Vec<Vec<u8>>>,
    indexes: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug)]
struct Value {
    bytes: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Value {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method mutates the maps with single calls that cannot leave them half
        // updated, so the data behind a poisoned lock is still consistent: keep serving it
        // rather than failing every later call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Now, in the Unix milliseconds lease records keep their expiry in.
fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Inner {
    /// The live lease record under `key`, if any.
    fn lease(&self, key: &str, now: Instant) -> Result<Option<LeaseRecord>, StoreError> {
        match self.values.get(key) {
            Some(v) if v.live(now) => LeaseRecord::decode(key, &v.bytes).map(Some),
            _ => Ok(None),
        }
    }

    fn put_lease(&mut self, key: &str, record: &LeaseRecord) {
        self.values.insert(key.to_owned(), Value { bytes: record.encode(), expires_at: None });
    }
}

/// When a value written now with `ttl` stops being visible.
fn deadline(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
    // A TTL too large to represent never expires in practice.
    ttl.and_then(|ttl| now.checked_add(ttl))
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.values.get(key) {
            Some(v) if v.live(now) => Ok(Some(v.bytes.clone())),
            Some(_) => {
                // Expired: remove lazily, as the other backends do.
                inner.values.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let now = Instant::now();
        let value = Value { bytes: value.to_vec(), expires_at: deadline(now, ttl) };
        self.lock().values.insert(key.to_owned(), value);
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.values.get(key).is_some_and(|v| v.live(now)) {
            return Ok(false);
        }
        let value = Value { bytes: value.to_vec(), expires_at: deadline(now, ttl) };
        inner.values.insert(key.to_owned(), value);
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        // A name is one thing in Redis (value, list or sorted set); deleting it removes
        // whichever it is, here too.
        let mut inner = self.lock();
        inner.values.remove(key);
        inner.logs.remove(key);
        inner.indexes.remove(key);
        Ok(())
    }

    async fn append(&self, log: &str, expected_len: u64, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let actual = inner.logs.get(log).map_or(0, |l| l.len() as u64);
        if actual != expected_len {
            return Err(StoreError::Conflict { log: log.to_owned(), expected: expected_len, actual });
        }
        // An empty append only checks the length: it must not create an empty log, which
        // Redis cannot represent.
        if !entries.is_empty() {
            inner.logs.entry(log.to_owned()).or_default().extend(entries.iter().cloned());
        }
        Ok(())
    }

    async fn append_with(
        &self,
        log: &str,
        expected_len: u64,
        entries: &[Vec<u8>],
        puts: &[(String, Vec<u8>)],
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(lease) = fence
            && !inner.lease(&lease.key, now)?.is_some_and(|r| r.holds(lease))
        {
            return Err(fenced(lease));
        }
        let actual = inner.logs.get(log).map_or(0, |l| l.len() as u64);
        if actual != expected_len {
            return Err(StoreError::Conflict { log: log.to_owned(), expected: expected_len, actual });
        }
        if !entries.is_empty() {
            inner.logs.entry(log.to_owned()).or_default().extend(entries.iter().cloned());
        }
        for (key, value) in puts {
            inner.values.insert(key.clone(), Value { bytes: value.clone(), expires_at: None });
        }
        Ok(())
    }

    async fn lease_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        over: Option<&Lease>,
    ) -> Result<LeaseGrant, StoreError> {
        check_holder(holder)?;
        let mut inner = self.lock();
        let current = inner.lease(key, Instant::now())?;
        match decide_acquire(key, current, holder, ttl, over, wall_ms()) {
            Ok(record) => {
                inner.put_lease(key, &record);
                Ok(LeaseGrant::Granted(Lease { key: key.to_owned(), holder: record.holder, token: record.token }))
            }
            Err(held) => Ok(LeaseGrant::Held(held)),
        }
    }

    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let current = inner.lease(&lease.key, Instant::now())?;
        let record = decide_renew(current, lease, ttl, wall_ms())?;
        inner.put_lease(&lease.key, &record);
        Ok(())
    }

    async fn lease_release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.lease(&lease.key, Instant::now())? {
            Some(record) if record.holds(lease) => {
                inner.put_lease(&lease.key, &LeaseRecord { holder: String::new(), expires_at_ms: 0, ..record });
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn read_log(&self, log: &str, from: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let inner = self.lock();
        let Some(entries) = inner.logs.get(log) else { return Ok(Vec::new()) };
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(entries.len());
        Ok(entries[from..].to_vec())
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        self.lock().indexes.entry(index.to_owned()).or_default().insert(member.to_owned());
        Ok(())
    }

    async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(members) = inner.indexes.get_mut(index) {
            members.remove(member);
            // Redis drops a sorted set with its last member; so does this.
            if members.is_empty() {
                inner.indexes.remove(index);
            }
        }
        Ok(())
    }

    async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().indexes.get(index).map(|m| m.iter().cloned().collect()).unwrap_or_default())
    }

    async fn index_page_desc(
        &self,
        index: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let Some(members) = inner.indexes.get(index) else { return Ok(Vec::new()) };
        let page = match before {
            Some(before) => members
                .range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(before)))
                .rev()
                .take(limit)
                .cloned()
                .collect(),
            None => members.iter().rev().take(limit).cloned().collect(),
        };
        Ok(page)
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.values.retain(|_, v| v.live(now));
        let in_range = |k: &&String| k.starts_with(prefix);
        let mut keys: BTreeSet<String> = BTreeSet::new();
        keys.extend(inner.values.range(prefix.to_owned()..).map(|(k, _)| k).take_while(in_range).cloned());
        keys.extend(inner.logs.range(prefix.to_owned()..).map(|(k, _)| k).take_while(in_range).cloned());
        keys.extend(inner.indexes.range(prefix.to_owned()..).map(|(k, _)| k).take_while(in_range).cloned());
        Ok(keys.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::thread::sleep;

    use super::*;

    /// Every future of [`MemoryBackend`] is ready at once, so one poll drives it; the engine
    /// has no runtime to lend.
    fn now<F: Future>(f: F) -> F::Output {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("MemoryBackend future was not ready on its first poll"),
        }
    }

    #[test]
    fn values_round_trip_and_first_writer_wins() {
        let b = MemoryBackend::new();
        assert_eq!(now(b.get("a")).unwrap(), None);
        now(b.put("a", b"1", None)).unwrap();
        assert_eq!(now(b.get("a")).unwrap(), Some(b"1".to_vec()));
        assert!(!now(b.put_if_absent("a", b"2", None)).unwrap());
        assert!(now(b.put_if_absent("b", b"2", None)).unwrap());
        now(b.delete("a")).unwrap();
        assert_eq!(now(b.get("a")).unwrap(), None);
    }

    #[test]
    fn expired_values_are_invisible_and_reclaimable() {
        let b = MemoryBackend::new();
        now(b.put("t", b"x", Some(Duration::from_millis(20)))).unwrap();
        now(b.put("p/t", b"x", Some(Duration::from_millis(20)))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while now(b.get("t")).unwrap().is_some() {
            assert!(Instant::now() < deadline, "value with a 20 ms TTL still visible after 5 s");
            sleep(Duration::from_millis(5));
        }
        assert!(now(b.scan_prefix("p/")).unwrap().is_empty());
        assert!(now(b.put_if_absent("t", b"y", None)).unwrap());
    }

    #[test]
    fn append_checks_length() {
        let b = MemoryBackend::new();
        now(b.append("l", 0, &[b"a".to_vec(), b"b".to_vec()])).unwrap();
        match now(b.append("l", 1, &[b"c".to_vec()])) {
            Err(StoreError::Conflict { expected: 1, actual: 2, .. }) => {}
            other => panic!("expected a conflict, got {other:?}"),
        }
        now(b.append("l", 2, &[])).unwrap();
        assert_eq!(now(b.read_log("l", 1)).unwrap(), vec![b"b".to_vec()]);
        assert!(now(b.read_log("l", u64::MAX)).unwrap().is_empty());
    }

    #[test]
    fn indexes_and_scans_are_sorted() {
        let b = MemoryBackend::new();
        for m in ["9", "10", "1"] {
            now(b.index_add("i", m)).unwrap();
        }
        assert_eq!(now(b.index_members("i")).unwrap(), ["1", "10", "9"]);
        now(b.put("run/1/a", b"", None)).unwrap();
        now(b.put("run/10/a", b"", None)).unwrap();
        now(b.append("run/1/log", 0, &[b"e".to_vec()])).unwrap();
        assert_eq!(now(b.scan_prefix("run/1/")).unwrap(), ["run/1/a", "run/1/log"]);
    }
}
