//! `llm` steps: a conversation with a named model provider, run as a job by the `llm` handler
//! (`tollgate-connectors`). `system`, `prompt` and `messages` are Jinja templates (minijinja)
//! over `params`, `steps` (upstream outputs) and `inputs`, rendered by the run into the
//! attempt's input before dispatch — so the rendered prompt is sealed with the attempt and the
//! reservation can be priced from its size. The reply is text, or JSON checked against `schema`.

use minijinja::{Environment, UndefinedBehavior};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::llm::Role;
use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::steps::tools::{DEFAULT_MAX_TURNS, ToolSpec, check_tools};
use crate::spec::validate::problem;

/// `llm`: ask a model. `system`/`prompt`/`messages` are minijinja templates over `params`,
/// `steps` and `inputs`; the output is `{text, usage}` or, with `schema`, `{json, usage}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmStep {
    /// A provider named in the configuration (`[llm.providers.NAME]`); default `llm.default_provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model; default the provider's `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// System prompt template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// User prompt template (sent after `messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A conversation to send (each `content` a template).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<LlmMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The longest answer, in tokens (also what the cost reservation assumes); default the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// A JSON Schema the answer must satisfy: the output is then `json`. An invalid answer is
    /// sent back once with the validation errors; a second invalid answer fails the step
    /// (`output_invalid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// What a prompt injection found by the threat classifier in the rendered prompt does:
    /// `block` (default: the step fails `prompt_injection` before any call), `guidance` (the
    /// run asks a human before any call: send it as is, supply the output, or abort), `strip`
    /// (the offending spans are removed and the call goes ahead) or `proceed` (the finding is
    /// recorded on the output).
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_injection: OnInjection,
    /// Tools the model may call; Tollgate runs them and returns their results (see
    /// [`ToolSpec`]). The conversation is journaled turn by turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// The most model turns of the tool loop (default 8 with tools); the reservation covers
    /// them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnInjection {
    #[default]
    Block,
    Strip,
    Proceed,
    /// Stop before the call and ask a human: send the prompt as is, supply the step's output
    /// instead, or abort.
    Guidance,
}

fn is_default(o: &OnInjection) -> bool {
    *o == OnInjection::Block
}

/// One message of an `llm` step's `messages`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmMessage {
    pub role: Role,
    pub content: String,
}

impl LlmStep {
    pub const FIELDS: &'static [&'static str] = &[
        "provider",
        "model",
        "system",
        "prompt",
        "messages",
        "temperature",
        "max_tokens",
        "schema",
        "on_injection",
        "tools",
        "max_turns",
    ];

    /// Model turns the tool loop may take: `max_turns`, or the default with tools, or one.
    pub fn turns(&self) -> u32 {
        match (&self.max_turns, self.tools.is_empty()) {
            (Some(n), _) => *n,
            (None, false) => DEFAULT_MAX_TURNS,
            (None, true) => 1,
        }
    }

    /// The tool named `name`.
    pub fn tool(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// The templates of this step, with their places.
    fn template_sources(&self) -> Vec<(String, &str)> {
        let mut t = Vec::new();
        if let Some(s) = &self.system {
            t.push(("system".to_string(), s.as_str()));
        }
        for (i, m) in self.messages.iter().enumerate() {
            t.push((format!("messages[{i}].content"), m.content.as_str()));
        }
        if let Some(s) = &self.prompt {
            t.push(("prompt".to_string(), s.as_str()));
        }
        t
    }

    /// Render the conversation: `{"messages": [{role, content}…]}` (system first, then
    /// `messages`, then `prompt` as a user message). `scope` holds `params`, `steps`, `inputs`.
    pub fn render(&self, scope: &Value) -> Result<Value, String> {
        let env = environment();
        let render =
            |place: &str, src: &str| env.render_str(src, scope).map_err(|e| format!("{place}: {}", describe(&e)));
        let mut messages = Vec::new();
        if let Some(s) = &self.system {
            messages.push(json!({ "role": "system", "content": render("system", s)? }));
        }
        for (i, m) in self.messages.iter().enumerate() {
            messages.push(json!({ "role": m.role, "content": render(&format!("messages[{i}].content"), &m.content)? }));
        }
        if let Some(s) = &self.prompt {
            messages.push(json!({ "role": "user", "content": render("prompt", s)? }));
        }
        Ok(json!({ "messages": messages }))
    }
}

/// The template environment: undefined variables are errors (a misspelt `params.nmae` must not
/// silently render as nothing), no HTML escaping.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

impl StepShape for LlmStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if self.prompt.is_none() && self.messages.is_empty() {
            p.push(problem(at, "an `llm` step needs a `prompt` or `messages`"));
        }
        let env = environment();
        for (place, src) in self.template_sources() {
            if let Err(e) = env.template_from_str(src) {
                p.push(problem(format!("{at}.{place}"), format!("template does not parse: {}", describe(&e))));
            }
        }
        if self.messages.iter().any(|m| m.role == Role::Tool) {
            p.push(problem(format!("{at}.messages"), "`tool` messages come from tool calls, not from the spec"));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            p.push(problem(format!("{at}.temperature"), "must be between 0 and 2"));
        }
        if self.max_tokens == Some(0) {
            p.push(problem(format!("{at}.max_tokens"), "must be more than zero"));
        }
        if let Some(schema) = &self.schema
            && let Err(e) = compile_schema(schema)
        {
            p.push(problem(format!("{at}.schema"), format!("not a valid JSON Schema: {e}")));
        }
        check_tools(&self.tools, self.max_turns, at, p);
    }
}

/// Compile a JSON Schema (draft 2020-12 unless it says otherwise).
pub fn compile_schema(schema: &Value) -> Result<(boon::Schemas, boon::SchemaIndex), String> {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.add_resource("tollgate:schema", schema.clone()).map_err(|e| e.to_string())?;
    let index = compiler.compile("tollgate:schema", &mut schemas).map_err(|e| format!("{e:#}"))?;
    Ok((schemas, index))
}

/// The reasons `value` does not satisfy `schema`, one per line (empty when it does).
pub fn schema_errors(schema: &(boon::Schemas, boon::SchemaIndex), value: &Value) -> Vec<String> {
    match schema.0.validate(value, schema.1) {
        Ok(()) => Vec::new(),
        Err(e) => format!("{e:#}").lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(prompt: &str) -> LlmStep {
        LlmStep {
            prompt: Some(prompt.into()),
            system: Some("You draft letters for {{ params.firm }}.".into()),
            ..Default::default()
        }
    }

    #[test]
    fn renders_system_then_prompt_from_params_and_upstream_outputs() {
        let s = step("Client: {{ params.client }}; notes: {{ steps.notes.output.text }}");
        let scope = json!({ "params": {"firm": "Acme", "client": "Björk AB"}, "steps": {"notes": {"output": {"text": "urgent"}}}, "inputs": {} });
        let out = s.render(&scope).unwrap();
        assert_eq!(
            out,
            json!({"messages": [
                {"role": "system", "content": "You draft letters for Acme."},
                {"role": "user", "content": "Client: Björk AB; notes: urgent"}
            ]})
        );
    }

    #[test]
    fn an_undefined_variable_is_an_error_naming_the_template() {
        let e =
            step("{{ params.nmae }}").render(&json!({"params": {"firm": "x"}, "steps": {}, "inputs": {}})).unwrap_err();
        assert!(e.starts_with("prompt:"), "{e}");
        assert!(e.contains("undefined"), "{e}");
    }

    #[test]
    fn validation_names_a_template_that_does_not_parse_and_a_bad_schema() {
        let mut s = step("{% if %}");
        s.schema = Some(json!({"type": "nonsense"}));
        let mut p = Vec::new();
        s.check("steps[0] (draft)", &mut p);
        let text: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|t| t.contains("steps[0] (draft).prompt") && t.contains("does not parse")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("steps[0] (draft).schema")), "{text:?}");
    }

    #[test]
    fn schema_errors_say_what_is_wrong() {
        let schema =
            compile_schema(&json!({"type": "object", "required": ["fee"], "properties": {"fee": {"type": "number"}}}))
                .unwrap();
        assert!(schema_errors(&schema, &json!({"fee": 10})).is_empty());
        let errs = schema_errors(&schema, &json!({"fee": "ten"}));
        assert!(errs.iter().any(|e| e.contains("fee")), "{errs:?}");
    }
}
