//! Tests of the supervisor's starts: a recovery that is slow to start (its store reads held
//! back by a gate) never holds up a new run, a decision, or a message routed to the recovering
//! run itself.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ractor::Actor;
use tokio::sync::watch;
use tollgate_engine::crypto::MasterKey;
use tollgate_engine::ids::RunId;
use tollgate_engine::queue::{QueueError, StepJob, StepQueue};
use tollgate_engine::run::{Decision, StepStatus};
use tollgate_engine::spec::parse_yaml;
use tollgate_engine::store::memory::MemoryBackend;
use tollgate_engine::store::{Backend, Lease, LeaseGrant, RunMeta, Store, StoreError};

use crate::liveness::Liveness;
use crate::service::Tollgate;
use crate::supervisor::{RECOVERY_CONCURRENCY, RunSupervisor};
use crate::system::{Engine, Handlers, now_ms};

/// Far beyond anything these tests wait for; only a broken supervisor gets near it.
const DEADLINE: Duration = Duration::from_secs(30);

const WAITS_FOR_APPROVAL: &str = "id: waits\nowner: ops\nsteps:\n  - { id: ok, type: approval, question: go? }\n";

/// A store whose calls on the keys of "held" runs wait until the gate opens.
struct Gated {
    inner: MemoryBackend,
    held: Mutex<HashSet<String>>,
    open: watch::Sender<bool>,
    /// Calls waiting at the gate right now.
    waiting: watch::Sender<usize>,
}

impl Gated {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryBackend::new(),
            held: Mutex::default(),
            open: watch::channel(false).0,
            waiting: watch::channel(0).0,
        })
    }

    async fn pass(&self, key: &str) {
        let held = self.held.lock().unwrap().iter().any(|run| key.contains(run.as_str()));
        if !held || *self.open.borrow() {
            return;
        }
        self.waiting.send_modify(|n| *n += 1);
        let _ = self.open.subscribe().wait_for(|open| *open).await;
        self.waiting.send_modify(|n| *n -= 1);
    }
}

#[async_trait]
impl Backend for Gated {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.pass(key).await;
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        for key in keys {
            self.pass(key).await;
        }
        self.inner.get_many(keys).await
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        self.pass(key).await;
        self.inner.put(key, value, ttl).await
    }
    async fn put_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (key, _) in items {
            self.pass(key).await;
        }
        self.inner.put_many(items).await
    }
    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, StoreError> {
        self.pass(key).await;
        self.inner.put_if_absent(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.pass(key).await;
        self.inner.delete(key).await
    }
    async fn append(&self, log: &str, expected_len: u64, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        self.pass(log).await;
        self.inner.append(log, expected_len, entries).await
    }
    async fn append_with(
        &self,
        log: &str,
        expected_len: u64,
        entries: &[Vec<u8>],
        puts: &[(String, Vec<u8>)],
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        self.pass(log).await;
        self.inner.append_with(log, expected_len, entries, puts, fence).await
    }
    async fn lease_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        over: Option<&Lease>,
    ) -> Result<LeaseGrant, StoreError> {
        self.pass(key).await;
        self.inner.lease_acquire(key, holder, ttl, over).await
    }
    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        self.inner.lease_renew(lease, ttl).await
    }
    async fn lease_release(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.inner.lease_release(lease).await
    }
    async fn log_len(&self, log: &str) -> Result<u64, StoreError> {
        self.pass(log).await;
        self.inner.log_len(log).await
    }
    async fn read_log(&self, log: &str, from: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.pass(log).await;
        self.inner.read_log(log, from).await
    }
    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        self.inner.index_add(index, member).await
    }
    async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        self.inner.index_remove(index, member).await
    }
    async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.inner.index_members(index).await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
}

/// The runs in these tests have no step that runs as a job.
struct NoJobs;

#[async_trait]
impl StepQueue for NoJobs {
    async fn enqueue(&self, job: StepJob, _: Option<std::time::SystemTime>) -> Result<(), QueueError> {
        panic!("no job expected, got {job:?}")
    }
}

async fn system(backend: Arc<Gated>) -> Tollgate {
    let liveness = Liveness::detached(backend.clone());
    let store = Arc::new(Store::new(backend, MasterKey::generate()));
    let engine = Arc::new(Engine::new(
        store,
        Arc::new(NoJobs),
        Handlers::new(),
        100,
        Duration::from_millis(100),
        liveness,
        Duration::from_secs(15),
    ));
    let (supervisor, _) = Actor::spawn(None, RunSupervisor, engine.clone()).await.expect("supervisor starts");
    Tollgate::new(engine, supervisor)
}

/// A run recorded in the store but never started, as a crash leaves it.
async fn unstarted_run(t: &Tollgate) -> RunId {
    let spec = parse_yaml(WAITS_FOR_APPROVAL).expect("valid spec");
    let digest = t.engine.store.register_workflow(spec.spec()).await.expect("register");
    let run = RunId::generate();
    let meta = RunMeta {
        run: run.clone(),
        workflow: spec.spec().id.clone(),
        version: spec.spec().version,
        spec_digest: digest,
        owner: spec.spec().owner.clone(),
        params: Default::default(),
        created_at: now_ms(),
        started_by: None,
        trigger: None,
        parent: None,
    };
    t.engine.store.create_run(&meta).await.expect("create run");
    run
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    tokio::time::timeout(DEADLINE, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_runs_and_messages_do_not_wait_for_recoveries() {
    let store = Gated::new();
    let t = system(store.clone()).await;
    let recovering: Vec<RunId> = {
        let mut runs = Vec::new();
        for _ in 0..RECOVERY_CONCURRENCY * 3 {
            runs.push(unstarted_run(&t).await);
        }
        runs
    };
    store.held.lock().unwrap().extend(recovering.iter().map(|r| r.to_string()));

    assert_eq!(t.recover_all().await.expect("recover"), recovering.len());
    // Every recovery slot is taken by a start stuck on its store reads.
    let mut waiting = store.waiting.subscribe();
    tokio::time::timeout(DEADLINE, waiting.wait_for(|n| *n >= RECOVERY_CONCURRENCY))
        .await
        .expect("recoveries start")
        .expect("gate");
    // A cancellation of a run whose actor is still starting (its record written past the
    // gate, the start itself still held back) is applied once the actor runs.
    let cancelled = recovering[0].clone();
    store.held.lock().unwrap().remove(cancelled.as_str());
    t.cancel(&cancelled, "test", "cancelled while starting").await.expect("cancel recorded and routed");

    // Meanwhile a new run starts, asks for its approval, gets it and finishes.
    let spec = parse_yaml(WAITS_FOR_APPROVAL).expect("valid spec");
    let run = tokio::time::timeout(DEADLINE, t.start_run(&spec, &Default::default()))
        .await
        .expect("start is not held up")
        .expect("run starts");
    let view = tokio::time::timeout(DEADLINE, t.wait_settled(&run, Duration::from_millis(50)))
        .await
        .expect("settles")
        .expect("view");
    let StepStatus::WaitingHuman { request } = view.state.steps[0].status.clone() else {
        panic!("waits for approval: {:?}", view.state.steps[0].status)
    };
    t.decide(&request, Decision::Approve, "test", None).await.expect("decision recorded");
    let view = tokio::time::timeout(DEADLINE, t.wait_settled(&run, Duration::from_millis(50)))
        .await
        .expect("settles")
        .expect("view");
    assert_eq!(view.state.status.label(), "succeeded");
    assert!(*store.waiting.borrow() >= RECOVERY_CONCURRENCY, "the recoveries were still held back meanwhile");

    // Once the store answers, every recovery completes: each run asks for its approval and
    // passivates, and the message routed during startup was delivered.
    store.open.send_replace(true);
    eventually("the cancellation to be applied", || async {
        t.view(&cancelled).await.is_ok_and(|v| v.state.status.label() == "cancelled")
    })
    .await;
    for r in &recovering[1..] {
        let view = tokio::time::timeout(DEADLINE, t.wait_settled(r, Duration::from_millis(50)))
            .await
            .expect("recovered")
            .expect("view");
        assert!(
            matches!(view.state.steps[0].status, StepStatus::WaitingHuman { .. }),
            "{r}: {:?}",
            view.state.steps[0].status
        );
    }
    eventually("every recovered run to passivate", || async { t.live_runs().await.expect("live count") == 0 }).await;
}
