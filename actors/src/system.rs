//! The engine's shared context: store, queue, step handlers, this process's liveness, spec
//! cache and the update bus that progress displays, the console and tests subscribe to.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;
use tollgate_engine::events::EventBus;
use tollgate_engine::ids::{RequestId, RunId, StepId, WorkflowId};
use tollgate_engine::llm::ModelCatalog;
use tollgate_engine::queue::StepQueue;
use tollgate_engine::run::{HumanRequestSpec, RunStatus};
use tollgate_engine::spec::{StepType, ValidatedSpec, validate};
use tollgate_engine::step::StepHandler;
use tollgate_engine::store::{Store, StoreError};

use crate::liveness::Liveness;

/// Milliseconds since the Unix epoch: the time base of journal events.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Something that happened to a run, for live displays. Never carries step outputs.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunUpdate {
    Step {
        run: RunId,
        step: StepId,
        status: &'static str,
        attempt: u32,
    },
    HumanRequested {
        run: RunId,
        request: HumanRequestSpec,
    },
    /// Escalation paged `to` (a user or group) about an open request.
    HumanPaged {
        run: RunId,
        request: RequestId,
        to: String,
    },
    /// A request was decided (by a person, or by an escalation's default).
    Decided {
        run: RunId,
        request: RequestId,
        by: String,
        by_policy: bool,
    },
    Finished {
        run: RunId,
        status: RunStatus,
    },
    /// A `notify` step recorded notification `notification` for these users.
    Notified {
        run: RunId,
        notification: String,
        recipients: Vec<String>,
    },
}

impl RunUpdate {
    pub fn run(&self) -> &RunId {
        match self {
            RunUpdate::Step { run, .. }
            | RunUpdate::HumanRequested { run, .. }
            | RunUpdate::HumanPaged { run, .. }
            | RunUpdate::Decided { run, .. }
            | RunUpdate::Finished { run, .. }
            | RunUpdate::Notified { run, .. } => run,
        }
    }
}

/// `for_each_max_items` unless configured.
pub const DEFAULT_FOR_EACH_MAX_ITEMS: u32 = 1000;

/// Handlers by step type, for the types that run as queue jobs.
pub type Handlers = HashMap<StepType, Arc<dyn StepHandler>>;

pub struct Engine {
    pub store: Arc<Store>,
    pub queue: Arc<dyn StepQueue>,
    pub handlers: Handlers,
    pub updates: broadcast::Sender<RunUpdate>,
    /// This process's identity and heartbeat (lease holders, and whether one is alive).
    pub liveness: Arc<Liveness>,
    /// This process's identity (leases, worker names): `liveness.id()`.
    pub instance: String,
    /// What `/healthz` reports (the step workers, once started).
    pub health: crate::health::Health,
    pub max_in_flight_per_run: usize,
    /// The longest list a `for_each` step may fan out over (journaled with each fan-out).
    pub for_each_max_items: u32,
    /// How long the blobs of mail attachments (the IMAP trigger's) are kept.
    pub attachment_ttl: std::time::Duration,
    pub reconcile_interval: std::time::Duration,
    /// How long a run's lease lasts without renewal (renewed on every reconcile tick).
    pub lease_ttl: std::time::Duration,
    /// The internal event bus (`event` steps' waits, `POST /api/events`), when the process has one.
    pub events: Option<Arc<dyn EventBus>>,
    /// This process's triggers: health, and the endpoints of webhook and upload triggers.
    pub triggers: crate::triggers::TriggerBoard,
    specs: RwLock<HashMap<(WorkflowId, String), Arc<ValidatedSpec>>>,
    /// Model providers and prices: what a run's `llm` steps are quoted at its start.
    pub models: Arc<ModelCatalog>,
    /// The workflows `workflow.run` steps may name.
    pub workflows: Arc<crate::subworkflows::KnownWorkflows>,
    /// The workflows known by id (shipped templates, configured specs): what `run NAME`,
    /// the templates API and the `platform` step's `workflow.run` resolve.
    pub catalogue: Arc<crate::catalogue::Catalogue>,
    /// The runs this process's supervisor has an actor for (kept by the supervisor).
    pub live_runs: crate::supervisor::LiveRuns,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored spec {0} ({1}) no longer validates: {2}")]
    BadStoredSpec(WorkflowId, String, String),
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        queue: Arc<dyn StepQueue>,
        handlers: Handlers,
        max_in_flight_per_run: usize,
        reconcile_interval: std::time::Duration,
        liveness: Arc<Liveness>,
        lease_ttl: std::time::Duration,
    ) -> Self {
        Self {
            workflows: Default::default(),
            store,
            queue,
            handlers,
            updates: broadcast::channel(4096).0,
            instance: liveness.id().to_owned(),
            liveness,
            health: crate::health::Health::default(),
            max_in_flight_per_run,
            for_each_max_items: DEFAULT_FOR_EACH_MAX_ITEMS,
            attachment_ttl: tollgate_engine::store::DEFAULT_ATTACHMENT_TTL,
            reconcile_interval,
            lease_ttl,
            events: None,
            triggers: Default::default(),
            specs: RwLock::new(HashMap::new()),
            models: Arc::new(ModelCatalog::default()),
            catalogue: Arc::new(crate::catalogue::Catalogue::default()),
            live_runs: Default::default(),
        }
    }

    /// The longest list a `for_each` step may fan out over (`for_each_max_items`).
    pub fn with_for_each_max_items(mut self, max: u32) -> Self {
        self.for_each_max_items = max;
        self
    }

    /// How long the blobs of mail attachments are kept (`attachment_ttl`).
    pub fn with_attachment_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.attachment_ttl = ttl;
        self
    }

    /// The workflow catalogue (`[catalogue]`).
    pub fn with_catalogue(mut self, catalogue: Arc<crate::catalogue::Catalogue>) -> Self {
        self.catalogue = catalogue;
        self
    }

    /// The configured model providers and prices (`llm` steps' quotes).
    pub fn with_models(mut self, models: Arc<ModelCatalog>) -> Self {
        self.models = models;
        self
    }

    /// With the internal event bus.
    pub fn with_events(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.events = Some(bus);
        self
    }

    /// A stored spec (by content digest), validated once and cached.
    pub async fn spec(&self, wf: &WorkflowId, digest: &str) -> Result<Arc<ValidatedSpec>, EngineError> {
        let key = (wf.clone(), digest.to_string());
        if let Some(s) = self.specs.read().expect("spec cache lock").get(&key) {
            return Ok(s.clone());
        }
        let raw = self.store.load_spec(wf, digest).await?;
        let spec = Arc::new(
            validate(raw).map_err(|e| EngineError::BadStoredSpec(wf.clone(), digest.to_string(), e.to_string()))?,
        );
        self.specs.write().expect("spec cache lock").insert(key, spec.clone());
        Ok(spec)
    }

    /// Whether the spec `(wf, digest)` was loaded from the store by this process (so it is
    /// registered there, with its workflow's key).
    pub fn has_spec(&self, wf: &WorkflowId, digest: &str) -> bool {
        self.specs.read().expect("spec cache lock").contains_key(&(wf.clone(), digest.to_string()))
    }

    pub fn publish(&self, update: RunUpdate) {
        let _ = self.updates.send(update); // no subscriber is fine
    }
}
