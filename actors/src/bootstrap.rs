//! Assembling a running system from [`Config`]: master key, store, event bus, queue, handlers,
//! engine, supervisor, event dispatcher, workers, notifications — and taking it down again in order.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use ractor::Actor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_connectors::connections::Connections;
use tollgate_connectors::docs::DocStore;
use tollgate_connectors::steps::tools::ToolRunner;
use tollgate_connectors::steps::{
    ApiCallHandler, CodeHandler, ConnectorHandler, EventHandler, LlmHandler, ModelCalls, PlatformHandler,
    ResearchHandler,
};
use tollgate_connectors::store::{RedisBackend, SqliteBackend};
use tollgate_engine::crypto::MasterKey;
use tollgate_engine::llm::ModelCatalog;
use tollgate_engine::spec::StepType;
use tollgate_engine::step::StepHandler;
use tollgate_engine::store::{Backend, Store};

use crate::config::{BackendKind, Config};
use crate::liveness::Liveness;
use crate::notify::{self, LocalAndFleet, LocalNotifier, Notifier, ReconcileOnly, RedisNotifier};
use crate::queue;
use crate::service::Tollgate;
use crate::supervisor::RunSupervisor;
use crate::system::{Engine, Handlers};
use crate::worker::StepWorker;

/// What this process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Run actors and step workers in one process (CLI `run`, `decide`, `serve`).
    All,
    /// Step workers only (`tollgate worker`): no run actors.
    WorkerOnly,
}

pub struct Running {
    pub tollgate: Tollgate,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    workers: Option<queue::WorkerSet>,
}

impl Running {
    /// Drain in order: workers (finish in-flight steps) → run actors (stop) → tasks → heartbeat.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Some(w) = self.workers {
            w.shutdown().await;
        }
        // Run actors stop (not kill): each releases its lease; the journal already holds everything.
        let sup = &self.tollgate.supervisor;
        sup.stop_children_and_wait(Some("shutdown".into()), Some(std::time::Duration::from_secs(10))).await;
        let _ = sup.stop_and_wait(Some("shutdown".into()), Some(std::time::Duration::from_secs(5))).await;
        self.tasks.close();
        self.tasks.wait().await;
        // Nothing is driven here any more: the heartbeat can go now rather than expire.
        if let Err(e) = self.tollgate.engine.liveness.retire().await {
            tracing::debug!(error = %e, "could not remove this process's heartbeat; it expires on its own");
        }
    }

    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// The master key: from config, or (embedded only) from `data_dir/master.key`, created on first use.
pub fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if !config.master_key.is_empty() {
        return MasterKey::from_hex(&config.master_key).context("master_key");
    }
    if config.backend == BackendKind::Redis {
        bail!("the redis backend needs TOLLGATE_MASTER_KEY (the same for every process)");
    }
    let path = config.data_dir.join("master.key");
    if path.exists() {
        let hex = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return MasterKey::from_hex(&hex).with_context(|| format!("{} is not a valid master key", path.display()));
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let key = MasterKey::generate();
    write_private(&path, key.to_hex().as_bytes())?;
    eprintln!(
        "tollgate: created a new master key at {} (mode 0600); keep it safe — the data is unreadable without it",
        path.display()
    );
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

pub async fn open_backend(config: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match config.backend {
        BackendKind::Embedded => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            Arc::new(
                SqliteBackend::open(&config.data_dir.join("tollgate.db"))
                    .await
                    .context("opening the embedded store")?,
            )
        }
        BackendKind::Redis => Arc::new(
            RedisBackend::connect(&config.redis_url, &config.namespace)
                .await
                .with_context(|| format!("connecting to Redis at {}", config.redis_url))?,
        ),
    })
}

pub fn queue_config(config: &Config) -> queue::QueueConfig {
    queue::QueueConfig::from_app(config)
}

pub fn handlers(config: &Config, store: &Arc<Store>, models: &Arc<ModelCatalog>) -> anyhow::Result<Handlers> {
    let mut h = Handlers::new();
    let code: Arc<dyn StepHandler> = Arc::new(CodeHandler::new());
    let api_call: Arc<dyn StepHandler> = Arc::new(ApiCallHandler::new(config.egress.allowlist()?));
    // One set of provider adapters for `llm` steps and `research` summaries.
    let model_calls = Arc::new(
        ModelCalls::new(store.clone(), models.clone()).map_err(anyhow::Error::msg).context("model providers")?,
    );
    let research: Arc<dyn StepHandler> =
        Arc::new(ResearchHandler::new(Arc::new(DocStore::new(store.clone()))).with_models(model_calls.clone()));
    // An `llm` step's tools run with the same handlers as the steps of their types.
    let tools = ToolRunner { api_call: api_call.clone(), code: code.clone(), research: Some(research.clone()) };
    h.insert(StepType::Code, code);
    h.insert(StepType::ApiCall, api_call);
    h.insert(StepType::Llm, Arc::new(LlmHandler::new(model_calls, tools)) as _);
    h.insert(StepType::Research, research);
    let connections = connections(config, store)?;
    h.insert(StepType::Connector, Arc::new(ConnectorHandler::new(connections.clone())) as _);
    h.insert(StepType::Platform, Arc::new(PlatformHandler::new(store.clone()).with_connections(connections)) as _);
    Ok(h)
}

/// The runtime clients of owners' named connections (smtp, imap, http): what `connector`
/// steps and the `platform` step's `notify` send through. HTTP connections obey `[egress] allow`.
pub fn connections(config: &Config, store: &Arc<Store>) -> anyhow::Result<Arc<Connections>> {
    Ok(Arc::new(Connections::new(store.clone(), config.egress.allowlist()?).with_attachment_ttl(config.attachment_ttl)))
}

/// Start the system for `role`.
pub async fn start(config: &Config, role: Role) -> anyhow::Result<Running> {
    config.validate()?;
    let backend = open_backend(config).await?;
    start_on(config, role, backend).await
}

/// Start the system for `role` on a store backend opened by the caller (the one
/// [`open_backend`] opens for `config`, possibly wrapped: the store-outage tests fail its
/// writes for a while).
pub async fn start_on(config: &Config, role: Role, backend: Arc<dyn Backend>) -> anyhow::Result<Running> {
    config.validate()?;
    let master = master_key(config)?;
    let shutdown = CancellationToken::new();
    // If starting fails half-way, what was started stops (the heartbeat's renewals first).
    let started = shutdown.clone().drop_guard();
    let tasks = TaskTracker::new();
    // The heartbeat shares the lease's TTL: a process silent for that long is dead to others.
    let liveness = Liveness::start(backend.clone(), config.lease_ttl, shutdown.clone())
        .await
        .context("announcing this process's heartbeat")?;
    let bus = crate::events::open_bus(config, &master).await?;
    // The event dispatcher follows the bus from here: before any run actor can look on it.
    let bus_end = bus.end().await.context("reading where the event bus ends")?;
    let store = Arc::new(Store::new(backend, master));
    let qconf = queue_config(config);
    // The shared backend: jobs enqueued through it wake this process's workers at once.
    let step_queue = queue::open(&qconf).await.context("opening the step queue")?;
    let models = Arc::new(config.llm.catalog()?);
    let catalogue = Arc::new(crate::catalogue::Catalogue::load(&config.catalogue)?);
    let mut handlers = handlers(config, &store, &models)?;
    handlers.insert(StepType::Event, Arc::new(EventHandler::new(bus.clone(), store.clone())) as _);
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            step_queue,
            handlers,
            config.max_in_flight_per_run,
            config.reconcile_interval,
            liveness,
            config.lease_ttl,
        )
        .with_models(models)
        .with_catalogue(catalogue)
        .with_for_each_max_items(config.for_each_max_items)
        .with_attachment_ttl(config.attachment_ttl)
        .with_events(bus.clone()),
    );
    let (supervisor, _) =
        Actor::spawn(None, RunSupervisor, engine.clone()).await.context("starting the run supervisor")?;

    // How a worker here tells a run that an attempt has an outcome (see `notify`).
    let local = LocalNotifier(supervisor.clone());
    let notifier: Arc<dyn Notifier> = match (role, config.backend) {
        (Role::All, BackendKind::Embedded) => Arc::new(local),
        (Role::WorkerOnly, BackendKind::Embedded) => Arc::new(ReconcileOnly),
        (role, BackendKind::Redis) => {
            let fleet = RedisNotifier::connect(&config.redis_url, &config.namespace).await?;
            if role == Role::WorkerOnly {
                Arc::new(fleet)
            } else {
                let sub = notify::subscribe(&config.redis_url, &config.namespace, supervisor.clone(), shutdown.clone())
                    .await?;
                tasks.spawn(async move {
                    let _ = sub.await;
                });
                Arc::new(LocalAndFleet { local, fleet, driven_here: engine.live_runs.clone() })
            }
        }
    };
    if role == Role::All {
        tasks.spawn(crate::events::dispatch(engine.clone(), bus, supervisor.clone(), bus_end, shutdown.clone()));
    }
    let worker = Arc::new(StepWorker::new(engine.clone(), notifier, shutdown.clone()));
    let workers = queue::spawn_workers(&qconf, worker, shutdown.clone()).await.context("starting step workers")?;
    engine.health.watch_workers(workers.watch_health());
    let tollgate = Tollgate::new(engine, supervisor);
    if role == Role::All {
        crate::paging::start(&tollgate, &config.paging, config.egress.allowlist()?, shutdown.clone(), &tasks)
            .context("starting the pager")?;
    }
    started.disarm();
    Ok(Running { tollgate, shutdown, tasks, workers: Some(workers) })
}
