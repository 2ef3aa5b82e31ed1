//! Tollgate's connectors: the outside world behind the engine's ports.
//!
//! - [`store`]: Redis and SQLite implementations of `tollgate_engine::store::Backend`.
//! - [`steps`]: step handlers that reach outside the process (`code` sandbox, `api_call` HTTP, `llm`).
//! - [`llm`]: model-provider adapters (OpenAI Chat Completions, Anthropic Messages).

pub mod llm;
pub mod steps;
pub mod store;
