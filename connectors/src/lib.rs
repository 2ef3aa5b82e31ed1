//! Tollgate's connectors: the outside world behind the engine's ports.
//!
//! - [`store`]: Redis and SQLite implementations of `tollgate_engine::store::Backend`.
//! - [`docs`]: document collections (ingest, per-owner full-text index sealed in the store).
//! - [`steps`]: step handlers that reach outside the process (`code` sandbox, `api_call` HTTP).

pub mod docs;
pub mod steps;
pub mod store;
