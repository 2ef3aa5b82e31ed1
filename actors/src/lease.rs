//! Run leases: at most one process drives a run at a time, and a process that lost its lease
//! cannot write to the run's journal.
//!
//! The lease `run/{run}/lease` is held by a process's liveness id with a fencing token
//! (`tollgate_engine::store::lease`): acquire, renew and release are atomic compare-and-set
//! operations in the store, every journal append carries the lease and is refused once
//! another process holds it, and tokens only grow, so a holder that stalled past its TTL
//! (a paused process, a long GC-like hiccup, a partition) can neither renew nor write after a
//! successor took over. The run actor renews on its reconcile tick.
//!
//! Acquire succeeds when the lease is free or expired, or when its holder is not alive
//! ([`Liveness::is_alive`]): a successor on the same host takes over at once from a
//! kill -9'd holder; elsewhere the holder's heartbeat TTL decides.

use std::time::Duration;

use tollgate_engine::ids::RunId;
use tollgate_engine::store::{Backend, Lease, LeaseGrant, StoreError, keys};

use crate::liveness::Liveness;

/// Take the lease on `run` for this process for `ttl`. `Err` names the live holder's lease.
///
/// A lease this process already holds (an earlier actor of the run that failed before it
/// released) is taken over with a new token: the supervisor runs one actor per run.
pub async fn acquire(
    backend: &dyn Backend,
    liveness: &Liveness,
    run: &RunId,
    ttl: Duration,
) -> Result<Result<Lease, Lease>, StoreError> {
    let key = keys::run_lease(run);
    let me = liveness.id();
    let current = match backend.lease_acquire(&key, me, ttl, None).await? {
        LeaseGrant::Granted(lease) => return Ok(Ok(lease)),
        LeaseGrant::Held(current) => current,
    };
    if current.holder != me && liveness.is_alive(&current.holder).await? {
        return Ok(Err(current));
    }
    // Only if it still holds exactly that grant: another process may have been quicker.
    Ok(match backend.lease_acquire(&key, me, ttl, Some(&current)).await? {
        LeaseGrant::Granted(lease) => Ok(lease),
        LeaseGrant::Held(current) => Err(current),
    })
}

/// Extend the lease to `ttl` from now; [`StoreError::Fenced`] if another process took it.
pub async fn renew(backend: &dyn Backend, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
    backend.lease_renew(lease, ttl).await
}

/// Give the lease up, if it is still ours.
pub async fn release(backend: &dyn Backend, lease: &Lease) -> Result<(), StoreError> {
    backend.lease_release(lease).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;
    use tollgate_engine::store::memory::MemoryBackend;

    use super::*;

    #[tokio::test]
    async fn a_live_holder_keeps_the_lease_a_dead_one_loses_it_and_the_loser_is_fenced() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let shutdown = CancellationToken::new();
        let ttl = Duration::from_secs(60);
        let a = Liveness::start(backend.clone(), ttl, shutdown.clone()).await.unwrap();
        let b = Liveness::start(backend.clone(), ttl, shutdown.clone()).await.unwrap();
        let run = RunId::generate();

        let first = acquire(backend.as_ref(), &a, &run, ttl).await.unwrap().expect("free lease");
        assert_eq!(first.holder, a.id());
        // b sees a alive (its heartbeat is there and this test process runs): refused.
        let held = acquire(backend.as_ref(), &b, &run, ttl).await.unwrap().expect_err("held by a live process");
        assert_eq!(held, first);
        // a again (a failed actor's successor in the same process): a new token.
        let again = acquire(backend.as_ref(), &a, &run, ttl).await.unwrap().expect("own lease");
        assert!(again.token > first.token);
        assert!(
            matches!(renew(backend.as_ref(), &first, ttl).await, Err(StoreError::Fenced { .. })),
            "the older grant is stale"
        );

        // a's heartbeat disappears (its process is gone): b takes over at once, a is fenced.
        backend.delete(&keys::process(a.id())).await.unwrap();
        let taken = acquire(backend.as_ref(), &b, &run, ttl).await.unwrap().expect("dead holder");
        assert!(taken.token > again.token);
        assert!(matches!(renew(backend.as_ref(), &again, ttl).await, Err(StoreError::Fenced { .. })));
        release(backend.as_ref(), &again).await.unwrap();
        renew(backend.as_ref(), &taken, ttl).await.expect("releasing a stale grant leaves the successor's alone");
        // b releases; the next grant's token is larger still.
        release(backend.as_ref(), &taken).await.unwrap();
        let next = acquire(backend.as_ref(), &a, &run, ttl).await.unwrap().expect("released lease");
        assert!(next.token > taken.token);
        shutdown.cancel();
    }
}
