//! Support for Tollgate's end-to-end tests: the store conformance suite and the harness
//! (systems on both backends, a scriptable local HTTP server, waiting with deadlines, a store
//! outage on demand).
pub mod dovecot;
pub mod faults;
pub mod harness;
pub mod pki;
pub mod smtp_sink;
pub mod store_conformance;
pub mod triggers;
