//! The step-handler port: what a worker hands a step type's handler, and what comes back.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::egress::EgressAllow;
use crate::ids::{RunId, StepId, WorkflowId};
use crate::money::Money;
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

impl ErrorClass {
    /// Worth another attempt under the default retry policy (`retry.on: transient`).
    pub fn is_transient(&self) -> bool {
        matches!(self, ErrorClass::Retryable | ErrorClass::RetryAfter { .. })
    }
}

/// A stable error code of a failed attempt: who produces it, with which class, and why.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode {
    pub code: &'static str,
    pub from: &'static str,
    pub class: &'static str,
    pub meaning: &'static str,
}

/// Every code a failed attempt can carry (README lists them; `retry.on` accepts them). A handler
/// that adds a code adds it here.
pub const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode {
        code: "timeout",
        from: "engine, code, api_call",
        class: "retryable",
        meaning: "the attempt did not finish within the step's `timeout`",
    },
    ErrorCode {
        code: "http_status",
        from: "api_call",
        class: "retryable (408, 429, 5xx); retry_after (429, 503 with `Retry-After`); permanent (other 4xx)",
        meaning: "the server answered with an error status",
    },
    ErrorCode {
        code: "http_unreachable",
        from: "api_call",
        class: "retryable",
        meaning: "no answer: connection refused or reset, DNS failure, connect timeout",
    },
    ErrorCode {
        code: "bad_url",
        from: "api_call",
        class: "permanent",
        meaning: "the rendered URL is not an http(s) URL",
    },
    ErrorCode {
        code: "bad_request",
        from: "api_call",
        class: "permanent",
        meaning: "the rendered request is malformed (method, header)",
    },
    ErrorCode {
        code: "bad_redirect",
        from: "api_call",
        class: "permanent",
        meaning: "a redirect could not be followed",
    },
    ErrorCode {
        code: "response_too_large",
        from: "api_call",
        class: "permanent",
        meaning: "the response body exceeds the size limit",
    },
    ErrorCode { code: "script_error", from: "code", class: "permanent", meaning: "the script threw" },
    ErrorCode { code: "cpu_limit", from: "code", class: "permanent", meaning: "the script used up its CPU limit" },
    ErrorCode {
        code: "memory_limit",
        from: "code",
        class: "permanent",
        meaning: "the script used up its memory limit",
    },
    ErrorCode { code: "bad_output", from: "code", class: "permanent", meaning: "the return value is not JSON" },
    ErrorCode { code: "sandbox_failed", from: "code", class: "retryable", meaning: "the sandbox could not be set up" },
    ErrorCode {
        code: "bad_spec",
        from: "code, api_call",
        class: "permanent",
        meaning: "the step lacks its `script` or `request`",
    },
    ErrorCode {
        code: "gate_blocked",
        from: "worker",
        class: "permanent",
        meaning: "the gate mesh blocked the output (`on_block: fail`)",
    },
    ErrorCode {
        code: "no_handler",
        from: "worker",
        class: "permanent",
        meaning: "no handler for the step type in this process",
    },
    ErrorCode {
        code: "egress_denied",
        from: "api_call",
        class: "permanent",
        meaning: "the destination is not allowed by the egress policy (see Egress)",
    },
    ErrorCode {
        code: "queue_timeout",
        from: "engine",
        class: "retryable",
        meaning: "no worker started the attempt within the step's `queue_timeout`; it was fenced and never ran",
    },
    ErrorCode {
        code: "interrupted",
        from: "engine",
        class: "retryable",
        meaning: "the process running the attempt died; the step runs again without using a retry (fails after 3)",
    },
    ErrorCode {
        code: "event_timeout",
        from: "engine",
        class: "permanent",
        meaning: "an `event` step's `wait` saw no matching event within its `timeout` (`on_timeout: fail`)",
    },
    ErrorCode {
        code: "bad_event",
        from: "event",
        class: "permanent",
        meaning: "the rendered event name is not a valid name, or the step has no `emit`",
    },
    ErrorCode {
        code: "event_bus_unavailable",
        from: "event",
        class: "retryable",
        meaning: "the event bus could not record the event",
    },
    ErrorCode {
        code: "cancelled",
        from: "worker",
        class: "permanent",
        meaning: "the attempt was abandoned because its run was cancelled or had finished",
    },
    ErrorCode {
        code: "check_failed",
        from: "worker",
        class: "permanent",
        meaning: "the output failed one of the step's `checks` or a `research` summary's `citations` (`on_block: fail`, or `retry` and the retry failed too); the message names the checks and their evidence",
    },
    ErrorCode {
        code: "prompt_injection",
        from: "llm",
        class: "permanent",
        meaning: "the threat classifier found a prompt injection in the rendered prompt (`on_injection: block`); no call was made",
    },
    ErrorCode {
        code: "template_error",
        from: "engine (llm)",
        class: "permanent",
        meaning: "a prompt template could not be rendered (an undefined variable, a filter error); no attempt ran",
    },
    ErrorCode {
        code: "model_auth",
        from: "llm",
        class: "permanent",
        meaning: "the provider refused the API key (401, 403); not retried",
    },
    ErrorCode {
        code: "model_bad_request",
        from: "llm",
        class: "permanent",
        meaning: "the provider refused the request (400, 404, 422: unknown model, bad parameter); not retried",
    },
    ErrorCode {
        code: "model_reply",
        from: "llm",
        class: "retryable",
        meaning: "the provider's answer is not what its protocol says (not JSON, no choice)",
    },
    ErrorCode {
        code: "output_invalid",
        from: "llm",
        class: "permanent",
        meaning: "the answer did not satisfy the step's `schema`, also after one repair round with the errors fed back",
    },
    ErrorCode {
        code: "max_turns",
        from: "llm",
        class: "permanent",
        meaning: "the model was still calling tools after the step's `max_turns` turns",
    },
    ErrorCode {
        code: "reservation_exceeded",
        from: "llm",
        class: "permanent",
        meaning: "the next model call could cost more than what the attempt reserved; not made (a guard: the quote covers every turn)",
    },
    ErrorCode {
        code: "turn_journal",
        from: "llm",
        class: "retryable",
        meaning: "the step's turn journal could not be read or written",
    },
    ErrorCode {
        code: "no_provider",
        from: "llm",
        class: "permanent",
        meaning: "the step names a provider (or model) the configuration does not have",
    },
    ErrorCode {
        code: "secret_missing",
        from: "llm",
        class: "permanent (retryable while the store cannot be read)",
        meaning: "the provider's `api_key_secret` is not in the owner's secret store (`tollgate secrets set`)",
    },
    ErrorCode {
        code: "collection_not_found",
        from: "research",
        class: "permanent",
        meaning: "the step's collection does not exist for the workflow's owner (`tollgate docs ingest` first, or `if_missing: empty`)",
    },
    ErrorCode {
        code: "index_unavailable",
        from: "research",
        class: "retryable",
        meaning: "the collection's index could not be read from the store",
    },
    ErrorCode {
        code: "bad_query",
        from: "research",
        class: "permanent",
        meaning: "the rendered query is empty or cannot be parsed",
    },
    ErrorCode {
        code: "connection_not_found",
        from: "connector",
        class: "permanent",
        meaning: "the step's connection does not exist for the workflow's owner, is of another kind than the action needs, or lacks its credential (`tollgate connections add`)",
    },
    ErrorCode {
        code: "connection_refused",
        from: "connector",
        class: "permanent",
        meaning: "the server refused the connection's credentials (SMTP AUTH, IMAP LOGIN, an OAuth2 token endpoint's 400/401)",
    },
    ErrorCode {
        code: "connection_failed",
        from: "connector",
        class: "retryable",
        meaning: "the server could not be reached or answered with a temporary error (SMTP 4xx, a TLS or protocol failure, an OAuth2 token endpoint's 5xx)",
    },
    ErrorCode {
        code: "email_rejected",
        from: "connector",
        class: "permanent",
        meaning: "the SMTP server refused the message or a recipient (5xx)",
    },
    ErrorCode {
        code: "connector_input",
        from: "connector",
        class: "permanent",
        meaning: "the rendered `with` does not fit the action (a field of the wrong type, no recipient, a bad address, path or attachment)",
    },
    ErrorCode {
        code: "attachment_not_found",
        from: "connector",
        class: "permanent",
        meaning: "an attachment's `blob` is not a stored blob of the workflow (expired, or from another workflow)",
    },
    ErrorCode {
        code: "workflow_not_found",
        from: "engine (workflow.run)",
        class: "permanent",
        meaning: "the sub-workflow's id is not in the workflow catalogue",
    },
    ErrorCode {
        code: "bad_params",
        from: "engine (workflow.run)",
        class: "permanent",
        meaning: "the rendered `params` do not fit the sub-workflow's parameters; the message names each one",
    },
    ErrorCode {
        code: "recursion_limit",
        from: "engine (workflow.run)",
        class: "permanent",
        meaning: "sub-workflows would nest deeper than 8 levels",
    },
    ErrorCode {
        code: "child_failed",
        from: "engine (workflow.run)",
        class: "permanent",
        meaning: "the sub-workflow's run failed; the message names the run and its error",
    },
    ErrorCode {
        code: "child_cancelled",
        from: "engine (workflow.run)",
        class: "permanent",
        meaning: "the sub-workflow's run was cancelled on its own",
    },
    ErrorCode {
        code: "memory_not_found",
        from: "platform (memory.read)",
        class: "permanent",
        meaning: "the owner has no note under the key",
    },
    ErrorCode {
        code: "bad_with",
        from: "platform",
        class: "permanent",
        meaning: "the rendered `with` does not fit the action (a missing or mistyped field, an empty note)",
    },
    ErrorCode {
        code: "memory_unavailable",
        from: "platform (memory.*, notify)",
        class: "retryable",
        meaning: "the store could not be read or written",
    },
    ErrorCode {
        code: "no_recipient",
        from: "platform (notify)",
        class: "permanent",
        meaning: "`to` names no known user or group",
    },
    ErrorCode {
        code: "bad_documents",
        from: "research (ingest)",
        class: "permanent",
        meaning: "`ingest` did not give a list of `{name, text}` documents, or one could not be read",
    },
];

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
    pub cost: Money,
    /// The attempt stopped to ask a human (an `llm` step: a tool call to authorise, or a prompt
    /// the injection classifier flagged); `output` is then empty and `cost` is what its model
    /// calls cost so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<crate::conversation::Suspension>,
}

impl StepSuccess {
    /// A finished attempt's output and cost.
    pub fn new(output: serde_json::Value, cost: Money) -> Self {
        Self { output, cost, suspend: None }
    }
}

/// A step type's implementation. Handlers are stateless across attempts: everything they
/// need comes in the invocation.
#[async_trait]
pub trait StepHandler: Send + Sync + 'static {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError>;
}
