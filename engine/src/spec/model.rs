//! The workflow spec as written in YAML: the serde model (also the source of `tollgate schema`).
//!
//! A step is its common fields plus a [`StepKind`]: one struct per step type, in
//! [`steps`](crate::spec::steps), so a step holds only the fields its type has.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{CheckOnBlock, CheckResult};
use crate::gates::{GateMesh, GatePolicy};
use crate::ids::{OwnerId, StepId, WorkflowId};
use crate::money::Money;
use crate::spec::steps::StepKind;

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
    /// How the workflow starts itself (cron, webhook, upload…); see `spec::triggers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<crate::spec::triggers::TriggerSpec>,
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
    /// Maximum spend per run, in `currency` units (an exact decimal).
    pub max_cost: Money,
    #[serde(default = "usd")]
    pub currency: String,
    /// Escalation of a budget-extension request nobody answers: page another assignee
    /// (`to`), then apply a `default` (`refuse` or `abort`), counted from when it was asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<crate::spec::Escalation>,
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
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub queue_timeout: Option<Duration>,
}

/// The ten step types. Six are available now; the others are accepted by the parser and
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

    /// Steps the run actor resolves itself, without a queue job.
    pub fn is_local(self) -> bool {
        matches!(self, StepType::Condition | StepType::Approval | StepType::Delay)
    }
}

/// A step: its `id`, its `type`, the fields every step has, and the fields of its type.
// Written as one flat map (`{ id: wait, type: delay, duration: 10m, needs: [a] }`) and read by
// the `Deserialize` in `spec::steps::format`, which refuses a field of another type with its place.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(transform = crate::spec::steps::one_shape_per_type)]
pub struct StepSpec {
    /// Step id: a letter or `_`, then letters, digits, `_` (so `steps.<id>` works in expressions).
    #[schemars(with = "String")]
    pub id: StepId,
    /// The step's type (`type:`) and its own fields.
    #[serde(flatten)]
    #[schemars(skip)]
    pub kind: StepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Steps that must finish before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<StepId>,
    /// CEL expression over `params` and `steps`; false skips this step and its dependents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How `needs` combine: `all_succeeded` (default), `all_done`, `any_succeeded`, `none_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<crate::spec::Join>,
    /// Named inputs; strings may hold `${{ expr }}` references to `params` and upstream `steps`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Fan-out: run the step once per element of this list — a YAML list, or a `${{ expr }}`
    /// template over `params` and upstream `steps` that gives one. Each item is an attempt
    /// series of its own (retries, claim, gate verdict, cost); its templates see `item` and
    /// `item_index`; the step's output is the list of the items' outputs, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Start-to-close limit of one attempt (e.g. `30s`), counted from when a worker starts it
    /// (time spent queued does not count); a timed-out attempt is retried like a failure.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Schedule-to-start limit of one attempt: how long it may wait in the queue for a worker
    /// before it is fenced (never started) and retried like a failure. Unbounded if unset.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub queue_timeout: Option<Duration>,
    /// Estimated cost of one attempt (an exact decimal), reserved against the budget before dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Money>,
    /// This step's override of the workflow's gate policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<StepGates>,
    /// Deterministic checks on the output (patterns, CEL, JSON Schema, gate categories by
    /// path) and what a failure does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<crate::checks::StepChecks>,
    /// Escalation of the requests the step makes of people when nobody answers (an
    /// `approval` step's approval; another step's guidance requests and tool authorisations),
    /// in order of `after`, counted from when the request was made: page another assignee
    /// (`to`), or apply a `default` answer, which ends the wait (see `spec::escalation`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<crate::spec::Escalation>,
}

impl StepSpec {
    /// The step's type.
    pub fn ty(&self) -> StepType {
        self.kind.ty()
    }

    /// What a failed check of this step's output does: its `checks.on_block`; a summarised
    /// `research` step without `checks` retries (its citations go back to the model once).
    pub fn check_on_block(&self) -> Option<CheckOnBlock> {
        match (&self.checks, &self.kind) {
            (Some(c), _) => Some(c.on_block),
            (None, StepKind::Research(r)) if r.summarize.is_some() && r.ingest.is_none() => Some(CheckOnBlock::Retry),
            _ => None,
        }
    }

    /// Every deterministic check of `output` and what a failure does: the step's `checks`, and
    /// for a summarised `research` step the `citations` check. What the worker records on the
    /// step, and what an `llm` conversation sends back to the model with `on_block: retry`.
    pub fn evaluate_checks(
        &self,
        output: &serde_json::Value,
        params: &serde_json::Value,
        mesh: &GateMesh,
        policy: &GatePolicy,
    ) -> Option<(CheckOnBlock, Vec<CheckResult>)> {
        let on_block = self.check_on_block()?;
        let mut results = self.checks.as_ref().map(|c| c.evaluate(output, params, mesh, policy)).unwrap_or_default();
        if let StepKind::Research(r) = &self.kind
            && r.summarize.is_some()
            && r.ingest.is_none()
        {
            results.push(crate::spec::steps::citation_check(output));
        }
        Some((on_block, results))
    }
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
    /// Which failed attempts are retried: `transient` (default: retryable errors, a server's
    /// `Retry-After`, timeouts), `any`, or a list of error codes (`[transient, script_error]`).
    #[serde(default, skip_serializing_if = "RetryOn::is_default")]
    pub on: RetryOn,
    /// The longest a server's `Retry-After` may hold the next attempt back (default: `backoff.max`).
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub max_retry_after: Option<Duration>,
}

/// What a step retries.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOn {
    /// `transient` or `any`.
    Class(RetryClass),
    /// These error codes; `transient` in the list stands for every transient failure.
    Codes(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryClass {
    /// Failures worth another attempt: class `retryable` or `retry_after` (timeouts included).
    Transient,
    /// Every failure, permanent ones (a thrown script error, a 4xx) included.
    Any,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn::Class(RetryClass::Transient)
    }
}

impl RetryOn {
    pub fn is_default(&self) -> bool {
        *self == RetryOn::default()
    }
}

/// By hand rather than `untagged`, so a wrong word is named, at its place.
impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RetryOn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`transient`, `any`, or a list of error codes such as [transient, script_error]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RetryOn, E> {
                match v {
                    "transient" => Ok(RetryOn::Class(RetryClass::Transient)),
                    "any" => Ok(RetryOn::Class(RetryClass::Any)),
                    other => Err(E::custom(format!(
                        "`{other}` is not `transient` or `any` (a single error code goes in a list: [{other}])"
                    ))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RetryOn, A::Error> {
                let mut codes = Vec::new();
                while let Some(code) = seq.next_element::<String>()? {
                    codes.push(code);
                }
                Ok(RetryOn::Codes(codes))
            }
        }
        d.deserialize_any(V)
    }
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
