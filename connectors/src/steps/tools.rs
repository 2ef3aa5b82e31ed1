//! Carrying out an `llm` step's tool calls with the handlers of the job step types: an
//! `api_call` tool is an HTTP request through the same egress guard as an `api_call` step, a
//! `code` tool runs in the same QuickJS sandbox as a `code` step (its `input` is the
//! arguments), a `research` tool searches the owner's collection like a `research` step.
//!
//! The model's arguments are checked against the tool's JSON Schema first: arguments that do
//! not satisfy it are not run, and the model is told why. Templates (`${{ … }}`) of a request
//! or a query see `args` and `params`. The result the model receives is the handler's output
//! as JSON (an error as `error <code>: <message>`), cut to `MAX_TOOL_RESULT_BYTES`. Each call
//! sends `Idempotency-Key: <run>.<step>.<call id>`: the same for every attempt that may run it.

use std::sync::Arc;

use serde_json::{Value, json};
use tollgate_engine::conversation::{ToolCallStatus, bounded};
use tollgate_engine::expr;
use tollgate_engine::spec::{
    MAX_TOOL_RESULT_BYTES, StepKind, StepSpec, ToolBacking, ToolSpec, compile_schema, schema_errors,
};
use tollgate_engine::step::{StepHandler, StepInvocation};

/// The handlers tools are carried out with.
#[derive(Clone)]
pub struct ToolRunner {
    pub api_call: Arc<dyn StepHandler>,
    pub code: Arc<dyn StepHandler>,
    /// Absent where the process has no document store.
    pub research: Option<Arc<dyn StepHandler>>,
}

impl ToolRunner {
    /// Run `tool` with the model's `args` for the `llm` attempt `call`; the result as the model
    /// will read it.
    pub async fn run(
        &self,
        call: &StepInvocation<'_>,
        tool: &ToolSpec,
        call_id: &str,
        args: &Value,
        params: &Value,
    ) -> (ToolCallStatus, String) {
        let schema = match compile_schema(&tool.parameters) {
            Ok(s) => s,
            Err(e) => return (ToolCallStatus::NotRun, format!("the tool's argument schema does not compile: {e}")),
        };
        let errors = schema_errors(&schema, args);
        if !errors.is_empty() {
            return (
                ToolCallStatus::InvalidArguments,
                format!("not run: the arguments do not satisfy the tool's schema: {}", errors.join("; ")),
            );
        }
        let vars = [("args", args), ("params", params)];
        let rendered = |v: Value| {
            expr::render_vars(&v, &vars).map_err(|e| format!("not run: the tool's template could not be rendered: {e}"))
        };
        let (handler, kind, input) = match tool.backing() {
            Some(ToolBacking::ApiCall(request)) => match rendered(serde_json::to_value(request).unwrap_or(Value::Null))
            {
                Ok(r) => (Some(self.api_call.clone()), call.step.kind.clone(), json!({ "request": r })),
                Err(e) => return (ToolCallStatus::Failed, e),
            },
            Some(ToolBacking::Code(code)) => {
                (Some(self.code.clone()), StepKind::Code(code.clone()), json!({ "inputs": args }))
            }
            Some(ToolBacking::Research(research)) => match rendered(Value::String(research.query.clone())) {
                Ok(q) => (self.research.clone(), StepKind::Research(research.clone()), json!({ "query": q })),
                Err(e) => return (ToolCallStatus::Failed, e),
            },
            None => return (ToolCallStatus::NotRun, "the tool has no backing".into()),
        };
        let Some(handler) = handler else {
            return (ToolCallStatus::NotRun, "not run: this process has no document store for `research` tools".into());
        };
        let step = StepSpec { kind, ..call.step.clone() };
        let invocation = StepInvocation {
            workflow: call.workflow,
            run: call.run,
            step: &step,
            attempt: call.attempt,
            inputs: &input,
            idempotency_key: format!("{}.{call_id}", call.idempotency_key),
            timeout: call.timeout,
            egress: call.egress,
        };
        match handler.run(invocation).await {
            Ok(success) => (ToolCallStatus::Ok, bounded(success.output.to_string(), MAX_TOOL_RESULT_BYTES as usize)),
            Err(e) => (
                ToolCallStatus::Failed,
                bounded(format!("error {}: {}", e.code, e.message), MAX_TOOL_RESULT_BYTES as usize),
            ),
        }
    }
}
