//! The model-provider port: what an `llm` step asks a language model and what comes back
//! (provider-neutral chat messages, tool calls, token usage), the named-provider settings the
//! adapters in `tollgate-connectors` read, and the price table that turns usage into cost.
//!
//! Pure data and arithmetic: the adapters (OpenAI Chat Completions, Anthropic Messages) speak
//! HTTP; the engine only prices, reserves and settles.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::StepId;
use crate::money::Money;
use crate::spec::{LlmStep, StepKind, ValidatedSpec};
use crate::step::StepError;

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, returned to the model.
    Tool,
}

/// One message of a conversation with a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    /// Tool calls the model asked for in this (assistant) message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }
}

/// A tool call the model asked for: which tool, with which arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// A tool offered to the model: its name, what it does, and a JSON Schema of its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// One request to a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// Ask for a JSON object (where the protocol has such a switch).
    #[serde(default)]
    pub json: bool,
}

/// Tokens a call consumed, as the provider reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
    }
}

/// A model's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    /// The text of the answer (empty when the model only called tools).
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// Why the model stopped (`stop`, `length`, `tool_calls`, `end_turn`…), as the provider says.
    #[serde(default)]
    pub finish: String,
}

/// A model provider: one protocol, one endpoint. Errors are step errors with their codes
/// (`model_auth`, `model_bad_request`, `http_status`, `http_unreachable`, `timeout`…), so the
/// run's retry policy can act on them.
#[async_trait]
pub trait ModelProvider: Send + Sync + 'static {
    async fn complete(&self, request: &ChatRequest, api_key: Option<&str>) -> Result<ChatReply, StepError>;
}

/// Which protocol a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions (`POST {base_url}/chat/completions`): OpenAI, vLLM, llama.cpp
    /// server, Ollama, and most gateways.
    Openai,
    /// Anthropic Messages (`POST {base_url}/messages`).
    Anthropic,
}

/// A named provider from the configuration (`[llm.providers.NAME]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Up to and including the API version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The model used when a step names none.
    #[serde(default)]
    pub model: Option<String>,
    /// The name of the secret (`tollgate secrets set NAME`) holding the API key; none for a
    /// local server that needs no key.
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// Defaults for steps that set none.
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Retries of one call on 429/5xx/connection errors (honouring `Retry-After`).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The longest a server's `Retry-After` may hold a call back; longer asks fail the attempt
    /// (`retry_after`) and leave the wait to the step's retry policy.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    pub max_retry_after: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit on one whole call (request sent to last byte of the answer).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_max_tokens() -> u32 {
    1024
}
fn default_max_retries() -> u32 {
    2
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(120)
}

/// The price of a model, per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_million: Money,
    pub output_per_million: Money,
}

impl ModelPrice {
    /// What `usage` costs, exactly (rounded up to [`Money::MAX_DECIMALS`] places).
    pub fn cost(&self, usage: Usage) -> Money {
        let million = Decimal::from(1_000_000u32);
        let c = self.input_per_million.as_decimal() * Decimal::from(usage.input_tokens) / million
            + self.output_per_million.as_decimal() * Decimal::from(usage.output_tokens) / million;
        let c = c.round_dp_with_strategy(Money::MAX_DECIMALS, rust_decimal::RoundingStrategy::AwayFromZero);
        Money::from_decimal(c).unwrap_or(Money::MAX)
    }

    /// The most one call can cost: a prompt of `prompt_bytes` bytes (a token is at least one
    /// byte in every tokenizer in use, so bytes bound tokens) and `max_tokens` of answer.
    pub fn worst_case(&self, prompt_bytes: u64, max_tokens: u32) -> Money {
        self.cost(Usage { input_tokens: prompt_bytes, output_tokens: u64::from(max_tokens) })
    }
}

/// What the run reserves for one call of an `llm` step: the model's price and the answer's
/// token limit (the prompt's size is added at dispatch, from the rendered prompt).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelQuote {
    pub price: ModelPrice,
    pub max_tokens: u32,
    /// Calls one attempt may make (a schema repair round, tool turns).
    #[serde(default = "one")]
    pub calls: u32,
    /// Bytes sent with every call besides the rendered conversation: the tool definitions, a
    /// `research` summary's hits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_call_bytes: u64,
    /// Bytes each turn may add to the conversation besides the answer: tool results (each cut
    /// to `MAX_TOOL_RESULT_BYTES`, at most `MAX_TOOL_CALLS_PER_TURN` run per turn).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_turn_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

impl ModelQuote {
    /// The worst case of one attempt whose rendered prompt has `prompt_bytes` bytes. Each
    /// further call re-sends the conversation, so it is bounded by the prompt plus every answer so far.
    pub fn reservation(&self, prompt_bytes: u64) -> Money {
        self.reservation_from(prompt_bytes, 0)
    }

    /// The worst case of an attempt that continues a conversation whose turn journal already
    /// holds `done` model calls: only the calls still possible, each sending the conversation
    /// as it may have grown by then.
    pub fn reservation_from(&self, prompt_bytes: u64, done: u32) -> Money {
        // An answer token is at most a few bytes of text; count it generously (16 bytes).
        let growth = u64::from(self.max_tokens) * 16 + self.per_turn_bytes;
        let mut total = Money::ZERO;
        for k in done..self.calls.max(1) {
            total += self.price.worst_case(prompt_bytes + u64::from(k) * growth + self.per_call_bytes, self.max_tokens);
        }
        total
    }
}

/// The model price table (`config/prices.toml`): `"provider/model"` or `"model"` → price.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub BTreeMap<String, ModelPrice>);

impl PriceTable {
    /// The price of `model` at `provider`: the `provider/model` entry, else the `model` entry.
    pub fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        self.0.get(&format!("{provider}/{model}")).or_else(|| self.0.get(model)).copied()
    }
}

/// The configured providers and prices: which provider and model an `llm` step uses, and what
/// the run reserves for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelCatalog {
    pub default_provider: Option<String>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub prices: PriceTable,
}

impl ModelCatalog {
    /// The provider of `step`: its own, else the default, else the only one configured.
    pub fn provider_name<'a>(&'a self, step: &'a LlmStep) -> Option<&'a str> {
        step.provider
            .as_deref()
            .or(self.default_provider.as_deref())
            .or_else(|| if self.providers.len() == 1 { self.providers.keys().next().map(String::as_str) } else { None })
    }

    /// The model `step` asks for at `provider`.
    pub fn model<'a>(&'a self, step: &'a LlmStep, provider: &'a ProviderConfig) -> Option<&'a str> {
        step.model.as_deref().or(provider.model.as_deref())
    }

    /// What one attempt of `step` may cost, if its model has a price; `check_retry`: its
    /// `checks` may ask the model once more.
    pub fn quote(&self, step: &LlmStep, check_retry: bool) -> Option<ModelQuote> {
        let name = self.provider_name(step)?;
        let provider = self.providers.get(name)?;
        let price = self.prices.price(name, self.model(step, provider)?)?;
        // Every model turn of the tool loop, then a schema repair round and a checks round.
        let calls = step.turns() + u32::from(step.schema.is_some()) + u32::from(check_retry);
        let (per_call_bytes, per_turn_bytes) = if step.tools.is_empty() {
            (0, 0)
        } else {
            let defs: Vec<ToolDef> = step.tools.iter().map(|t| t.definition()).collect();
            let defs = serde_json::to_vec(&defs).map_or(0, |d| d.len() as u64);
            (defs, u64::from(crate::spec::MAX_TOOL_CALLS_PER_TURN) * u64::from(crate::spec::MAX_TOOL_RESULT_BYTES))
        };
        Some(ModelQuote {
            price,
            max_tokens: step.max_tokens.unwrap_or(provider.max_tokens),
            calls,
            per_call_bytes,
            per_turn_bytes,
        })
    }

    /// The quotes of every step of `spec` that calls a model (an `llm` step, a `research`
    /// step's summary), for `RunStarted`.
    pub fn quotes(&self, spec: &ValidatedSpec) -> BTreeMap<StepId, ModelQuote> {
        spec.spec()
            .steps
            .iter()
            .filter_map(|s| {
                let llm = s.kind.model_step()?;
                let check_retry = s.check_on_block() == Some(crate::checks::CheckOnBlock::Retry);
                let mut quote = self.quote(&llm, check_retry)?;
                if let StepKind::Research(r) = &s.kind {
                    // The hits the handler appends to the prompt, sent with every call.
                    quote.per_call_bytes += r.summary_context_bound();
                }
                Some((s.id.clone(), quote))
            })
            .collect()
    }
}

/// What one `llm` attempt reports about its model calls: on the step's output (`usage`) and
/// in `runs show`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmUsage {
    pub provider: String,
    pub model: String,
    pub calls: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Money,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_priced_exactly_per_million_tokens() {
        let p = ModelPrice {
            input_per_million: Money::parse("2.5").unwrap(),
            output_per_million: Money::parse("10").unwrap(),
        };
        assert_eq!(p.cost(Usage { input_tokens: 1000, output_tokens: 500 }).to_exact_string(), "0.0075");
        assert_eq!(p.worst_case(400, 1000).to_exact_string(), "0.011");
        assert!(p.cost(Usage::default()).is_zero());
    }

    #[test]
    fn a_reservation_covers_every_turn_and_a_continued_conversation_only_the_turns_left() {
        let price = ModelPrice {
            input_per_million: Money::parse("1").unwrap(),
            output_per_million: Money::parse("1").unwrap(),
        };
        let q = ModelQuote { price, max_tokens: 100, calls: 3, per_call_bytes: 50, per_turn_bytes: 1000 };
        // Calls send 500+50, then +2600, then +5200 bytes; each may answer 100 tokens.
        let each = |sent: u64| price.worst_case(sent, 100);
        assert_eq!(q.reservation(500), each(550) + each(3150) + each(5750));
        assert_eq!(q.reservation_from(500, 2), each(5750));
        assert!(q.reservation_from(500, 3).is_zero());
    }

    #[test]
    fn a_provider_specific_price_wins_over_the_model_price() {
        let mut t = PriceTable::default();
        let a = ModelPrice {
            input_per_million: Money::parse("1").unwrap(),
            output_per_million: Money::parse("2").unwrap(),
        };
        let b = ModelPrice {
            input_per_million: Money::parse("3").unwrap(),
            output_per_million: Money::parse("4").unwrap(),
        };
        t.0.insert("m".into(), a);
        t.0.insert("local/m".into(), b);
        assert_eq!(t.price("local", "m"), Some(b));
        assert_eq!(t.price("other", "m"), Some(a));
        assert_eq!(t.price("other", "x"), None);
    }
}
