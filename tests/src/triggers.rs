//! Trigger test helpers: a system with the triggers of a spec running and its HTTP endpoints
//! (`/hooks`, `/api`) served on 127.0.0.1:0, and signing deliveries the way senders do.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate::triggers::{Triggers, start_triggers};
use tollgate_engine::ids::{TriggerId, WorkflowId};
use tollgate_engine::spec::parse_yaml;
use tollgate_engine::trigger::FireRecord;

use crate::harness::{TestSystem, wait_for};

/// A test system whose triggers run and whose router listens on a real port.
pub struct Hooked {
    pub sys: TestSystem,
    pub triggers: Option<Triggers>,
    pub addr: SocketAddr,
    pub workflow: WorkflowId,
    trigger_count: usize,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hooked {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Hooked {
    /// Start the triggers of `yaml` on `sys` and serve its router; wait until every trigger
    /// says it is connected.
    pub async fn start(sys: TestSystem, yaml: &str) -> Self {
        let me = Self::start_unconnected(sys, yaml).await;
        let (board, n) = (me.triggers.as_ref().expect("started").board.clone(), me.trigger_count);
        wait_for("every trigger is connected", Duration::from_secs(30), || {
            let list = board.list();
            async move { list.len() == n && list.iter().all(|t| t.health.connected) }
        })
        .await;
        me
    }

    /// Start the triggers of `yaml` on `sys` and serve its router, without waiting for the
    /// triggers to connect (for triggers that must fail to).
    pub async fn start_unconnected(sys: TestSystem, yaml: &str) -> Self {
        let spec = parse_yaml(yaml).unwrap_or_else(|e| panic!("test spec is invalid: {e}"));
        let workflow = spec.spec().id.clone();
        let n = spec.spec().triggers.len();
        let triggers =
            start_triggers(sys.t(), sys.config.triggers.history_ttl, vec![spec]).await.expect("triggers start");
        let app = tollgate::http::router(sys.t().clone(), String::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("router serves");
        });
        Self { sys, triggers: Some(triggers), addr, workflow, server, trigger_count: n }
    }

    pub fn url(&self, trigger: &str) -> String {
        format!("http://{}/hooks/{}/{trigger}", self.addr, self.workflow)
    }

    /// The trigger's secret (generated when it first started).
    pub async fn secret(&self, trigger: &str) -> Vec<u8> {
        self.sys
            .t()
            .engine
            .store
            .trigger_secret(&self.workflow, &TriggerId::new(trigger))
            .await
            .unwrap()
            .expect("secret")
            .into_bytes()
    }

    pub async fn history(&self) -> Vec<FireRecord> {
        self.sys.t().engine.store.fire_history(&self.workflow, 100_000).await.unwrap()
    }

    pub fn health(&self, trigger: &str) -> tollgate_engine::trigger::TriggerHealth {
        self.sys.t().engine.triggers.health(&self.workflow, &TriggerId::new(trigger)).expect("trigger on the board")
    }

    /// Stop the triggers (as on shutdown: their states are saved).
    pub async fn stop_triggers(&mut self) {
        if let Some(t) = self.triggers.take() {
            t.shutdown().await;
        }
    }
}

/// Count history entries by outcome label.
pub fn count(history: &[FireRecord], outcome: &str) -> usize {
    history.iter().filter(|f| f.outcome.label() == outcome).count()
}
