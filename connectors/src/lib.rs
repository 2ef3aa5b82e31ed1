//! Tollgate's connectors: the outside world behind the engine's ports.
//!
//! - [`connections`]: runtime clients of owners' named connections (smtp, imap, http).
//! - [`store`]: Redis and SQLite implementations of `tollgate_engine::store::Backend`.
//! - [`steps`]: step handlers that reach outside the process (`code` sandbox, `api_call` HTTP,
//!   `llm`, `research`, `event`).
//! - [`llm`]: model-provider adapters (OpenAI Chat Completions, Anthropic Messages).
//! - [`docs`]: document collections (ingest, per-owner full-text index sealed in the store).
//! - [`events`]: the internal event bus on Redis streams and on a SQLite table.
//! - [`imap`]: the email-inbound source (IMAP IDLE/poll, parsing, dedup keys, mailbox lease).
//! - [`tls`]: a `ca_file`'s certificates and failed handshakes said plainly (IMAP and SMTP).

pub mod connections;
pub mod docs;
pub mod events;
pub mod imap;
pub mod llm;
pub mod steps;
pub mod store;
pub mod tls;
