//! A store outage on demand: [`FullDisk`] wraps the embedded SQLite store and, while the disk
//! is "full", refuses every write with the error `SqliteBackend` reports when SQLite finds no
//! room (`StoreError::Unavailable`, "database or disk is full"); reads go through, as they do
//! on a full disk. The outage starts right after a chosen write succeeds (so a test places it
//! exactly) and ends when the test heals it. This is the outage as the engine sees it above
//! the store port; what a full disk does to SQLite's connections below it is tested with a
//! really full file in `tollgate-connectors` (`store::sqlite` tests).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tollgate_engine::store::{Backend, Lease, LeaseGrant, StoreError};

pub struct FullDisk {
    inner: Arc<dyn Backend>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    full: bool,
    /// The disk fills up right after a write to a key containing this succeeds.
    fill_after: Option<String>,
    /// Keys of the writes refused so far.
    refused: Vec<String>,
}

impl FullDisk {
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Self { inner, state: Mutex::default() })
    }

    /// The disk is full from the moment a write to a key containing `key_part` has succeeded.
    pub fn fill_after_write_to(&self, key_part: &str) {
        self.state.lock().unwrap().fill_after = Some(key_part.to_string());
    }

    /// Room again: writes succeed from now on.
    pub fn heal(&self) {
        let mut st = self.state.lock().unwrap();
        st.full = false;
        st.fill_after = None;
    }

    /// How many writes to keys containing `key_part` were refused.
    pub fn refused(&self, key_part: &str) -> usize {
        self.state.lock().unwrap().refused.iter().filter(|k| k.contains(key_part)).count()
    }

    /// Refuse the write to `key` if the disk is full.
    fn check(&self, key: &str) -> Result<(), StoreError> {
        let mut st = self.state.lock().unwrap();
        if st.full {
            st.refused.push(key.to_string());
            return Err(StoreError::Unavailable(format!(
                "sqlite ({key}): error returned from database: (code: 13) database or disk is full"
            )));
        }
        Ok(())
    }

    /// A write to `key` succeeded (or not): the disk may fill up now.
    fn wrote<T>(&self, key: &str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_ok() {
            let mut st = self.state.lock().unwrap();
            if st.fill_after.as_deref().is_some_and(|part| key.contains(part)) {
                st.full = true;
                st.fill_after = None;
            }
        }
        result
    }
}

#[async_trait]
impl Backend for FullDisk {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.inner.get_many(keys).await
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        self.check(key)?;
        let r = self.inner.put(key, value, ttl).await;
        self.wrote(key, r)
    }
    async fn put_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.check(items.first().map_or("", |(k, _)| k.as_str()))?;
        let r = self.inner.put_many(items).await;
        self.wrote(items.first().map_or("", |(k, _)| k.as_str()), r)
    }
    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, StoreError> {
        self.check(key)?;
        let r = self.inner.put_if_absent(key, value, ttl).await;
        self.wrote(key, r)
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check(key)?;
        let r = self.inner.delete(key).await;
        self.wrote(key, r)
    }
    async fn append(&self, log: &str, expected_len: u64, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        self.check(log)?;
        let r = self.inner.append(log, expected_len, entries).await;
        self.wrote(log, r)
    }
    async fn append_with(
        &self,
        log: &str,
        expected_len: u64,
        entries: &[Vec<u8>],
        puts: &[(String, Vec<u8>)],
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        self.check(log)?;
        let r = self.inner.append_with(log, expected_len, entries, puts, fence).await;
        self.wrote(log, r)
    }
    async fn lease_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        over: Option<&Lease>,
    ) -> Result<LeaseGrant, StoreError> {
        self.check(key)?;
        let r = self.inner.lease_acquire(key, holder, ttl, over).await;
        self.wrote(key, r)
    }
    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        self.check(&lease.key)?;
        let r = self.inner.lease_renew(lease, ttl).await;
        self.wrote(&lease.key, r)
    }
    async fn lease_release(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.check(&lease.key)?;
        let r = self.inner.lease_release(lease).await;
        self.wrote(&lease.key, r)
    }
    async fn log_len(&self, log: &str) -> Result<u64, StoreError> {
        self.inner.log_len(log).await
    }
    async fn read_log(&self, log: &str, from: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.read_log(log, from).await
    }
    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        self.check(index)?;
        let r = self.inner.index_add(index, member).await;
        self.wrote(index, r)
    }
    async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        self.check(index)?;
        let r = self.inner.index_remove(index, member).await;
        self.wrote(index, r)
    }
    async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.inner.index_members(index).await
    }
    async fn index_page_desc(
        &self,
        index: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.index_page_desc(index, before, limit).await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
}
