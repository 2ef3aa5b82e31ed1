//! Leases with fencing tokens: the types the [`Backend`](crate::store::Backend) lease
//! operations take and return, and the one record layout every backend stores.
//!
//! A lease record lives under its key without a store TTL and is never deleted by the lease
//! operations: its expiry is a field, and releasing it only clears the holder. That is what
//! keeps tokens strictly increasing per key across expiry, release and takeover — a holder
//! that stalled past its TTL still carries a token no later grant will ever reuse, so a write
//! fenced with it is refused.
//!
//! Layout (plain text, ids and numbers only): `"{token} {holder} {expires_at_ms}"`, the holder
//! empty once released. Holder and token come first so that "is `lease` still current" is a
//! prefix comparison (`"{token} {holder} "`), which the SQLite statement and the Redis script
//! of a fenced append make without parsing.

use std::time::Duration;

use crate::ids::is_valid_id;
use crate::store::StoreError;

/// A lease as granted: what its holder passes to renew, release and fenced appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The store key of the lease (ids only, e.g. `run/{run}/lease`).
    pub key: String,
    /// Who holds it: an id without spaces (a process's liveness id).
    pub holder: String,
    /// The fencing token: larger than every token granted for `key` before.
    pub token: u64,
}

/// The answer to [`Backend::lease_acquire`](crate::store::Backend::lease_acquire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseGrant {
    /// The caller holds the lease now, with a fresh token.
    Granted(Lease),
    /// Someone holds it (possibly the caller itself, from an earlier grant); this is their lease.
    Held(Lease),
}

/// A lease record as stored (see the module doc for the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub token: u64,
    /// Empty once released.
    pub holder: String,
    /// Wall-clock Unix milliseconds (the Redis server's clock on Redis).
    pub expires_at_ms: u64,
}

impl LeaseRecord {
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {} {}", self.token, self.holder, self.expires_at_ms).into_bytes()
    }

    /// Parse the record stored under `key`.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt {
            key: key.to_owned(),
            reason: "not a lease record (`token holder expires_at_ms`)".into(),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt())?;
        let mut parts = text.split(' ');
        let (Some(token), Some(holder), Some(expires), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt());
        };
        Ok(Self {
            token: token.parse().map_err(|_| corrupt())?,
            holder: holder.to_owned(),
            expires_at_ms: expires.parse().map_err(|_| corrupt())?,
        })
    }

    /// Whether a new holder may take it without naming the current one: released or expired.
    pub fn is_free(&self, now_ms: u64) -> bool {
        self.holder.is_empty() || self.expires_at_ms <= now_ms
    }

    /// Whether `lease` is still the current grant of this record (expired or not: nobody took it).
    pub fn holds(&self, lease: &Lease) -> bool {
        !self.holder.is_empty() && self.holder == lease.holder && self.token == lease.token
    }
}

/// The bytes a stored record starts with exactly when `lease` is its current grant.
pub fn fence_prefix(lease: &Lease) -> Vec<u8> {
    format!("{} {} ", lease.token, lease.holder).into_bytes()
}

/// Holders are ids: no spaces (the record layout relies on it), nothing empty.
pub fn check_holder(holder: &str) -> Result<(), StoreError> {
    if is_valid_id(holder) {
        Ok(())
    } else {
        Err(StoreError::Forbidden(format!(
            "lease holder `{holder}` is not an id ([A-Za-z0-9_.-], 1 to 128 characters)"
        )))
    }
}

/// The acquire rule, for backends that decide in their own code (SQLite, in-memory; the Redis
/// script follows the same rule): the lease is granted when no record exists, when it is free
/// ([`LeaseRecord::is_free`]), or when it is still exactly the grant `over` names (the caller
/// established that holder is gone). A grant takes the next token. Returns the record to
/// write, or the current holder's lease.
pub fn decide_acquire(
    key: &str,
    current: Option<LeaseRecord>,
    holder: &str,
    ttl: Duration,
    over: Option<&Lease>,
    now_ms: u64,
) -> Result<LeaseRecord, Lease> {
    let token = match current {
        None => 0,
        Some(cur) if cur.is_free(now_ms) || over.is_some_and(|o| cur.holds(o)) => cur.token,
        Some(cur) => return Err(Lease { key: key.to_owned(), holder: cur.holder, token: cur.token }),
    };
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    Ok(LeaseRecord { token: token + 1, holder: holder.to_owned(), expires_at_ms: now_ms.saturating_add(ttl_ms) })
}

/// The record after `lease` is renewed for `ttl`, if it still holds it.
pub fn decide_renew(
    current: Option<LeaseRecord>,
    lease: &Lease,
    ttl: Duration,
    now_ms: u64,
) -> Result<LeaseRecord, StoreError> {
    match current {
        Some(cur) if cur.holds(lease) => {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            Ok(LeaseRecord { expires_at_ms: now_ms.saturating_add(ttl_ms), ..cur })
        }
        _ => Err(fenced(lease)),
    }
}

/// The error for a lease that is no longer current.
pub fn fenced(lease: &Lease) -> StoreError {
    StoreError::Fenced { key: lease.key.clone(), token: lease.token }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, token: u64) -> Lease {
        Lease { key: "run/1/lease".into(), holder: holder.into(), token }
    }

    #[test]
    fn records_round_trip_and_reject_other_text() {
        let r = LeaseRecord { token: 7, holder: "01JPROC".into(), expires_at_ms: 1_700_000_000_000 };
        assert_eq!(LeaseRecord::decode("k", &r.encode()).unwrap(), r);
        let released = LeaseRecord { holder: String::new(), ..r.clone() };
        assert_eq!(LeaseRecord::decode("k", &released.encode()).unwrap(), released);
        for bad in ["host 42 instance", "7 a b 9", "x y 1", ""] {
            assert!(matches!(LeaseRecord::decode("k", bad.as_bytes()), Err(StoreError::Corrupt { .. })), "{bad:?}");
        }
        assert!(r.encode().starts_with(&fence_prefix(&lease("01JPROC", 7))));
        assert!(!r.encode().starts_with(&fence_prefix(&lease("01JPROC", 70))));
        assert!(!r.encode().starts_with(&fence_prefix(&lease("01JPRO", 7))));
    }

    #[test]
    fn tokens_only_grow_and_only_a_free_or_named_lease_is_taken() {
        let ttl = Duration::from_secs(10);
        let first = decide_acquire("run/1/lease", None, "a", ttl, None, 1_000).unwrap();
        assert_eq!((first.token, first.expires_at_ms), (1, 11_000));
        // Held and live: refused, unless the caller names exactly the current grant.
        assert_eq!(decide_acquire("run/1/lease", Some(first.clone()), "b", ttl, None, 2_000), Err(lease("a", 1)));
        assert_eq!(
            decide_acquire("run/1/lease", Some(first.clone()), "b", ttl, Some(&lease("a", 0)), 2_000),
            Err(lease("a", 1))
        );
        assert_eq!(
            decide_acquire("run/1/lease", Some(first.clone()), "b", ttl, Some(&lease("a", 1)), 2_000).unwrap().token,
            2
        );
        // Expired or released: free, and the token still grows.
        assert_eq!(decide_acquire("run/1/lease", Some(first.clone()), "b", ttl, None, 11_000).unwrap().token, 2);
        let released = LeaseRecord { holder: String::new(), ..first.clone() };
        assert_eq!(decide_acquire("run/1/lease", Some(released), "b", ttl, None, 2_000).unwrap().token, 2);
    }

    #[test]
    fn only_the_current_grant_renews_even_after_expiry() {
        let ttl = Duration::from_secs(10);
        let cur = LeaseRecord { token: 3, holder: "a".into(), expires_at_ms: 5 };
        assert_eq!(decide_renew(Some(cur.clone()), &lease("a", 3), ttl, 100).unwrap().expires_at_ms, 10_100);
        assert!(matches!(
            decide_renew(Some(cur.clone()), &lease("a", 2), ttl, 100),
            Err(StoreError::Fenced { token: 2, .. })
        ));
        assert!(matches!(decide_renew(Some(cur), &lease("b", 3), ttl, 100), Err(StoreError::Fenced { .. })));
        assert!(matches!(decide_renew(None, &lease("a", 3), ttl, 100), Err(StoreError::Fenced { .. })));
    }
}
