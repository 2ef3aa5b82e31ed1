//! The step-queue port: how a run hands a ready step to the worker fleet.
//!
//! A job carries ids only; the worker loads the sealed input from the store.

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{RunId, StepId, WorkflowId};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepJob {
    pub workflow: WorkflowId,
    pub run: RunId,
    pub step: StepId,
    pub attempt: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("step queue unavailable: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait StepQueue: Send + Sync + 'static {
    /// Enqueue a job, to run no earlier than `not_before` if given.
    async fn enqueue(&self, job: StepJob, not_before: Option<SystemTime>) -> Result<(), QueueError>;
}
