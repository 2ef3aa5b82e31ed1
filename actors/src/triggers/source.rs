//! [`TriggerSource`]: what a trigger type does while its actor runs — listen, poll, sleep
//! until a slot — and the [`TriggerContext`] it works with: its spec, the fire path, its
//! health and cursor on the board, and the shutdown token.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tollgate_engine::ids::{TriggerId, WorkflowId};
use tollgate_engine::spec::ValidatedSpec;
use tollgate_engine::spec::triggers::{TriggerKind, TriggerSpec};
use tollgate_engine::store::Store;
use tollgate_engine::trigger::Fire;

use crate::system::now_ms;
use crate::triggers::board::TriggerBoard;
use crate::triggers::cron::CronSource;
use crate::triggers::fire::{FireError, FirePath, FireResult};
use crate::triggers::upload::UploadSource;
use crate::triggers::webhook::WebhookSource;

/// Why a source stopped: its actor fails and is restarted with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TriggerError(pub String);

impl From<FireError> for TriggerError {
    fn from(e: FireError) -> Self {
        TriggerError(e.to_string())
    }
}

impl From<tollgate_engine::store::StoreError> for TriggerError {
    fn from(e: tollgate_engine::store::StoreError) -> Self {
        TriggerError(e.to_string())
    }
}

/// A trigger type's behaviour.
#[async_trait]
pub trait TriggerSource: Send + Sync + 'static {
    /// Run until `ctx.shutdown` is cancelled, firing through [`TriggerContext::fire`]. An
    /// error (or returning before shutdown) fails the trigger's actor, which is restarted
    /// with backoff; report connection state with [`TriggerContext::set_connected`].
    async fn run(&self, ctx: &TriggerContext) -> Result<(), TriggerError>;
}

/// The source of each trigger type.
pub fn source_for(trigger: &TriggerSpec) -> Box<dyn TriggerSource> {
    match trigger.kind() {
        TriggerKind::Cron(c) => Box::new(CronSource(c.clone())),
        TriggerKind::Webhook(_) => Box::new(WebhookSource),
        TriggerKind::Upload(u) => Box::new(UploadSource(u.clone())),
        TriggerKind::Event(e) => Box::new(crate::triggers::event::EventSource(e.clone())),
        TriggerKind::Imap(i) => Box::new(crate::triggers::imap::ImapSource(i.clone())),
    }
}

/// What a running source works with.
#[derive(Clone)]
pub struct TriggerContext {
    pub spec: Arc<ValidatedSpec>,
    pub trigger: TriggerSpec,
    pub fire_path: FirePath,
    pub board: TriggerBoard,
    /// Cancelled when the trigger stops (shutdown, or its actor failed).
    pub shutdown: CancellationToken,
}

impl TriggerContext {
    pub fn workflow(&self) -> &WorkflowId {
        &self.spec.spec().id
    }

    pub fn id(&self) -> TriggerId {
        TriggerId::new(&self.trigger.id)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.fire_path.tollgate().engine.store
    }

    /// How long the blobs of a fire's mail attachments are kept (`attachment_ttl`).
    pub fn attachment_ttl(&self) -> std::time::Duration {
        self.fire_path.tollgate().engine.attachment_ttl
    }

    /// Fire: claim `key`, start the run, record — see [`FirePath::fire`]. Acknowledge to the
    /// source only after this returns `Ok`.
    pub async fn fire(
        &self,
        key: impl Into<String>,
        payload: Value,
        source: impl Into<String>,
    ) -> Result<FireResult, FireError> {
        let fire = Fire {
            workflow: self.workflow().clone(),
            trigger: self.id(),
            key: key.into(),
            payload,
            at: now_ms(),
            source: source.into(),
        };
        self.fire_path.fire(&self.spec, &self.trigger, fire).await
    }

    /// Record a fire that cannot start a run (unparseable input): a failed fire with `error`.
    pub async fn fire_failed(
        &self,
        key: impl Into<String>,
        source: impl Into<String>,
        error: impl Into<String>,
    ) -> Result<FireResult, FireError> {
        let fire = Fire {
            workflow: self.workflow().clone(),
            trigger: self.id(),
            key: key.into(),
            payload: Value::Null,
            at: now_ms(),
            source: source.into(),
        };
        self.fire_path.record_failed(&self.spec, &self.trigger, fire, error.into()).await
    }

    pub fn set_connected(&self, connected: bool) {
        self.board.set_connected(self.workflow(), &self.id(), connected);
    }

    pub fn error(&self, error: &str) {
        self.board.error(self.workflow(), &self.id(), error);
    }

    /// The source's resume point as last saved (`null` the first time).
    pub fn cursor(&self) -> Value {
        self.board.cursor(self.workflow(), &self.id())
    }

    /// Set the resume point; it is saved to the store within a second.
    pub fn set_cursor(&self, cursor: Value) {
        self.board.set_cursor(self.workflow(), &self.id(), cursor);
    }
}
