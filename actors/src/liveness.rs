//! Process liveness: a random id per process start and a heartbeat record, so other processes
//! can tell whether the holder of a lease is still there.
//!
//! The record `proc/{id}` says where the process runs — the kernel's boot id, the PID
//! namespace (the inode of `/proc/self/ns/pid`), its pid and its start time — and expires
//! `ttl` after the last renewal. A process whose record has expired is dead to everyone. A
//! process recorded on this kernel and in this PID namespace whose pid is gone (or is a
//! zombie, or now belongs to a process that started at another time) is dead at once: a
//! kill -9'd engine on this machine is replaced without waiting for the TTL. Anywhere else —
//! another host, another container with its own PID namespace — only the TTL decides, so a
//! pid that merely looks unused from here is never taken for a dead process.
//!
//! The record is plain JSON: it holds ids and numbers that say nothing about any workflow,
//! and it is read below the sealing `Store`, on the `Backend` port (as run leases are).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tollgate_engine::store::{Backend, StoreError, keys};

/// Where a process runs, as its heartbeat records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Heartbeat {
    /// `/proc/sys/kernel/random/boot_id`: one kernel, one boot. Empty where there is no /proc.
    boot_id: String,
    /// The link text of `/proc/self/ns/pid` (`pid:[inode]`): one PID namespace.
    pid_ns: String,
    pid: u32,
    /// Field 22 of `/proc/{pid}/stat`: clock ticks after boot, which tells a reused pid apart.
    start_time: u64,
}

impl Heartbeat {
    fn of_this_process() -> Self {
        let pid = std::process::id();
        Self {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid,
            start_time: proc_stat(pid).map_or(0, |s| s.start_time),
        }
    }

    /// Whether `other` runs where this process can see its pid: same kernel boot, same PID
    /// namespace (and both known).
    fn shares_pids_with(&self, other: &Heartbeat) -> bool {
        !self.boot_id.is_empty()
            && !self.pid_ns.is_empty()
            && self.boot_id == other.boot_id
            && self.pid_ns == other.pid_ns
    }
}

/// The parts of `/proc/{pid}/stat` liveness needs.
struct ProcStat {
    state: char,
    start_time: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split after the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4 to 21 lie between the state (3) and the start time (22).
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// This process's identity and heartbeat, and the judge of other processes' liveness.
pub struct Liveness {
    backend: Arc<dyn Backend>,
    id: String,
    me: Heartbeat,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Liveness {
    /// Writes this process's heartbeat record and keeps renewing it (a task tracked with the
    /// shutdown token) until shutdown; the record expires `ttl` after the last renewal.
    pub async fn start(
        backend: Arc<dyn Backend>,
        ttl: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let this = Arc::new(Self { backend, id: ulid::Ulid::generate().to_string(), me: Heartbeat::of_this_process() });
        let key = keys::process(&this.id);
        let record = serde_json::to_vec(&this.me).expect("a heartbeat serialises");
        this.backend.put(&key, &record, Some(ttl)).await?;
        let backend = this.backend.clone();
        tokio::spawn(async move {
            // Three renewals per TTL: one lost write or a slow store does not expire us.
            let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(1)));
            // After a stall (a paused process), renew once rather than in a burst.
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = backend.put(&key, &record, Some(ttl)).await {
                            tracing::warn!(error = %e, "could not renew this process's heartbeat; retrying on the next tick");
                        }
                    }
                }
            }
            // The record stays until it expires or `retire` removes it: run actors still
            // stopping keep their leases until they release them.
        });
        Ok(this)
    }

    /// An identity that writes no heartbeat, for commands that take no lease (read-only ones):
    /// other processes judge it dead.
    pub fn detached(backend: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Self { backend, id: ulid::Ulid::generate().to_string(), me: Heartbeat::of_this_process() })
    }

    /// Remove this process's heartbeat once it drives nothing any more (at the end of an
    /// orderly shutdown, after its run actors released their leases), so no record is left
    /// behind to expire. Call it after the shutdown token fired, or renewals write it again.
    pub async fn retire(&self) -> Result<(), StoreError> {
        self.backend.delete(&keys::process(&self.id)).await
    }

    /// This process's id: a random id (ULID) per process start.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether process `id` is alive: itself → true; its heartbeat record absent/expired →
    /// false; recorded on this kernel AND in this PID namespace and its pid is gone, a zombie,
    /// or now a process with another start time → false at once; otherwise true.
    pub async fn is_alive(&self, id: &str) -> Result<bool, StoreError> {
        if id == self.id {
            return Ok(true);
        }
        let key = keys::process(id);
        let Some(bytes) = self.backend.get(&key).await? else { return Ok(false) };
        let theirs: Heartbeat =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt { key, reason: e.to_string() })?;
        Ok(!self.me.shares_pids_with(&theirs) || same_process_runs(&theirs))
    }
}

/// Whether the process a heartbeat of this host and PID namespace names is still running.
fn same_process_runs(h: &Heartbeat) -> bool {
    match proc_stat(h.pid) {
        None => false,
        // Killed but not yet reaped (Z), or being torn down (X): gone for our purposes.
        Some(s) => !matches!(s.state, 'Z' | 'X') && s.start_time == h.start_time,
    }
}

#[cfg(test)]
mod tests {
    use tollgate_engine::store::memory::MemoryBackend;

    use super::*;

    #[test]
    fn this_process_reads_as_running_and_a_reused_pid_does_not() {
        let me = Heartbeat::of_this_process();
        assert!(me.start_time > 0, "no start time read from /proc: {me:?}");
        assert!(!me.boot_id.is_empty() && me.pid_ns.starts_with("pid:["), "{me:?}");
        assert!(same_process_runs(&me));
        assert!(
            !same_process_runs(&Heartbeat { start_time: me.start_time + 1, ..me.clone() }),
            "same pid, other start time"
        );
        assert!(!same_process_runs(&Heartbeat { pid: u32::MAX, ..me }), "a pid that cannot exist");
    }

    #[tokio::test]
    async fn liveness_follows_the_record_and_this_hosts_pids() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let shutdown = CancellationToken::new();
        let live = Liveness::start(backend.clone(), Duration::from_secs(60), shutdown.clone()).await.unwrap();
        assert!(live.is_alive(live.id()).await.unwrap(), "itself");
        assert!(!live.is_alive("01NOSUCHPROCESS").await.unwrap(), "no record: dead");

        let me = Heartbeat::of_this_process();
        let put = |id: &str, h: Heartbeat| {
            let backend = backend.clone();
            let key = keys::process(id);
            async move { backend.put(&key, &serde_json::to_vec(&h).unwrap(), Some(Duration::from_secs(60))).await.unwrap() }
        };
        // Another process of this host that is running (this test process under another id).
        put("running", me.clone()).await;
        assert!(live.is_alive("running").await.unwrap());
        // Same host and namespace, pid gone (kill -9): dead at once, whatever the record says.
        put("killed", Heartbeat { pid: u32::MAX, ..me.clone() }).await;
        assert!(!live.is_alive("killed").await.unwrap());
        // Another PID namespace (a container) or another kernel: the pid means nothing here.
        put("container", Heartbeat { pid: u32::MAX, pid_ns: "pid:[1]".into(), ..me.clone() }).await;
        assert!(live.is_alive("container").await.unwrap());
        put("elsewhere", Heartbeat { pid: u32::MAX, boot_id: "another-boot".into(), ..me.clone() }).await;
        assert!(live.is_alive("elsewhere").await.unwrap());
        // The record is written under the process id; retired, it is gone and so are we.
        assert!(backend.get(&keys::process(live.id())).await.unwrap().is_some());
        shutdown.cancel();
        live.retire().await.unwrap();
        assert!(
            !Liveness::detached(backend.clone()).is_alive(live.id()).await.unwrap(),
            "a retired process is dead to others"
        );
    }

    #[tokio::test]
    async fn a_heartbeat_outlives_its_ttl_while_renewed_and_expires_after_shutdown() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let shutdown = CancellationToken::new();
        // Renewals come every ttl/3: the check below tolerates a renewal late by 2/3 of it.
        let ttl = Duration::from_secs(2);
        let live = Liveness::start(backend.clone(), ttl, shutdown.clone()).await.unwrap();
        let judge = Liveness::detached(backend.clone());
        // A sentinel written with the same TTL after the heartbeat: once it has expired, the
        // first heartbeat write has too, so a live record must come from a renewal.
        backend.put("sentinel", b"", Some(ttl)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while backend.get("sentinel").await.unwrap().is_some() {
            assert!(tokio::time::Instant::now() < deadline, "the sentinel never expired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(judge.is_alive(live.id()).await.unwrap(), "renewed heartbeat");
        shutdown.cancel();
        // No renewal any more: the record expires. (Our pid is alive, so only the TTL can say so;
        // the detached judge shares our kernel and namespace, and our pid runs.)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while judge.is_alive(live.id()).await.unwrap() {
            assert!(tokio::time::Instant::now() < deadline, "the heartbeat did not expire after shutdown");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
