//! Tollgate's connectors: the outside world behind the engine's ports.
//!
//! - [`store`]: Redis and SQLite implementations of `tollgate_engine::store::Backend`.
//! - [`events`]: the internal event bus on Redis streams and on a SQLite table.
//! - [`imap`]: the email-inbound source (IMAP IDLE/poll, parsing, dedup keys, mailbox lease).
//! - [`steps`]: step handlers that reach outside the process (`code` sandbox, `api_call` HTTP).

pub mod events;
pub mod imap;
pub mod steps;
pub mod store;
