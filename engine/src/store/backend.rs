//! The storage port every backend implements: byte values under id-only keys, append-only
//! logs with optimistic concurrency, sorted id indexes, TTLs, and leases with fencing tokens.

use std::time::Duration;

use async_trait::async_trait;

use crate::store::{Lease, LeaseGrant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An append expected the log to hold `expected` entries but it holds `actual`:
    /// another writer got there first.
    #[error("log {log} has {actual} entries, expected {expected}: concurrent writer")]
    Conflict { log: String, expected: u64, actual: u64 },
    #[error("record {0} does not exist")]
    NotFound(String),
    #[error("record {key} cannot be decoded: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("record {0} failed to open with its workflow key (wrong key, moved, or tampered)")]
    Sealed(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// A write fenced with a lease, or a lease renewal, by a holder whose grant is no longer
    /// current: another process took the lease over (or it was released).
    #[error("lease {key} no longer holds token {token}: another process has taken over")]
    Fenced { key: String, token: u64 },
}

/// A key-value store with logs and indexes. Keys are ids joined by `/`; values are opaque.
///
/// Every method is atomic on its own. Implementations must be safe to share across tasks
/// and processes (Redis) or tasks (SQLite file with WAL).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Several values in one read where the backend allows (one statement, one round trip).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// Write `value` under `key`, replacing what was there; expire it after `ttl` if given.
    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError>;

    /// Write several values (no TTL) at once: one transaction or one round trip where the
    /// backend allows, so a run dispatching many steps pays one write, not one per step.
    async fn put_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (key, value) in items {
            self.put(key, value, None).await?;
        }
        Ok(())
    }

    /// Write only if `key` holds nothing (or has expired). Returns whether it wrote.
    /// This is how decisions, outcomes and dedup claims become first-writer-wins.
    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, StoreError>;

    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Append `entries` to `log` provided it currently holds exactly `expected_len` entries,
    /// all or nothing. Otherwise [`StoreError::Conflict`].
    async fn append(&self, log: &str, expected_len: u64, entries: &[Vec<u8>]) -> Result<(), StoreError>;

    /// [`Backend::append`] and [`Backend::put_many`] in one atomic write (one transaction, or
    /// one script): a run journals an event and records the inputs of the steps it dispatches
    /// for it together. The puts happen only if the append does.
    ///
    /// With a `fence`, the write happens only while that lease is still the current grant of
    /// its key (expired or not, nobody took it since); otherwise [`StoreError::Fenced`], checked
    /// in the same atomic step and before the length.
    async fn append_with(
        &self,
        log: &str,
        expected_len: u64,
        entries: &[Vec<u8>],
        puts: &[(String, Vec<u8>)],
        fence: Option<&Lease>,
    ) -> Result<(), StoreError>;

    /// Take the lease `key` for `holder` until `ttl` from now, atomically: granted when no one
    /// ever held it, when it was released or has expired, or when it is still exactly the
    /// grant `over` (the caller established that this holder is gone). A grant carries a token
    /// larger than every token granted for `key` before — across expiry, release and takeover.
    /// Otherwise the current holder's lease (which may be the caller's own earlier grant).
    /// `holder` must be an id; `key` must hold nothing but a lease.
    async fn lease_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        over: Option<&Lease>,
    ) -> Result<LeaseGrant, StoreError>;

    /// Extend `lease` to `ttl` from now, atomically, if it is still the current grant (even
    /// past its expiry, provided nobody took it since); otherwise [`StoreError::Fenced`].
    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError>;

    /// Give `lease` up if it is still the current grant; returns whether it was. The record
    /// keeps its token, so later grants stay larger.
    async fn lease_release(&self, lease: &Lease) -> Result<bool, StoreError>;

    /// How many entries `log` holds (0 if it does not exist).
    async fn log_len(&self, log: &str) -> Result<u64, StoreError> {
        Ok(self.read_log(log, 0).await?.len() as u64)
    }

    /// Entries of `log` from position `from` (0-based) to the end; empty if the log does not exist.
    async fn read_log(&self, log: &str, from: u64) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Add `member` to the sorted `index` (sorted by member, ascending).
    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError>;

    async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError>;

    /// All members of `index`, ascending.
    async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError>;

    /// One page of `index`, descending: at most `limit` members below `before` (from the
    /// greatest when `None`). Run ids sort by creation time, so this is "newest first, after
    /// the last one shown". Backends override it to read only the page.
    async fn index_page_desc(
        &self,
        index: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut members = self.index_members(index).await?;
        if let Some(before) = before {
            members.retain(|m| m.as_str() < before);
        }
        Ok(members.into_iter().rev().take(limit).collect())
    }

    /// All keys that start with `prefix`, ascending. Used for listing and raw dumps, not on hot paths.
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}
