//! `platform` steps that run as jobs: `memory.write|read|list` ([`memory`]) and `notify`
//! ([`notify`]). (`workflow.run` is resolved by the run itself, see `tollgate_engine::run`.)
//! The attempt's input holds `action` and `with` with its templates rendered; the owner is
//! the workflow's.

mod memory;
mod notify;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::steps::PlatformStep;
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};
use tollgate_engine::store::{Store, StoreError};

pub use notify::NOTIFY_OUTPUT_KIND;

use crate::connections::Connections;

/// Runs the `platform` actions that need I/O.
pub struct PlatformHandler {
    store: Arc<Store>,
    connections: Option<Arc<Connections>>,
}

impl PlatformHandler {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, connections: None }
    }

    /// With the owners' named connections: `notify` emails through an `smtp` one.
    pub fn with_connections(mut self, connections: Arc<Connections>) -> Self {
        self.connections = Some(connections);
        self
    }

    async fn owner(&self, call: &StepInvocation<'_>) -> Result<OwnerId, StepError> {
        self.store.workflow_owner(call.workflow).await.map_err(unavailable)
    }
}

/// The rendered `with`, read as the action's settings.
fn settings<T: serde::de::DeserializeOwned>(call: &StepInvocation<'_>) -> Result<T, StepError> {
    PlatformStep::settings(&call.inputs["with"]).map_err(|e| StepError::permanent("bad_with", format!("with: {e}")))
}

fn unavailable(e: StoreError) -> StepError {
    StepError::retryable("memory_unavailable", e.to_string())
}

#[async_trait]
impl StepHandler for PlatformHandler {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError> {
        let owner = self.owner(&call).await?;
        let output: Value = match call.inputs["action"].as_str() {
            Some("memory.write") => memory::write(&self.store, &owner, &call, settings(&call)?).await?,
            Some("memory.read") => memory::read(&self.store, &owner, settings(&call)?).await?,
            Some("memory.list") => memory::list(&self.store, &owner, settings(&call)?).await?,
            Some("notify") => {
                notify::send(&self.store, self.connections.as_deref(), &owner, &call, settings(&call)?).await?
            }
            other => {
                return Err(StepError::permanent(
                    "bad_spec",
                    format!("`{}` is not a platform action run as a job", other.unwrap_or("?")),
                ));
            }
        };
        Ok(StepSuccess::new(output, Default::default()))
    }
}
