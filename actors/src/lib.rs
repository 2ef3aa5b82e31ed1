//! The running Tollgate system: supervision tree, run actors, apalis step workers, admin HTTP,
//! CLI and configuration. `main.rs` only parses the command line and calls into here.

pub mod queue;
