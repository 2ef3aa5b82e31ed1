//! Tollgate's connectors: the outside world behind the engine's ports.
//!
//! - [`store`]: Redis and SQLite implementations of `tollgate_engine::store::Backend`.
//! - [`steps`]: step handlers that reach outside the process (`code` sandbox, `api_call` HTTP,
//!   `llm`, `research`).
//! - [`llm`]: model-provider adapters (OpenAI Chat Completions, Anthropic Messages).
//! - [`docs`]: document collections (ingest, per-owner full-text index sealed in the store).

pub mod docs;
pub mod llm;
pub mod steps;
pub mod store;
