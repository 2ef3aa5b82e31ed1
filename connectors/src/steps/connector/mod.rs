//! The `connector` handler: a `connector` step's action through a named connection of the
//! workflow's owner ([`crate::connections`]), one file per action — [`email_send`],
//! [`email_fetch`], [`http_request`]. The action's fields come rendered in the invocation's
//! `with`; they are read into the action's struct (`tollgate_engine::spec::steps`) and a
//! field that does not fit fails the step `connector_input`. The output, like every job
//! step's, passes the gate mesh in the worker before anything reads it.

mod email_fetch;
mod email_send;
mod http_request;

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::StepKind;
use tollgate_engine::spec::steps::{ConnectorAction, read_with};
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};

use crate::connections::Connections;

/// Runs `connector` steps.
pub struct ConnectorHandler {
    connections: Arc<Connections>,
}

impl ConnectorHandler {
    pub fn new(connections: Arc<Connections>) -> Self {
        Self { connections }
    }
}

/// The rendered `with`, read as action `T`'s fields and checked.
fn fields<T: DeserializeOwned>(
    call: &StepInvocation<'_>,
    action: ConnectorAction,
    problem: impl Fn(&T) -> Option<String>,
) -> Result<T, StepError> {
    let with = call.inputs.get("with").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    let bad = |e: String| StepError::permanent("connector_input", format!("`{}` with: {e}", action.name()));
    let fields: T = read_with(&with).map_err(bad)?;
    match problem(&fields) {
        Some(e) => Err(bad(e)),
        None => Ok(fields),
    }
}

#[async_trait]
impl StepHandler for ConnectorHandler {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError> {
        let StepKind::Connector(step) = &call.step.kind else {
            return Err(StepError::permanent("bad_spec", "not a connector step"));
        };
        let Some(action) = step.action() else {
            return Err(StepError::permanent("bad_spec", format!("unknown connector action `{}`", step.action)));
        };
        let owner: OwnerId = self
            .connections
            .store()
            .workflow_owner(call.workflow)
            .await
            .map_err(|e| StepError::retryable("connection_failed", format!("reading the workflow's owner: {e}")))?;
        let output = match action {
            ConnectorAction::EmailSend => email_send::run(&self.connections, &call, &owner, &step.connection).await?,
            ConnectorAction::EmailFetch => email_fetch::run(&self.connections, &call, &owner, &step.connection).await?,
            ConnectorAction::HttpRequest => {
                http_request::run(&self.connections, &call, &owner, &step.connection).await?
            }
        };
        Ok(StepSuccess::new(output, Default::default()))
    }
}
