//! OpenAI Chat Completions (`POST {base_url}/chat/completions`), the protocol OpenAI, vLLM,
//! llama.cpp server, Ollama and most gateways speak. The key goes as `Authorization: Bearer`;
//! JSON output asks for `response_format: {"type": "json_object"}`; tools are `function` tools
//! whose arguments travel as JSON text.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tollgate_engine::llm::{ChatMessage, ChatReply, ChatRequest, ModelProvider, ProviderConfig, Role, ToolCall, Usage};
use tollgate_engine::step::StepError;

use crate::llm::http::Exchange;

#[derive(Debug)]
pub struct OpenAi {
    url: String,
    http: Exchange,
}

impl OpenAi {
    pub fn new(config: &ProviderConfig) -> Result<Self, String> {
        Ok(Self {
            url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            http: Exchange::new(config)?,
        })
    }
}

/// The request body for `request`.
pub fn body(request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(message).collect();
    let mut body = json!({ "model": request.model, "messages": messages, "max_tokens": request.max_tokens });
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
            .collect();
    }
    if request.json {
        body["response_format"] = json!({ "type": "json_object" });
    }
    body
}

fn message(m: &ChatMessage) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut v = json!({ "role": role, "content": m.content });
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments.to_string() } }))
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

/// Read an answer.
pub fn reply(v: &Value) -> Result<ChatReply, StepError> {
    let bad = |what: &str| StepError::retryable("model_reply", format!("the Chat Completions answer has {what}"));
    let choice = v.pointer("/choices/0").ok_or_else(|| bad("no `choices[0]`"))?;
    let message = choice.get("message").ok_or_else(|| bad("no `choices[0].message`"))?;
    let text = message.get("content").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut tool_calls = Vec::new();
    for c in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let name = c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a tool call without a function name"))?;
        let raw = c.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        let arguments =
            serde_json::from_str(raw).map_err(|e| bad(&format!("tool call arguments that are not JSON ({e})")))?;
        let id = c.get("id").and_then(Value::as_str).unwrap_or(name).to_owned();
        tool_calls.push(ToolCall { id, name: name.to_owned(), arguments });
    }
    let usage = Usage {
        input_tokens: v.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: v.pointer("/usage/completion_tokens").and_then(Value::as_u64).unwrap_or(0),
    };
    Ok(ChatReply {
        text,
        tool_calls,
        usage,
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
        finish: choice.get("finish_reason").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

#[async_trait]
impl ModelProvider for OpenAi {
    async fn complete(&self, request: &ChatRequest, api_key: Option<&str>) -> Result<ChatReply, StepError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key {
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| StepError::permanent("model_auth", "the API key is not a valid header value"))?;
            headers.insert(AUTHORIZATION, value);
        }
        reply(&self.http.post(&self.url, headers, &body(request)).await?)
    }
}
