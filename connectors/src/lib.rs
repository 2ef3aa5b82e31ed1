//! Tollgate's connectors: the outside world behind the engine's ports.
//!
//! - [`store`]: Redis and SQLite implementations of `tollgate_engine::store::Backend`.
//! - [`steps`]: step handlers that reach outside the process (`code` sandbox, `api_call` HTTP).

pub mod steps;
pub mod store;
