//! Anthropic Messages (`POST {base_url}/messages`, `anthropic-version: 2023-06-01`). The key
//! goes as `x-api-key`; system messages become the top-level `system`; tool calls are
//! `tool_use` content blocks and their results `tool_result` blocks in a user message.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tollgate_engine::llm::{ChatReply, ChatRequest, ModelProvider, ProviderConfig, Role, ToolCall, Usage};
use tollgate_engine::step::StepError;

use crate::llm::http::Exchange;

pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct Anthropic {
    url: String,
    http: Exchange,
}

impl Anthropic {
    pub fn new(config: &ProviderConfig) -> Result<Self, String> {
        Ok(Self { url: format!("{}/messages", config.base_url.trim_end_matches('/')), http: Exchange::new(config)? })
    }
}

/// The request body for `request`.
pub fn body(request: &ChatRequest) -> Value {
    let system: Vec<&str> =
        request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
    let mut messages: Vec<Value> = Vec::new();
    for m in request.messages.iter().filter(|m| m.role != Role::System) {
        let (role, content) = match m.role {
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({ "type": "text", "text": m.content }));
                }
                for c in &m.tool_calls {
                    blocks.push(json!({ "type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments }));
                }
                ("assistant", Value::Array(blocks))
            }
            Role::Tool => (
                "user",
                json!([{ "type": "tool_result", "tool_use_id": m.tool_call_id.clone().unwrap_or_default(), "content": m.content }]),
            ),
            _ => ("user", json!([{ "type": "text", "text": m.content }])),
        };
        // Consecutive messages of one role are merged: the protocol wants them alternating.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let (Some(a), Some(b)) = (last["content"].as_array_mut(), content.as_array()) {
                    a.extend(b.iter().cloned());
                }
            }
            _ => messages.push(json!({ "role": role, "content": content })),
        }
    }
    let mut body = json!({ "model": request.model, "max_tokens": request.max_tokens, "messages": messages });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters }))
            .collect();
    }
    body
}

/// Read an answer.
pub fn reply(v: &Value) -> Result<ChatReply, StepError> {
    let bad = |what: &str| StepError::retryable("model_reply", format!("the Messages answer has {what}"));
    let blocks = v.get("content").and_then(Value::as_array).ok_or_else(|| bad("no `content`"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("a tool_use block without an id"))?
                    .to_owned(),
                name: b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("a tool_use block without a name"))?
                    .to_owned(),
                arguments: b.get("input").cloned().unwrap_or(json!({})),
            }),
            _ => {}
        }
    }
    let usage = Usage {
        input_tokens: v.pointer("/usage/input_tokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: v.pointer("/usage/output_tokens").and_then(Value::as_u64).unwrap_or(0),
    };
    Ok(ChatReply {
        text,
        tool_calls,
        usage,
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
        finish: v.get("stop_reason").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

#[async_trait]
impl ModelProvider for Anthropic {
    async fn complete(&self, request: &ChatRequest, api_key: Option<&str>) -> Result<ChatReply, StepError> {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(API_VERSION));
        if let Some(key) = api_key {
            let value = HeaderValue::from_str(key)
                .map_err(|_| StepError::permanent("model_auth", "the API key is not a valid header value"))?;
            headers.insert(HeaderName::from_static("x-api-key"), value);
        }
        reply(&self.http.post(&self.url, headers, &body(request)).await?)
    }
}
