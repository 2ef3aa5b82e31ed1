//! The running Tollgate system: supervision tree, run actors, apalis step workers, admin HTTP,
//! CLI and configuration. `main.rs` only parses the command line and calls into here.

/// Every binary built on this crate (the `tollgate` CLI, the benchmarks, the tests) allocates
/// with mimalloc: a step allocates and frees thousands of small blocks (the code sandbox's
/// context, JSON, sealed records) and glibc's malloc was a tenth of the fan-out's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access;
pub mod audit;
pub mod bootstrap;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod events;
pub mod gate_replay;
pub mod health;
pub mod http;
pub mod lease;
pub mod liveness;
pub mod notify;
pub mod paging;
mod pubsub;
pub mod queue;
pub mod receipt;
pub mod run_actor;
pub mod service;
pub mod subworkflows;
pub mod supervisor;
pub mod system;
pub mod triggers;
pub mod users;
pub mod worker;
