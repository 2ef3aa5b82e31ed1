//! Tollgate's engine: what a workflow IS and how a run ADVANCES.
//!
//! Pure: no async runtime, no network, no database driver. The outside world plugs in through
//! the ports ([`store::Backend`], [`queue::StepQueue`], [`step::StepHandler`]).

pub mod checks;
pub mod connections;
pub mod conversation;
pub mod crypto;
pub mod egress;
pub mod events;
pub mod expr;
pub mod gates;
pub mod ids;
pub mod llm;
pub mod money;
pub mod queue;
pub mod receipt;
pub mod run;
pub mod spec;
pub mod step;
pub mod store;
pub mod trigger;
pub mod users;
