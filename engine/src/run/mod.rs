//! The run: a pure state machine. `apply(spec, state, event) -> actions`, no I/O, no clock.
//!
//! The run actor journals each event BEFORE performing the actions `apply` returns; recovery
//! folds the journal through `apply` again ([`replay`]) and re-performs what is outstanding.

mod event;
mod policy;
mod requests;
mod state;
mod subworkflow;

pub mod apply;
pub use apply::{apply, outstanding, replay, start};
pub use event::{Action, ChildOutcome, Decision, Event, HumanMode, HumanRequestSpec, ParentLink, Timer};
pub use policy::{retries, retry_after_failure, retry_delay_ms};
pub use requests::{escalation_level, escalation_timers, escalations, slot_mode};
pub use state::{
    AttemptRecord, AttemptStatus, BudgetState, ChildAsk, FailReason, RunState, RunStatus, Slot, StepDecision,
    StepState, StepStatus,
};
pub use subworkflow::{child_output, child_run_id, open_budget_ask};

#[cfg(test)]
mod tests;
