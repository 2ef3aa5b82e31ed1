//! Run leases: at most one process drives a run at a time.
//!
//! A lease is a store key with a TTL, renewed by the run actor's reconcile tick. Its value
//! names the holder (`host pid instance`), so a process on the same host can take over at
//! once from a holder that has died (kill -9) instead of waiting for the TTL; across hosts
//! the TTL decides.

use std::time::Duration;

use tollgate_engine::ids::RunId;
use tollgate_engine::store::{Backend, StoreError};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

fn key(run: &RunId) -> String {
    format!("run/{run}/lease")
}

/// This process's lease holder value.
pub fn holder(instance: &str) -> String {
    format!("{} {} {instance}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown-host".into())
}

/// Whether the holder is a process of this host that no longer exists.
fn holder_is_dead(value: &str) -> bool {
    let mut parts = value.split(' ');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    host == hostname() && pid.parse::<u32>().is_ok_and(|p| p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists())
}

/// Take the lease on `run` for `me`. Returns the current holder if someone else holds it.
pub async fn acquire(backend: &dyn Backend, run: &RunId, me: &str) -> Result<Result<(), String>, StoreError> {
    let k = key(run);
    if backend.put_if_absent(&k, me.as_bytes(), Some(LEASE_TTL)).await? {
        return Ok(Ok(()));
    }
    let current = String::from_utf8_lossy(&backend.get(&k).await?.unwrap_or_default()).into_owned();
    if current == me || current.is_empty() || holder_is_dead(&current) {
        backend.put(&k, me.as_bytes(), Some(LEASE_TTL)).await?;
        return Ok(Ok(()));
    }
    Ok(Err(current))
}

pub async fn renew(backend: &dyn Backend, run: &RunId, me: &str) -> Result<(), StoreError> {
    backend.put(&key(run), me.as_bytes(), Some(LEASE_TTL)).await
}

pub async fn release(backend: &dyn Backend, run: &RunId, me: &str) -> Result<(), StoreError> {
    let k = key(run);
    if backend.get(&k).await?.as_deref() == Some(me.as_bytes()) {
        backend.delete(&k).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dead_holder_on_this_host_can_be_taken_over() {
        assert!(!holder_is_dead(&holder("me")), "ourselves");
        assert!(holder_is_dead(&format!("{} 4194304999 x", hostname())), "a pid that cannot exist");
        assert!(!holder_is_dead("another-host 4194304999 x"), "other hosts wait for the TTL");
        assert!(!holder_is_dead("garbage"));
    }
}
