//! The requests a run makes of humans, one module per mode: each builds the smallest question,
//! the context needed to answer it (never more than the run's gated, so redacted, data) and
//! who is asked. Adding a mode is adding its module here and its variant in [`HumanMode`]
//! (`run::event`); `Tollgate::decide` checks which decisions a mode accepts, and
//! `escalation.rs` (with `spec::escalation`) which defaults its escalation may apply.
//!
//! [`HumanMode`]: crate::run::HumanMode

mod approval;
mod budget;
mod escalation;
mod guidance;
mod tool_authorisation;

pub(crate) use approval::approval_request;
pub(crate) use budget::{budget_request, child_budget_request};
pub(crate) use escalation::{budget_escalation_at, defaults_due, escalation_at, policy_decision, policy_reason};
pub use escalation::{escalation_level, escalation_timers, escalations, slot_mode};
pub(crate) use guidance::{guidance_request, prompt_guidance_request};
pub(crate) use tool_authorisation::tool_authorisation_request;
