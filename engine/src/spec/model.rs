//! The workflow spec as written in YAML: the serde model (also the source of `tollgate schema`).
//!
//! Step-type-specific fields sit flat on the step (`script:` for `code`, `expr:` for
//! `condition`…); validation checks that each step has the fields its type needs and no others,
//! which gives clearer errors than a tagged enum would.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{OwnerId, StepId, WorkflowId};

/// A workflow: a DAG of steps with parameters, a budget and a run timeout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Workflow id: letters, digits, `_`, `-`, `.`.
    #[schemars(with = "String")]
    pub id: WorkflowId,
    /// Spec version; a run records the version it started with.
    #[serde(default = "one")]
    pub version: u32,
    /// The owning user; bound into the workflow's encryption key.
    #[schemars(with = "String")]
    pub owner: OwnerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Run parameters, by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterSpec>,
    /// Spending cap for one run; a step that cannot be covered pauses the run for a budget extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// Wall-clock limit for a whole run (e.g. `2h`); a run past it fails as `timed_out`.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Defaults applied to every step that does not set its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<StepDefaults>,
    /// The gate mesh every step output passes: policy, extra regex rules, what a block does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<WorkflowGates>,
    /// Destinations this workflow's `api_call` steps may reach although the egress policy
    /// refuses them by default (loopback, private, link-local… addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSpec>,
    pub steps: Vec<StepSpec>,
}

fn one() -> u32 {
    1
}

/// `egress:` — the workflow's additions to the service's egress allowlist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    /// Entries: `host`, `host:port`, `*.domain`, an address (`127.0.0.1`, `[::1]:8080`, with
    /// or without a port) or a network (`10.0.0.0/8`).
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    #[serde(rename = "type")]
    pub ty: ParameterType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParameterType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Maximum spend per run, in `currency` units.
    pub max_cost: f64,
    #[serde(default = "usd")]
    pub currency: String,
}

fn usd() -> String {
    "USD".into()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
}

/// The ten step types. Five are available now; the others are accepted by the parser and
/// refused by validation with a clear message until their handlers land.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    Condition,
    Llm,
    Approval,
    ApiCall,
    Connector,
    Code,
    Delay,
    Event,
    Platform,
    Research,
}

impl StepType {
    pub fn name(self) -> &'static str {
        match self {
            StepType::Condition => "condition",
            StepType::Llm => "llm",
            StepType::Approval => "approval",
            StepType::ApiCall => "api_call",
            StepType::Connector => "connector",
            StepType::Code => "code",
            StepType::Delay => "delay",
            StepType::Event => "event",
            StepType::Platform => "platform",
            StepType::Research => "research",
        }
    }

    pub fn is_available(self) -> bool {
        matches!(self, StepType::Condition | StepType::Approval | StepType::ApiCall | StepType::Code | StepType::Delay)
    }

    /// Steps the run actor resolves itself, without a queue job.
    pub fn is_local(self) -> bool {
        matches!(self, StepType::Condition | StepType::Approval | StepType::Delay)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Step id: a letter or `_`, then letters, digits, `_` (so `steps.<id>` works in expressions).
    #[schemars(with = "String")]
    pub id: StepId,
    #[serde(rename = "type")]
    pub ty: StepType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Steps that must finish before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<StepId>,
    /// CEL expression over `params` and `steps`; false skips this step and its dependents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Named inputs; strings may hold `${{ expr }}` references to `params` and upstream `steps`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Per-attempt limit (e.g. `30s`); a timed-out attempt is retried like a failure.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Estimated cost of one attempt, reserved against the budget before dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,

    /// `condition`: the CEL expression whose truth decides the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// `code`: a JavaScript body; `input` holds the step's inputs; its return value is the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// `code`: sandbox limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CodeLimits>,
    /// `delay`: how long to wait (durable across restarts).
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub duration: Option<Duration>,
    /// `api_call`: the HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HttpRequestSpec>,
    /// `approval`: what the human is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// `approval`: who is asked first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// This step's override of the workflow's gate policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<StepGates>,
    /// Settings of step types that are not available yet (`llm`, `connector`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a `block` verdict does to the step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnBlock {
    /// Hold the output (sealed, out of reach of later steps) and ask a human: approve it as
    /// is, supply a corrected value, or abort the run.
    #[default]
    Guidance,
    /// Fail the step (`gate_blocked`), without asking.
    Fail,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowGates {
    /// Overrides of the default gate policy (detectors, action per category, thresholds…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub policy: Option<crate::gates::GatePolicyOverride>,
    /// The workflow's own regex rules, each with positive and negative examples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub rules: Vec<crate::gates::RegexRule>,
    #[serde(default)]
    pub on_block: OnBlock,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepGates {
    /// Overrides of the workflow's gate policy for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub policy: Option<crate::gates::GatePolicyOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_block: Option<OnBlock>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, including the first (1 = no retry).
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: BackoffSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    /// Delay before the second attempt.
    #[serde(with = "humantime_serde", default = "default_initial")]
    #[schemars(with = "String")]
    pub initial: Duration,
    /// Upper bound of any delay.
    #[serde(with = "humantime_serde", default = "default_max")]
    #[schemars(with = "String")]
    pub max: Duration,
    /// Growth factor per attempt.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        Self { initial: default_initial(), max: default_max(), multiplier: default_multiplier() }
    }
}

fn default_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_max() -> Duration {
    Duration::from_secs(60)
}
fn default_multiplier() -> f64 {
    2.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeLimits {
    /// CPU time for one attempt.
    #[serde(with = "humantime_serde", default = "default_cpu")]
    #[schemars(with = "String")]
    pub cpu: Duration,
    /// Heap limit in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
}

impl Default for CodeLimits {
    fn default() -> Self {
        Self { cpu: default_cpu(), memory_mib: default_memory_mib() }
    }
}

fn default_cpu() -> Duration {
    Duration::from_secs(2)
}
fn default_memory_mib() -> u32 {
    32
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestSpec {
    #[serde(default = "get")]
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

fn get() -> String {
    "GET".into()
}
