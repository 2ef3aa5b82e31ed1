//! The step-handler port: what a worker hands a step type's handler, and what comes back.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::egress::EgressAllow;
use crate::ids::{RunId, StepId, WorkflowId};
use crate::spec::StepSpec;

/// How a failed attempt may be retried. Mapped to the queue's retry meaning in one place only
/// (the worker), and to the run's retry policy by the state machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum ErrorClass {
    /// Worth another attempt (network error, 5xx, a timeout).
    Retryable,
    /// Will fail again the same way (bad input, 4xx, a script error).
    Permanent,
    /// Retryable, but not before this long (HTTP 429/503 with `Retry-After`).
    RetryAfter { after_ms: u64 },
}

/// A failed attempt: its class, a stable code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StepError {
    #[serde(flatten)]
    pub class: ErrorClass,
    /// Stable, machine-readable reason, e.g. `http_status`, `script_error`, `cpu_limit`, `timeout`.
    pub code: String,
    pub message: String,
}

impl StepError {
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self { class: ErrorClass::Retryable, code: code.into(), message: message.into() }
    }
    pub fn permanent(code: &str, message: impl Into<String>) -> Self {
        Self { class: ErrorClass::Permanent, code: code.into(), message: message.into() }
    }
    pub fn retry_after(code: &str, after: Duration, message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::RetryAfter { after_ms: after.as_millis() as u64 },
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Everything a handler needs for one attempt; inputs are already resolved and decrypted.
#[derive(Clone, Debug)]
pub struct StepInvocation<'a> {
    pub workflow: &'a WorkflowId,
    pub run: &'a RunId,
    pub step: &'a StepSpec,
    pub attempt: u32,
    pub inputs: &'a serde_json::Value,
    /// Sent to the outside world where it accepts one; the same for every attempt of the step,
    /// so a retried side effect is applied once.
    pub idempotency_key: String,
    pub timeout: Duration,
    /// Destinations the workflow opens beyond the service's egress allowlist (`egress.allow`).
    pub egress: &'a EgressAllow,
}

impl StepInvocation<'_> {
    pub fn step_id(&self) -> &StepId {
        &self.step.id
    }
}

/// A successful attempt: its output and what it actually cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepSuccess {
    pub output: serde_json::Value,
    #[serde(default)]
    pub cost: f64,
}

/// A step type's implementation. Handlers are stateless across attempts: everything they
/// need comes in the invocation.
#[async_trait]
pub trait StepHandler: Send + Sync + 'static {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError>;
}
