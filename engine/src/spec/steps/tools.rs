//! `tools:` of an `llm` step: named, typed actions the model may ask for and Tollgate carries
//! out. Each tool has a JSON Schema of its arguments (checked before it runs) and exactly one
//! backing, reusing a job step type's handler: `api_call` (an HTTP request through the egress
//! guard), `code` (a sandboxed script whose `input` is the arguments) or `research` (a search of
//! the owner's collection). Strings of an `api_call` request and a `research` query may hold
//! `${{ … }}` templates over `args` (the model's arguments) and `params`. A tool with
//! `authorize: true` asks a human (a tool-authorisation request) before each call the run has
//! not already allowed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::spec::SpecProblem;
use crate::spec::steps::{CodeStep, HttpRequestSpec, ResearchStep, StepShape, compile_schema};
use crate::spec::validate::problem;

/// Model turns an `llm` step with tools may take when it sets no `max_turns`.
pub const DEFAULT_MAX_TURNS: u32 = 8;
/// The most `max_turns` may say.
pub const MAX_TURNS_LIMIT: u32 = 50;
/// Tool calls carried out per model turn; further calls of that turn are answered "not run".
pub const MAX_TOOL_CALLS_PER_TURN: u32 = 4;
/// A tool's result is cut to this many bytes before it goes back to the model (and into the
/// reservation's arithmetic: every turn may add at most this much per call).
pub const MAX_TOOL_RESULT_BYTES: u32 = 8 * 1024;

/// One tool an `llm` step offers the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// What the model calls it: letters, digits, `_` and `-`, at most 64.
    pub name: String,
    /// What it does, for the model (and for the human asked to authorise it).
    pub description: String,
    /// A JSON Schema of its arguments (an object); arguments that do not satisfy it are not
    /// run: the model is told what is wrong instead. Default: an object with any fields.
    #[serde(default = "any_object")]
    pub parameters: Value,
    /// Ask a human before each call (allow once, allow for the rest of the run, or deny with a
    /// reason the model receives): `true`, or a list of gate categories (`[card, iban]`) —
    /// then only calls whose arguments the gate mesh's detectors find one of them in (or would
    /// block, e.g. an injection) are asked about.
    #[serde(default, skip_serializing_if = "Authorize::is_never")]
    pub authorize: Authorize,
    /// Who is asked to authorise (a user or group); default: the workflow's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// The user who started the run may not allow the call (they may deny it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forbid_self_approval: bool,
    /// Backed by an HTTP request (templates over `args` and `params`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_call: Option<HttpRequestSpec>,
    /// Backed by a sandboxed script; its `input` is the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeStep>,
    /// Backed by a search of the owner's collection; `query` is a template over `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub research: Option<ResearchStep>,
}

/// When a tool's calls need a human's authorisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Authorize {
    /// Every call (`true`) or none (`false`).
    Always(bool),
    /// Calls whose arguments hold one of these gate categories.
    When(Vec<String>),
}

impl Default for Authorize {
    fn default() -> Self {
        Authorize::Always(false)
    }
}

impl Authorize {
    pub fn is_never(&self) -> bool {
        *self == Authorize::Always(false)
    }

    /// Whether it may ever ask.
    pub fn may_ask(&self) -> bool {
        !self.is_never()
    }

    /// Whether a call with `args` must be authorised, and why (the categories found; empty for
    /// `true`). The built-in detectors and default policy judge the arguments; a verdict that
    /// would block (an injection, a scan that ran out of time) asks too — fail closed.
    pub fn asks(&self, args: &Value) -> Option<Vec<String>> {
        match self {
            Authorize::Always(true) => Some(Vec::new()),
            Authorize::Always(false) => None,
            Authorize::When(categories) => {
                let policy = crate::gates::GatePolicy::default();
                let (verdict, _) =
                    crate::gates::GateMesh::builtin().scan_json(args, &policy, &mut crate::gates::RedactionMap::new());
                let mut found: Vec<String> =
                    verdict.findings.iter().map(|f| f.category.clone()).filter(|c| categories.contains(c)).collect();
                found.sort();
                found.dedup();
                if found.is_empty() && verdict.action == crate::gates::GateAction::Block {
                    found.push("blocked by the gate mesh".into());
                }
                (!found.is_empty()).then_some(found)
            }
        }
    }
}

/// The categories `authorize: [...]` may name: those the built-in detectors find.
pub fn known_categories() -> Vec<String> {
    crate::gates::GatePolicy::default().actions.keys().cloned().collect()
}

fn any_object() -> Value {
    json!({ "type": "object" })
}

/// What a tool is backed by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ToolBacking<'a> {
    ApiCall(&'a HttpRequestSpec),
    Code(&'a CodeStep),
    Research(&'a ResearchStep),
}

impl ToolSpec {
    /// Its backing (validation makes sure there is exactly one).
    pub fn backing(&self) -> Option<ToolBacking<'_>> {
        match (&self.api_call, &self.code, &self.research) {
            (Some(r), None, None) => Some(ToolBacking::ApiCall(r)),
            (None, Some(c), None) => Some(ToolBacking::Code(c)),
            (None, None, Some(r)) => Some(ToolBacking::Research(r)),
            _ => None,
        }
    }

    /// The definition the model sees: name, description, argument schema.
    pub fn definition(&self) -> crate::llm::ToolDef {
        crate::llm::ToolDef {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.parameters.clone(),
        }
    }
}

/// Whether `name` is a valid tool name (what both protocols accept).
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Check `tools` and `max_turns` of an `llm` step at `at`.
pub(crate) fn check_tools(tools: &[ToolSpec], max_turns: Option<u32>, at: &str, p: &mut Vec<SpecProblem>) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in tools.iter().enumerate() {
        let at = format!("{at}.tools[{i}] ({})", t.name);
        if !is_tool_name(&t.name) {
            p.push(problem(format!("{at}.name"), "a tool name is 1–64 letters, digits, `_` or `-`"));
        }
        if !seen.insert(t.name.as_str()) {
            p.push(problem(format!("{at}.name"), format!("two tools are named `{}`", t.name)));
        }
        if t.description.trim().is_empty() {
            p.push(problem(format!("{at}.description"), "say what the tool does: the model chooses by it"));
        }
        match compile_schema(&t.parameters) {
            Err(e) => p.push(problem(format!("{at}.parameters"), format!("not a valid JSON Schema: {e}"))),
            Ok(_) if t.parameters.get("type").and_then(Value::as_str) != Some("object") => {
                p.push(problem(format!("{at}.parameters"), "must be a schema of `type: object` (arguments are named)"))
            }
            Ok(_) => {}
        }
        let backings = [t.api_call.is_some(), t.code.is_some(), t.research.is_some()].iter().filter(|b| **b).count();
        if backings != 1 {
            p.push(problem(at.clone(), "a tool needs exactly one of `api_call`, `code`, `research`"));
        }
        if let Some(r) = &t.api_call {
            if !super::api_call::is_http_method(&r.method) {
                p.push(problem(format!("{at}.api_call.method"), format!("`{}` is not an HTTP method", r.method)));
            }
            if r.url.trim().is_empty() {
                p.push(problem(format!("{at}.api_call.url"), "must not be empty"));
            }
        }
        if let Some(c) = &t.code {
            c.check(&format!("{at}.code"), p);
        }
        if let Some(r) = &t.research {
            r.check(&format!("{at}.research"), p);
            if r.summarize.is_some() {
                p.push(problem(
                    format!("{at}.research.summarize"),
                    "a `research` tool returns its hits to the model that called it: no `summarize`",
                ));
            }
        }
        if let Authorize::When(categories) = &t.authorize {
            let known = known_categories();
            if categories.is_empty() {
                p.push(problem(
                    format!("{at}.authorize"),
                    "an empty list asks about nothing: write `false`, `true` or categories",
                ));
            }
            for c in categories.iter().filter(|c| !known.contains(c)) {
                p.push(problem(
                    format!("{at}.authorize"),
                    format!("unknown category `{c}` (known: {})", known.join(", ")),
                ));
            }
        }
        if !t.authorize.may_ask() && (t.assignee.is_some() || t.forbid_self_approval) {
            p.push(problem(
                at.clone(),
                "`assignee` and `forbid_self_approval` apply only to a tool with `authorize: true`",
            ));
        }
    }
    match max_turns {
        Some(0) => p.push(problem(format!("{at}.max_turns"), "must be at least 1")),
        Some(n) if n > MAX_TURNS_LIMIT => {
            p.push(problem(format!("{at}.max_turns"), format!("must be at most {MAX_TURNS_LIMIT}")))
        }
        Some(_) if tools.is_empty() => {
            p.push(problem(format!("{at}.max_turns"), "bounds the tool loop: it needs `tools`"))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(v: Value) -> ToolSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_tool_needs_one_backing_an_object_schema_and_a_unique_name() {
        let tools = vec![
            tool(json!({"name": "lookup", "description": "find", "api_call": {"url": "https://x/${{ args.id }}"}})),
            tool(
                json!({"name": "lookup", "description": "again", "code": {"script": "return 1"}, "research": {"query": "q"}}),
            ),
            tool(
                json!({"name": "bad name", "description": "", "parameters": {"type": "string"}, "code": {"script": "return 1"}}),
            ),
        ];
        let mut p = Vec::new();
        check_tools(&tools, Some(0), "steps[0] (ask)", &mut p);
        let text: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        let has = |s: &str| text.iter().any(|t| t.contains(s));
        assert!(has("two tools are named `lookup`"), "{text:?}");
        assert!(has("exactly one of `api_call`, `code`, `research`"), "{text:?}");
        assert!(has("tools[2] (bad name).name"), "{text:?}");
        assert!(has("tools[2] (bad name).parameters"), "{text:?}");
        assert!(has("tools[2] (bad name).description"), "{text:?}");
        assert!(has("max_turns"), "{text:?}");
        assert!(tools[0].backing().is_some() && tools[1].backing().is_none());
    }

    #[test]
    fn a_research_tool_returns_its_hits_and_cannot_summarise_them() {
        let t = tool(
            json!({"name": "find", "description": "find", "research": {"query": "${{ args.q }}", "summarize": {"prompt": "sum up"}}}),
        );
        let mut p = Vec::new();
        check_tools(&[t], None, "steps[0] (ask)", &mut p);
        assert!(p.iter().any(|p| p.to_string().contains("tools[0] (find).research.summarize")), "{p:?}");
    }

    #[test]
    fn authorize_by_category_asks_only_about_arguments_holding_one() {
        let t =
            tool(json!({"name": "pay", "description": "pay", "authorize": ["card"], "code": {"script": "return 1"}}));
        assert_eq!(t.authorize.asks(&json!({"amount": 12, "note": "lunch"})), None);
        assert_eq!(t.authorize.asks(&json!({"card": "4111 1111 1111 1111"})), Some(vec!["card".to_string()]));
        let always =
            tool(json!({"name": "pay", "description": "pay", "authorize": true, "code": {"script": "return 1"}}));
        assert_eq!(always.authorize.asks(&json!({})), Some(vec![]));
        let mut p = Vec::new();
        let bad =
            tool(json!({"name": "pay", "description": "pay", "authorize": ["cardz"], "code": {"script": "return 1"}}));
        check_tools(&[bad], None, "steps[0] (x)", &mut p);
        assert!(p.iter().any(|p| p.to_string().contains("unknown category `cardz`")), "{p:?}");
    }
}
