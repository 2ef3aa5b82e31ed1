//! A run's receipt: its record for an auditor, signed with the service's Ed25519 key.
//!
//! A receipt holds a header (run, spec digest, redacted parameters, status, cost, trigger) and
//! one entry per journal entry: the entry's place in the journal's hash chain (`prev`, the
//! event's `digest`, its `link`; see [`crate::store::chain`]) and its audit record (redacted).
//! Every entry is signed on its own (run, index, kind, time, link, record) and the header is
//! signed with the chain's head and length, so [`verify`] can name the first entry that was
//! altered, removed or moved, and a receipt re-signed with another key fails against the
//! service's key. Building one (reading the journal, redacting) is the service's job
//! (`tollgate::receipt`); this module is the format, the signatures and the check.

mod canonical;
mod document;
mod signing;
mod verify;

#[cfg(test)]
mod tests;

pub use canonical::canonical_json;
pub use document::{EntryInput, FORMAT, Receipt, ReceiptEntry};
pub use signing::{ReceiptKey, ReceiptSigner};
pub use verify::{Verified, VerifyError, verify};
