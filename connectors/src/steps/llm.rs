//! `llm` steps: one conversation with a configured model provider per attempt.
//!
//! The conversation comes rendered in the attempt's input (`llm.messages`, rendered by the run
//! from the step's templates, so it is sealed with the attempt). The handler picks the step's
//! provider (or the default one) from the configuration, reads the provider's API key from the
//! workflow owner's secret store, sends the call and reads the answer. With a `schema`, the
//! answer must be JSON satisfying it: an invalid answer is sent back once with the validation
//! errors, and a second invalid answer fails the attempt (`output_invalid`, with the errors).
//!
//! Output: `{"text": …}` or `{"json": …}`, plus `usage` (provider, model, calls, tokens in and
//! out, cost). The cost, priced from the price table, is what the attempt reports to the run.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use tollgate_engine::llm::{ChatMessage, ChatReply, ChatRequest, LlmUsage, ModelCatalog, ModelProvider, ProviderConfig, Role};
use tollgate_engine::checks::{CheckOnBlock, all_passed};
use tollgate_engine::gates::{GateMesh, GatePolicy, RedactionMap};
use tollgate_engine::money::Money;
use tollgate_engine::spec::{LlmStep, OnInjection, StepKind, compile_schema, schema_errors};
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};
use tollgate_engine::store::Store;

/// Runs `llm` steps against the configured providers.
pub struct LlmHandler {
    store: Arc<Store>,
    models: Arc<ModelCatalog>,
    adapters: BTreeMap<String, Arc<dyn ModelProvider>>,
}

impl LlmHandler {
    /// A handler for the providers of `models`; a provider whose adapter cannot be built (its
    /// HTTP client) is an error naming it.
    pub fn new(store: Arc<Store>, models: Arc<ModelCatalog>) -> Result<Self, String> {
        let mut adapters = BTreeMap::new();
        for (name, config) in &models.providers {
            adapters.insert(name.clone(), crate::llm::provider(config).map_err(|e| format!("provider `{name}`: {e}"))?);
        }
        Ok(Self { store, models, adapters })
    }

    /// The provider of `step`: its name, settings and adapter.
    fn provider_of<'a>(&'a self, step: &'a LlmStep) -> Result<(&'a str, &'a ProviderConfig, &'a Arc<dyn ModelProvider>), StepError> {
        let Some(name) = self.models.provider_name(step) else {
            return Err(StepError::permanent("no_provider", "no model provider is configured (see `[llm.providers.NAME]` in the configuration)"));
        };
        match (self.models.providers.get(name), self.adapters.get(name)) {
            (Some(config), Some(adapter)) => Ok((name, config, adapter)),
            _ => {
                let known: Vec<&str> = self.models.providers.keys().map(String::as_str).collect();
                Err(StepError::permanent("no_provider", format!("no provider `{name}` is configured (configured: {})", known.join(", "))))
            }
        }
    }

    async fn api_key(&self, call: &StepInvocation<'_>, config: &ProviderConfig) -> Result<Option<zeroize::Zeroizing<String>>, StepError> {
        let Some(name) = &config.api_key_secret else { return Ok(None) };
        let unavailable = |e: tollgate_engine::store::StoreError| StepError::retryable("secret_missing", format!("reading secret `{name}`: {e}"));
        let owner = self.store.workflow_owner(call.workflow).await.map_err(unavailable)?;
        match self.store.secret(&owner, name).await.map_err(unavailable)? {
            Some(key) => Ok(Some(key)),
            None => Err(StepError::permanent(
                "secret_missing",
                format!("owner `{owner}` has no secret `{name}` (set it with `tollgate secrets set {name}`, the value on stdin)"),
            )),
        }
    }
}

/// The model calls of one attempt, tallied.
struct Tally {
    usage: LlmUsage,
}

impl Tally {
    fn add(&mut self, reply: &ChatReply) {
        self.usage.calls += 1;
        self.usage.input_tokens += reply.usage.input_tokens;
        self.usage.output_tokens += reply.usage.output_tokens;
        if !reply.model.is_empty() {
            self.usage.model = reply.model.clone();
        }
    }
}

#[async_trait]
impl StepHandler for LlmHandler {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError> {
        let StepKind::Llm(step) = &call.step.kind else {
            return Err(StepError::permanent("bad_spec", "the llm handler was given another step type"));
        };
        let messages: Vec<ChatMessage> = call
            .inputs
            .pointer("/llm/messages")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StepError::permanent("bad_spec", format!("the rendered conversation is malformed: {e}")))?
            .ok_or_else(|| StepError::permanent("bad_spec", "the attempt's input has no rendered conversation"))?;
        let (messages, prompt_gate) = gate_prompt(step.on_injection, messages)?;
        let (provider_name, config, adapter) = self.provider_of(step)?;
        let model = self.models.model(step, config).map(str::to_owned).ok_or_else(|| {
            StepError::permanent("no_provider", format!("the step names no `model` and provider `{provider_name}` has no default model"))
        })?;
        let key = self.api_key(&call, config).await?;
        let schema = match &step.schema {
            Some(s) => Some(compile_schema(s).map_err(|e| StepError::permanent("bad_spec", format!("schema: {e}")))?),
            None => None,
        };
        let mut request = ChatRequest {
            model: model.clone(),
            messages,
            temperature: step.temperature.or(config.temperature),
            max_tokens: step.max_tokens.unwrap_or(config.max_tokens),
            tools: Vec::new(),
            json: schema.is_some(),
        };
        let price = self.models.prices.price(provider_name, &model);
        let mut tally = Tally { usage: LlmUsage { provider: provider_name.to_owned(), model: model.clone(), ..Default::default() } };
        let key = key.as_deref().map(String::as_str);

        let reply = adapter.complete(&request, key).await?;
        tally.add(&reply);
        let mut output = match &schema {
            None => json!({ "text": reply.text }),
            Some(schema) => match checked_json(schema, &reply.text) {
                Ok(value) => json!({ "json": value }),
                Err(errors) => {
                    // One repair round: the answer and what is wrong with it go back to the model.
                    request.messages.push(ChatMessage::new(Role::Assistant, reply.text.clone()));
                    request.messages.push(ChatMessage::new(Role::User, repair_prompt(&errors)));
                    let again = adapter.complete(&request, key).await?;
                    tally.add(&again);
                    match checked_json(schema, &again.text) {
                        Ok(value) => json!({ "json": value, "repaired": { "errors": errors } }),
                        Err(errors) => {
                            return Err(StepError::permanent(
                                "output_invalid",
                                format!("the answer does not satisfy the schema after one repair round: {}", errors.join("; ")),
                            ));
                        }
                    }
                }
            },
        };
        // `checks` with `on_block: retry`: one more turn with the failures as feedback. The
        // worker checks the final output again (with the workflow's own gate mesh).
        if let Some(checks) = call.step.checks.as_ref().filter(|c| c.on_block == CheckOnBlock::Retry) {
            let params = call.inputs.get("params").cloned().unwrap_or(Value::Null);
            let mesh = GateMesh::builtin();
            let results = checks.evaluate(&output, &params, &mesh, &GatePolicy::default());
            if !all_passed(&results) {
                let said = output.get("text").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| output["json"].to_string());
                request.messages.push(ChatMessage::new(Role::Assistant, said));
                request.messages.push(ChatMessage::new(Role::User, check_feedback(&results)));
                let again = adapter.complete(&request, key).await?;
                tally.add(&again);
                output = match &schema {
                    None => json!({ "text": again.text }),
                    Some(schema) => match checked_json(schema, &again.text) {
                        Ok(value) => json!({ "json": value }),
                        Err(errors) => {
                            return Err(StepError::permanent("output_invalid", format!("the answer after check feedback does not satisfy the schema: {}", errors.join("; "))));
                        }
                    },
                };
                output["retried_after_checks"] = serde_json::to_value(&results).expect("check results serialise");
            }
        }
        let cost = price.map_or(Money::ZERO, |p| p.cost(tollgate_engine::llm::Usage { input_tokens: tally.usage.input_tokens, output_tokens: tally.usage.output_tokens }));
        tally.usage.cost = cost;
        output["usage"] = serde_json::to_value(&tally.usage).expect("usage serialises");
        if !prompt_gate.is_empty() {
            output["prompt_gate"] = Value::Array(prompt_gate);
        }
        Ok(StepSuccess { output, cost })
    }
}

/// Pass the rendered prompt through the threat classifier (the built-in rules and default
/// policy: threat score at or above the policy's threshold) before it reaches the model. A
/// detection blocks the step, is stripped from the text, or is recorded, as `on_injection`
/// says. Returns the messages to send and what was found (signals and offsets, never text).
fn gate_prompt(on: OnInjection, mut messages: Vec<ChatMessage>) -> Result<(Vec<ChatMessage>, Vec<Value>), StepError> {
    let mesh = GateMesh::builtin();
    let policy = GatePolicy::default();
    let mut found = Vec::new();
    for (i, m) in messages.iter_mut().enumerate() {
        let out = mesh.scan_text(&m.content, &policy, &mut RedactionMap::new());
        let Some(threat) = out.verdict.threat.as_ref().filter(|t| t.score >= policy.threat_threshold) else { continue };
        let mut spans: Vec<(usize, usize)> =
            out.verdict.findings.iter().filter(|f| f.category == "threat").map(|f| (f.span.start, f.span.end)).collect();
        spans.sort_unstable();
        let action = match on {
            OnInjection::Block => {
                return Err(StepError::permanent(
                    "prompt_injection",
                    format!(
                        "the rendered prompt (messages[{i}], {:?}) looks like a prompt injection (score {:.2}; signals: {}); no call was made",
                        m.role,
                        threat.score,
                        threat.signals.join(", ")
                    ),
                ));
            }
            OnInjection::Strip => {
                let mut text = String::with_capacity(m.content.len());
                let mut at = 0;
                for (start, end) in &spans {
                    if *start >= at && *end <= m.content.len() && m.content.is_char_boundary(*start) && m.content.is_char_boundary(*end) {
                        text.push_str(&m.content[at..*start]);
                        text.push_str("[removed by the prompt gate]");
                        at = *end;
                    }
                }
                text.push_str(&m.content[at..]);
                m.content = text;
                "strip"
            }
            OnInjection::Proceed => "proceed",
        };
        found.push(json!({ "message": i, "score": threat.score, "signals": threat.signals, "spans": spans, "action": action }));
    }
    Ok((messages, found))
}

/// What the model is told after an answer that failed the step's checks.
fn check_feedback(results: &[tollgate_engine::checks::CheckResult]) -> String {
    let failed: Vec<String> = results.iter().filter(|r| !r.passed).map(|r| format!("- {}: {}", r.name, r.evidence.join("; "))).collect();
    format!("Your answer failed these checks:\n{}\nAnswer again, in full, fixing them.", failed.join("\n"))
}

/// What the model is told after an invalid answer.
fn repair_prompt(errors: &[String]) -> String {
    format!(
        "Your answer is not valid: it must be a single JSON value satisfying the JSON Schema you were given.\nProblems:\n- {}\nAnswer again with the corrected JSON only.",
        errors.join("\n- ")
    )
}

/// The answer as JSON satisfying `schema`, or what is wrong with it. A Markdown code fence
/// around the JSON is tolerated (models add one).
fn checked_json(schema: &(boon::Schemas, boon::SchemaIndex), text: &str) -> Result<Value, Vec<String>> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .unwrap_or(trimmed);
    let value: Value = serde_json::from_str(body.trim()).map_err(|e| vec![format!("the answer is not JSON: {e}")])?;
    let errors = schema_errors(schema, &value);
    if errors.is_empty() { Ok(value) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_in_a_code_fence_is_read_and_checked() {
        let schema = compile_schema(&json!({"type": "object", "required": ["risk"], "properties": {"risk": {"enum": ["low", "high"]}}})).unwrap();
        assert_eq!(checked_json(&schema, "```json\n{\"risk\": \"low\"}\n```").unwrap(), json!({"risk": "low"}));
        assert!(checked_json(&schema, "{\"risk\": \"medium\"}").unwrap_err().iter().any(|e| e.contains("risk")));
        assert!(checked_json(&schema, "sure! here it is").unwrap_err()[0].contains("not JSON"));
    }
}
