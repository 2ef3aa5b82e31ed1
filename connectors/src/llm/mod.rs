//! Model providers: adapters of the engine's [`ModelProvider`] port to the two protocols in use
//! — OpenAI Chat Completions ([`openai`], also vLLM, llama.cpp server, Ollama) and Anthropic
//! Messages ([`anthropic`]) — over one HTTP exchange with retries ([`http`]).

pub mod anthropic;
pub mod http;
pub mod openai;

use std::sync::Arc;

use tollgate_engine::llm::{ModelProvider, ProviderConfig, ProviderKind};

/// The adapter for a configured provider.
pub fn provider(config: &ProviderConfig) -> Result<Arc<dyn ModelProvider>, String> {
    Ok(match config.kind {
        ProviderKind::Openai => Arc::new(openai::OpenAi::new(config)?),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(config)?),
    })
}
