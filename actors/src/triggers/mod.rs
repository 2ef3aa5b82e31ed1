//! Triggers: workflows that start themselves. Each trigger declared in a spec (`triggers:`)
//! is a [`TriggerActor`] under the [`TriggerSupervisor`], which restarts it with backoff when
//! it fails; its source (cron, webhook, upload…) turns outside events into fires and hands
//! them to the one [`FirePath`]: claim the dedup key, start the run, record the fire in the
//! workflow's encrypted history, and only then acknowledge.
//!
//! Adding a trigger type: its spec module in `engine/src/spec/triggers/`, a [`TriggerSource`]
//! here (one file), and a line in [`source_for`].

mod actor;
mod board;
mod config;
mod cron;
pub mod event;
mod fire;
pub mod imap;
mod source;
mod supervisor;
pub mod upload;
pub mod webhook;

pub use actor::{TriggerActor, TriggerArgs};
pub use board::{Endpoint, TriggerBoard, TriggerStatus};
pub use config::{TriggersConfig, load_workflows};
pub use fire::{FireError, FirePath, FireResult};
pub use source::{TriggerContext, TriggerError, TriggerSource, source_for};
pub use supervisor::{TriggerSupervisor, TriggerSupervisorMsg, Triggers, start_triggers};
