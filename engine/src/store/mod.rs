//! Persistence: the [`Backend`] port (ids in, sealed bytes out) and the typed, sealing [`Store`].
//!
//! Backends (Redis, SQLite, in-memory) only ever see keys made of ids and values that
//! [`Store`] has already sealed with the owning workflow's key, so "nothing readable at rest"
//! holds by construction, whatever the backend. The exceptions hold ids and numbers only: the
//! run → workflow pointer, lease records ([`lease`]) and process heartbeats. The same conformance suite
//! (`tollgate-tests::store_conformance`) runs against every backend.

mod backend;
pub mod chain;
mod connections;
mod fires;
pub mod keys;
pub mod lease;
mod listing;
pub mod memory;
mod notes;
mod notifications;
mod receipt_key;
mod records;
mod requests;
mod secrets;
mod typed;
mod users;

pub use backend::{Backend, StoreError};
pub use chain::{ChainLink, ChainedEntry, JournalHead};
pub use connections::EmailSendRecord;
pub use fires::DEFAULT_ATTACHMENT_TTL;
pub use lease::{Lease, LeaseGrant};
pub use listing::{RunListing, RunPage};
pub use notes::{Note, NoteFilter};
pub use notifications::Notification;
pub use records::*;
pub use secrets::valid_secret_name;
pub use typed::Store;
