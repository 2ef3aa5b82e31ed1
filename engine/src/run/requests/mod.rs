//! The requests a run makes of humans, one module per mode: each builds the smallest question,
//! the context needed to answer it (never more than the run's gated, so redacted, data) and
//! who is asked. Adding a mode is adding its module here and its variant in [`HumanMode`]
//! (`run::event`); `Tollgate::decide` checks which decisions a mode accepts.
//!
//! [`HumanMode`]: crate::run::HumanMode

mod approval;
mod budget;
mod guidance;
mod tool_authorisation;

pub(crate) use approval::approval_request;
pub use approval::escalation_timers;
pub(crate) use approval::{escalation_at, policy_decision};
pub(crate) use budget::{budget_request, child_budget_request};
pub(crate) use guidance::{guidance_request, prompt_guidance_request};
pub(crate) use tool_authorisation::tool_authorisation_request;
