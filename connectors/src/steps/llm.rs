//! `llm` steps: one conversation with a configured model provider per attempt.
//!
//! The conversation comes rendered in the attempt's input (`llm.messages`, rendered by the run
//! from the step's templates, so it is sealed with the attempt). [`ModelCalls`] carries it:
//! the step's provider (or the default one) and its API key from the workflow owner's secret
//! store, the prompt gate, the turn loop over the step's turn journal. With a `schema`, the
//! answer must be JSON satisfying it: an invalid answer is sent back once with the validation
//! errors, and a second invalid answer fails the attempt (`output_invalid`, with the errors).
//!
//! With `tools`, the conversation is a loop — model turn, tool calls carried out by Tollgate
//! ([`ToolRunner`]), their results, the next turn — bounded by `max_turns`, journaled turn by
//! turn. A tool marked `authorize: true` that the run has not allowed ends the attempt with a
//! `ToolAsk`: the run asks a human and continues with a new attempt once answered (a denial
//! goes to the model as the tool's result).
//!
//! Output: `{"text": …}` or `{"json": …}`, plus `usage` (provider, model, calls, tokens in and
//! out, cost — over the whole conversation) and, with tools, `tool_calls` (id, tool, status).
//! The cost an attempt reports is what its own calls cost, exactly.

use std::sync::Arc;

use async_trait::async_trait;
use tollgate_engine::spec::StepKind;
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};

use crate::steps::model::{ModelCalls, rendered_prompt};
use crate::steps::tools::ToolRunner;

/// Runs `llm` steps against the configured providers.
pub struct LlmHandler {
    models: Arc<ModelCalls>,
    tools: ToolRunner,
}

impl LlmHandler {
    pub fn new(models: Arc<ModelCalls>, tools: ToolRunner) -> Self {
        Self { models, tools }
    }
}

#[async_trait]
impl StepHandler for LlmHandler {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError> {
        let StepKind::Llm(step) = &call.step.kind else {
            return Err(StepError::permanent("bad_spec", "the llm handler was given another step type"));
        };
        let prompt = rendered_prompt(&call)?;
        let mut log = self.models.turns(&call).await?;
        self.models.converse(&call, step, prompt, &mut log, Some(&self.tools), &|answer| answer).await
    }
}
