//! Model conversations: what an `llm` step and a `research` step's summary share.
//!
//! [`ModelCalls`] holds the configured providers (an adapter each), reads a provider's API key
//! from the workflow owner's secret store, passes the prompt through the prompt gate (the
//! threat classifier) and carries an attempt's conversation to its final answer over the
//! slot's turn journal ([`TurnLog`]): model calls, tool calls ([`ToolRunner`]), a schema repair
//! round, and one feedback round for failed checks (`on_block: retry`: the step's `checks`, a
//! summary's citations). Every answer, tool result and feedback message is appended to the
//! turn journal (sealed, in the store) before the conversation goes on, and an attempt starts
//! from what the journal holds: after a crash or a passivation no recorded model call is made
//! again and no recorded tool call re-run. A tool marked `authorize: true` that the run has
//! not allowed ends the attempt with a [`ToolAsk`].
//!
//! The output is what the step makes of the final answer (`{text}` or `{json}`), plus `usage`
//! (provider, model, calls, tokens in and out, cost — over the whole conversation), with
//! tools `tool_calls`, and `prompt_gate` when the classifier found something. The cost an
//! attempt reports is what its own calls cost, exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tollgate_engine::checks::{CheckOnBlock, all_passed};
use tollgate_engine::conversation::{
    Conversation, FeedbackKind, Next, PromptHold, Suspension, ToolAsk, ToolCallStatus, ToolGrant, TurnEntry, bounded,
};
use tollgate_engine::gates::{GateMesh, GatePolicy, RedactionMap};
use tollgate_engine::ids::{RunId, StepId, WorkflowId};
use tollgate_engine::llm::{
    ChatMessage, ChatRequest, LlmUsage, ModelCatalog, ModelProvider, ProviderConfig, Role, ToolDef,
};
use tollgate_engine::money::Money;
use tollgate_engine::spec::{
    LlmStep, MAX_TOOL_CALLS_PER_TURN, MAX_TOOL_RESULT_BYTES, OnInjection, compile_schema, schema_errors,
};
use tollgate_engine::step::{StepError, StepInvocation, StepSuccess};
use tollgate_engine::store::{Store, StoreError};

use crate::steps::tools::ToolRunner;

/// The configured model providers, and conversations with them.
pub struct ModelCalls {
    store: Arc<Store>,
    models: Arc<ModelCatalog>,
    adapters: BTreeMap<String, Arc<dyn ModelProvider>>,
}

impl ModelCalls {
    /// The providers of `models`; a provider whose adapter cannot be built (its HTTP client)
    /// is an error naming it.
    pub fn new(store: Arc<Store>, models: Arc<ModelCatalog>) -> Result<Self, String> {
        let mut adapters = BTreeMap::new();
        for (name, config) in &models.providers {
            adapters.insert(name.clone(), crate::llm::provider(config).map_err(|e| format!("provider `{name}`: {e}"))?);
        }
        Ok(Self { store, models, adapters })
    }

    /// The provider of `step`: its name, settings and adapter.
    fn provider_of<'a>(
        &'a self,
        step: &'a LlmStep,
    ) -> Result<(&'a str, &'a ProviderConfig, &'a Arc<dyn ModelProvider>), StepError> {
        let Some(name) = self.models.provider_name(step) else {
            return Err(StepError::permanent(
                "no_provider",
                "no model provider is configured (see `[llm.providers.NAME]` in the configuration)",
            ));
        };
        match (self.models.providers.get(name), self.adapters.get(name)) {
            (Some(config), Some(adapter)) => Ok((name, config, adapter)),
            _ => {
                let known: Vec<&str> = self.models.providers.keys().map(String::as_str).collect();
                Err(StepError::permanent(
                    "no_provider",
                    format!("no provider `{name}` is configured (configured: {})", known.join(", ")),
                ))
            }
        }
    }

    async fn api_key(
        &self,
        call: &StepInvocation<'_>,
        config: &ProviderConfig,
    ) -> Result<Option<zeroize::Zeroizing<String>>, StepError> {
        let Some(name) = &config.api_key_secret else { return Ok(None) };
        let unavailable =
            |e: StoreError| StepError::retryable("secret_missing", format!("reading secret `{name}`: {e}"));
        let owner = self.store.workflow_owner(call.workflow).await.map_err(unavailable)?;
        match self.store.secret(&owner, name).await.map_err(unavailable)? {
            Some(key) => Ok(Some(key)),
            None => Err(StepError::permanent(
                "secret_missing",
                format!(
                    "owner `{owner}` has no secret `{name}` (set it with `tollgate secrets set {name}`, the value on stdin)"
                ),
            )),
        }
    }

    /// The attempt's turn journal — the slot and conversation its input names (`llm.slot`,
    /// `llm.conversation`) — read from the store.
    pub async fn turns(&self, call: &StepInvocation<'_>) -> Result<TurnLog<'_>, StepError> {
        let number = call.inputs.pointer("/llm/conversation").and_then(Value::as_u64).unwrap_or(0) as u32;
        let slot = call
            .inputs
            .pointer("/llm/slot")
            .and_then(Value::as_str)
            .map_or_else(|| call.step_id().clone(), StepId::from);
        let mut log = TurnLog {
            store: &self.store,
            workflow: call.workflow.clone(),
            run: call.run.clone(),
            slot,
            number,
            conversation: Conversation::default(),
        };
        log.read().await?;
        Ok(log)
    }

    /// Carry the conversation of the attempt `call` with the model `step` names on to its final
    /// answer, from what `log` holds. `prompt`: the rendered messages (for a summary, with its
    /// hits); `tools`: what carries out the step's tool calls; `shape`: the step's output made
    /// of the final answer (`{text}` or `{json}`) — what its checks look at.
    pub async fn converse(
        &self,
        call: &StepInvocation<'_>,
        step: &LlmStep,
        prompt: Vec<ChatMessage>,
        log: &mut TurnLog<'_>,
        tools: Option<&ToolRunner>,
        shape: &(dyn Fn(Value) -> Value + Sync),
    ) -> Result<StepSuccess, StepError> {
        let released = call.inputs.pointer("/llm/prompt_released").and_then(Value::as_bool).unwrap_or(false);
        let (prompt, prompt_gate) = match gate_prompt(step.on_injection, prompt, released)? {
            Gated::Send(messages, found) => (messages, found),
            // Stop before any call: the run asks for guidance.
            Gated::Hold(hold) => {
                return Ok(StepSuccess {
                    output: Value::Null,
                    cost: Money::ZERO,
                    suspend: Some(Suspension::PromptGuidance(hold)),
                });
            }
        };
        let (provider_name, config, adapter) = self.provider_of(step)?;
        let model = self.models.model(step, config).map(str::to_owned).ok_or_else(|| {
            StepError::permanent(
                "no_provider",
                format!("the step names no `model` and provider `{provider_name}` has no default model"),
            )
        })?;
        let key = self.api_key(call, config).await?;
        let key = key.as_deref().map(String::as_str);
        let schema = match &step.schema {
            Some(s) => Some(compile_schema(s).map_err(|e| StepError::permanent("bad_spec", format!("schema: {e}")))?),
            None => None,
        };
        let price = self.models.prices.price(provider_name, &model);
        let reserved: Option<Money> =
            call.inputs.pointer("/llm/reserved").cloned().and_then(|v| serde_json::from_value(v).ok());
        let grants: Grants = call
            .inputs
            .pointer("/llm/grants")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let params = call.inputs.get("params").cloned().unwrap_or(Value::Null);
        let tool_defs: Vec<ToolDef> = step.tools.iter().map(|t| t.definition()).collect();
        let tools_bytes =
            if tool_defs.is_empty() { 0 } else { serde_json::to_vec(&tool_defs).map_or(0, |d| d.len() as u64) };
        let with_tools = !tool_defs.is_empty();
        let request_for = |messages: Vec<ChatMessage>| ChatRequest {
            model: model.clone(),
            messages,
            temperature: step.temperature.or(config.temperature),
            max_tokens: step.max_tokens.unwrap_or(config.max_tokens),
            tools: tool_defs.clone(),
            json: schema.is_some(),
        };

        let answer = loop {
            match log.conversation.next() {
                Next::CallModel => {
                    if with_tools
                        && !log.conversation.ends_with_feedback()
                        && log.conversation.loop_turns() >= step.turns()
                    {
                        return Err(StepError::permanent(
                            "max_turns",
                            format!("the model was still calling tools after {} turns (`max_turns`)", step.turns()),
                        ));
                    }
                    let request = request_for(log.conversation.messages(&prompt));
                    if let (Some(reserved), Some(price), true) = (reserved, price, with_tools) {
                        let worst =
                            price.worst_case(conversation_bytes(&request.messages) + tools_bytes, request.max_tokens);
                        let spent = log.conversation.cost_of_attempt(call.attempt);
                        if spent + worst > reserved {
                            return Err(StepError::permanent(
                                "reservation_exceeded",
                                format!(
                                    "the next model call could cost up to {worst} and {spent} is spent of the {reserved} reserved; not made"
                                ),
                            ));
                        }
                    }
                    let mut reply = adapter.complete(&request, key).await?;
                    if !with_tools {
                        // No tools were offered: a call the model makes anyway is not ours to run.
                        reply.tool_calls.clear();
                    }
                    let cost = price.map_or(Money::ZERO, |p| p.cost(reply.usage));
                    log.append(TurnEntry::Answer { attempt: call.attempt, reply, cost }).await?;
                }
                Next::RunTool { call: tool_call, index, reason } => {
                    let tool_call = tool_call.clone();
                    let reason = reason.to_owned();
                    let tool = step.tool(&tool_call.name);
                    let (status, content) = if index >= MAX_TOOL_CALLS_PER_TURN as usize {
                        (
                            ToolCallStatus::NotRun,
                            format!("not run: at most {MAX_TOOL_CALLS_PER_TURN} tool calls are carried out per turn"),
                        )
                    } else if let (Some(tool), Some(runner)) = (tool, tools) {
                        let decided = grants.calls.get(&tool_call.id);
                        let asks = tool.authorize.asks(&tool_call.arguments);
                        match (asks, decided, grants.run.contains_key(&tool.name)) {
                            (Some(_), Some(ToolGrant::Deny { by, reason }), _) => {
                                (ToolCallStatus::Denied, format!("denied by {by}: {reason}"))
                            }
                            (Some(because), None, false) => {
                                // Stop here and ask: the run passivates while a human decides.
                                let ask = ToolAsk {
                                    call_id: tool_call.id.clone(),
                                    tool: tool.name.clone(),
                                    arguments: tool_call.arguments.clone(),
                                    reason,
                                    turn: log.conversation.answers(),
                                    because,
                                };
                                return Ok(StepSuccess {
                                    output: Value::Null,
                                    cost: log.conversation.cost_of_attempt(call.attempt),
                                    suspend: Some(Suspension::ToolAuthorisation(ask)),
                                });
                            }
                            _ => {
                                let (status, content) =
                                    runner.run(call, tool, &tool_call.id, &tool_call.arguments, &params).await;
                                (status, gate_tool_result(step.on_injection, content))
                            }
                        }
                    } else {
                        let known: Vec<&str> = step.tools.iter().map(|t| t.name.as_str()).collect();
                        (
                            ToolCallStatus::NotRun,
                            format!(
                                "not run: there is no tool `{}` (the tools are: {})",
                                tool_call.name,
                                known.join(", ")
                            ),
                        )
                    };
                    let content = bounded(content, MAX_TOOL_RESULT_BYTES as usize);
                    log.append(TurnEntry::ToolResult {
                        attempt: call.attempt,
                        call_id: tool_call.id,
                        tool: tool_call.name,
                        status,
                        content,
                    })
                    .await?;
                }
                Next::Final { text } => {
                    let text = text.to_owned();
                    let answer = match &schema {
                        None => json!({ "text": text }),
                        Some(schema) => match checked_json(schema, &text) {
                            Ok(value) => json!({ "json": value }),
                            Err(errors) if !log.conversation.has_feedback(FeedbackKind::Repair) => {
                                // One repair round: what is wrong goes back to the model.
                                let text = bounded(repair_prompt(&errors), MAX_TOOL_RESULT_BYTES as usize);
                                log.append(TurnEntry::Feedback {
                                    attempt: call.attempt,
                                    kind: FeedbackKind::Repair,
                                    text,
                                    details: json!(errors),
                                })
                                .await?;
                                continue;
                            }
                            Err(errors) => {
                                return Err(StepError::permanent(
                                    "output_invalid",
                                    format!(
                                        "the answer does not satisfy the schema after one repair round: {}",
                                        errors.join("; ")
                                    ),
                                ));
                            }
                        },
                    };
                    // `on_block: retry` (the step's `checks`, a summary's citations): one more
                    // turn with the failures as feedback. The worker checks the final output
                    // again (with the workflow's mesh) and records the results.
                    if call.step.check_on_block() == Some(CheckOnBlock::Retry)
                        && !log.conversation.has_feedback(FeedbackKind::Checks)
                    {
                        let output = shape(answer.clone());
                        let results = call
                            .step
                            .evaluate_checks(&output, &params, &GateMesh::builtin(), &GatePolicy::default())
                            .map(|(_, r)| r)
                            .unwrap_or_default();
                        if !all_passed(&results) {
                            let text = bounded(check_feedback(&results), MAX_TOOL_RESULT_BYTES as usize);
                            let details = serde_json::to_value(&results).expect("check results serialise");
                            log.append(TurnEntry::Feedback {
                                attempt: call.attempt,
                                kind: FeedbackKind::Checks,
                                text,
                                details,
                            })
                            .await?;
                            continue;
                        }
                    }
                    break answer;
                }
            }
        };
        let conversation = &log.conversation;
        let mut output = shape(answer);
        if let Some(errors) = conversation.feedback(FeedbackKind::Repair) {
            output["repaired"] = json!({ "errors": errors });
        }
        if let Some(results) = conversation.feedback(FeedbackKind::Checks) {
            output["retried_after_checks"] = results.clone();
        }
        let usage = conversation.usage();
        let usage = LlmUsage {
            provider: provider_name.to_owned(),
            model: conversation
                .entries
                .iter()
                .rev()
                .find_map(|e| match e {
                    TurnEntry::Answer { reply, .. } if !reply.model.is_empty() => Some(reply.model.clone()),
                    _ => None,
                })
                .unwrap_or(model.clone()),
            calls: conversation.answers(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost: price.map_or(Money::ZERO, |p| p.cost(usage)),
        };
        output["usage"] = serde_json::to_value(&usage).expect("usage serialises");
        if with_tools {
            output["tool_calls"] = Value::Array(conversation.tool_calls());
        }
        if !prompt_gate.is_empty() {
            output["prompt_gate"] = Value::Array(prompt_gate);
        }
        // What this attempt's calls cost; earlier attempts of the step settled their own.
        Ok(StepSuccess::new(output, conversation.cost_of_attempt(call.attempt)))
    }
}

/// The conversation the run rendered into the attempt's input (`llm.messages`).
pub fn rendered_prompt(call: &StepInvocation<'_>) -> Result<Vec<ChatMessage>, StepError> {
    call.inputs
        .pointer("/llm/messages")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| StepError::permanent("bad_spec", format!("the rendered conversation is malformed: {e}")))?
        .ok_or_else(|| StepError::permanent("bad_spec", "the attempt's input has no rendered conversation"))
}

/// Where an attempt's conversation is journaled: the slot's turn log, read at the start and
/// appended to (sealed, before the conversation goes on) after every answer and tool result.
pub struct TurnLog<'a> {
    store: &'a Store,
    workflow: WorkflowId,
    run: RunId,
    /// Whose turn journal: the step, or an item `<step>.<k>` of a `for_each` step.
    slot: StepId,
    /// Which of the slot's conversations (a new one after each permanent failure).
    number: u32,
    pub conversation: Conversation,
}

impl TurnLog<'_> {
    async fn read(&mut self) -> Result<(), StepError> {
        let entries =
            self.store.turns(&self.workflow, &self.run, &self.slot, self.number).await.map_err(journal_error)?;
        self.conversation = Conversation::new(entries);
        Ok(())
    }

    /// Record `entry`. Another attempt writing first (a paused worker woken up beside its
    /// successor) is a conflict: the log is read again, and the caller goes on from what is
    /// recorded (`false`).
    pub async fn append(&mut self, entry: TurnEntry) -> Result<bool, StepError> {
        let len = self.conversation.entries.len() as u64;
        match self.store.append_turn(&self.workflow, &self.run, &self.slot, self.number, len, &entry).await {
            Ok(()) => {
                self.conversation.entries.push(entry);
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => {
                self.read().await?;
                Ok(false)
            }
            Err(e) => Err(journal_error(e)),
        }
    }
}

fn journal_error(e: StoreError) -> StepError {
    StepError::retryable("turn_journal", format!("the step's turn journal: {e}"))
}

/// The answers of the human so far (`llm.grants` in the attempt's input, from the journal).
#[derive(Default, serde::Deserialize)]
struct Grants {
    #[serde(default)]
    calls: BTreeMap<String, ToolGrant>,
    /// Tools allowed for the rest of the run, with who allowed them.
    #[serde(default)]
    run: BTreeMap<String, String>,
}

/// The size a request's conversation has, in bytes (what the reservation bounds).
fn conversation_bytes(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| {
            m.content.len() as u64
                + m.tool_calls
                    .iter()
                    .map(|c| (c.id.len() + c.name.len() + c.arguments.to_string().len()) as u64)
                    .sum::<u64>()
        })
        .sum()
}

/// A tool's result is untrusted text going into the model: it passes the threat classifier
/// like the prompt. A detection is withheld (`block`), stripped, or kept (`proceed`), as the
/// step's `on_injection` says; the model is told when something was withheld.
fn gate_tool_result(on: OnInjection, content: String) -> String {
    // A result cannot wait for guidance (the model is mid-conversation): withheld like `block`.
    let on = if on == OnInjection::Guidance { OnInjection::Block } else { on };
    match gate_prompt(on, vec![ChatMessage::new(Role::Tool, content)], false) {
        Ok(Gated::Send(mut messages, _)) => messages.pop().map(|m| m.content).unwrap_or_default(),
        Ok(Gated::Hold(_)) => "[the tool's result was withheld by the prompt gate]".into(),
        Err(e) => format!(
            "[the tool's result was withheld by the prompt gate: {}]",
            e.message.split(';').next().unwrap_or("injection")
        ),
    }
}

/// Pass the rendered prompt through the threat classifier (the built-in rules and default
/// policy: threat score at or above the policy's threshold) before it reaches the model. A
/// detection blocks the step, is stripped from the text, or is recorded, as `on_injection`
/// says. Returns the messages to send and what was found (signals and offsets, never text).
fn gate_prompt(on: OnInjection, mut messages: Vec<ChatMessage>, released: bool) -> Result<Gated, StepError> {
    let mesh = GateMesh::builtin();
    let policy = GatePolicy::default();
    let mut found = Vec::new();
    for (i, m) in messages.iter_mut().enumerate() {
        let out = mesh.scan_text(&m.content, &policy, &mut RedactionMap::new());
        let Some(threat) = out.verdict.threat.as_ref().filter(|t| t.score >= policy.threat_threshold) else { continue };
        let mut spans: Vec<(usize, usize)> = out
            .verdict
            .findings
            .iter()
            .filter(|f| f.category == "threat")
            .map(|f| (f.span.start, f.span.end))
            .collect();
        spans.sort_unstable();
        let action = match on {
            OnInjection::Guidance if released => "released by a human",
            OnInjection::Guidance => {
                let flagged = spans
                    .iter()
                    .filter(|(a, b)| {
                        *b <= m.content.len() && m.content.is_char_boundary(*a) && m.content.is_char_boundary(*b)
                    })
                    .map(|(a, b)| m.content[*a..*b].to_owned())
                    .collect();
                let hold = PromptHold {
                    message: i,
                    role: m.role,
                    score: (f64::from(threat.score) * 100.0).round() / 100.0,
                    signals: threat.signals.clone(),
                    flagged,
                };
                return Ok(Gated::Hold(hold));
            }
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
                    if *start >= at
                        && *end <= m.content.len()
                        && m.content.is_char_boundary(*start)
                        && m.content.is_char_boundary(*end)
                    {
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
        found.push(
            json!({ "message": i, "score": threat.score, "signals": threat.signals, "spans": spans, "action": action }),
        );
    }
    Ok(Gated::Send(messages, found))
}

/// What the prompt gate lets through: the messages to send and what it found (signals and
/// offsets, never text), or a finding a human must look at first.
enum Gated {
    Send(Vec<ChatMessage>, Vec<Value>),
    Hold(PromptHold),
}

/// What the model is told after an answer that failed the step's checks.
fn check_feedback(results: &[tollgate_engine::checks::CheckResult]) -> String {
    let failed: Vec<String> =
        results.iter().filter(|r| !r.passed).map(|r| format!("- {}: {}", r.name, r.evidence.join("; "))).collect();
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
        let schema = compile_schema(
            &json!({"type": "object", "required": ["risk"], "properties": {"risk": {"enum": ["low", "high"]}}}),
        )
        .unwrap();
        assert_eq!(checked_json(&schema, "```json\n{\"risk\": \"low\"}\n```").unwrap(), json!({"risk": "low"}));
        assert!(checked_json(&schema, "{\"risk\": \"medium\"}").unwrap_err().iter().any(|e| e.contains("risk")));
        assert!(checked_json(&schema, "sure! here it is").unwrap_err()[0].contains("not JSON"));
    }
}
