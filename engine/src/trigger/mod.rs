//! Triggers, the pure part: what a fire is and what the fire history records
//! ([`fire`]), and webhook signature verification ([`signature`]).
//!
//! The one fire path (claim the dedup key, start the run, record, acknowledge) is performed in
//! `actors/src/triggers/fire.rs`; the records it writes are here and in `store::fires`.

pub mod fire;
pub mod signature;

pub use fire::{Fire, FireClaim, FireOutcome, FireRecord, RunTrigger, TriggerHealth, TriggerStateRecord};
