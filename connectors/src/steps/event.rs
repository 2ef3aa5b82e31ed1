//! The `event` handler: what an `event` step with `emit` does as a job — publish its rendered
//! name and payload on the internal bus, in the scope of the workflow's owner. The step's
//! idempotency key (the same for every attempt) is the event's dedup key, so a retried emit
//! publishes once.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use tollgate_engine::events::{EventBus, EventName};
use tollgate_engine::spec::steps::valid_event_name;
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};
use tollgate_engine::store::Store;

pub struct EventHandler {
    bus: Arc<dyn EventBus>,
    /// Where the workflow's owner is read.
    store: Arc<Store>,
}

impl EventHandler {
    pub fn new(bus: Arc<dyn EventBus>, store: Arc<Store>) -> Self {
        Self { bus, store }
    }
}

#[async_trait]
impl StepHandler for EventHandler {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError> {
        let Some(event) = call.inputs.get("event") else {
            return Err(StepError::permanent("bad_event", "only an `event` step with `emit` runs as a job"));
        };
        let name = match event.get("name") {
            Some(Value::String(name)) if valid_event_name(name) => name.as_str(),
            other => {
                let got = other.map_or("nothing".to_string(), Value::to_string);
                return Err(StepError::permanent(
                    "bad_event",
                    format!("the rendered event name {got} is not a valid name (1–200 letters, digits or `._:-/`)"),
                ));
            }
        };
        let payload = event.get("payload").cloned().unwrap_or(Value::Null);
        let owner =
            self.store.workflow_owner(call.workflow).await.map_err(|e| {
                StepError::retryable("event_bus_unavailable", format!("reading the workflow's owner: {e}"))
            })?;
        let published = self
            .bus
            .publish(EventName::new(owner.as_str(), name), &payload, Some(&call.idempotency_key))
            .await
            .map_err(|e| StepError::retryable("event_bus_unavailable", e.to_string()))?;
        Ok(StepSuccess::new(json!({ "id": published.id, "name": name, "at": published.at }), Default::default()))
    }
}
