//! Deterministic output checks — the gate around an AI step, beyond the security mesh. A step
//! declares `checks:`; the worker evaluates them on the step's output before anything else
//! can read it: required patterns present, forbidden patterns absent, CEL assertions over
//! `output` and `params`, a JSON Schema, and gate categories that must not appear at a JSON
//! path (an email allowed in `/recipient`, not in `/body`). A failed check blocks the output
//! with the check's name and evidence (patterns, offsets, schema errors, rule ids — never the
//! matched text); `on_block` decides what follows. Every check's result goes on the step's
//! audit record.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gates::{GateMesh, GatePolicy, RedactionMap};
use crate::spec::problem;
use crate::spec::{SpecProblem, compile_schema, schema_errors};

/// `checks:` — what a step's output must satisfy, and what a failure does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepChecks {
    /// `guidance` (default): hold the output and ask a human, who sees which check failed on
    /// redacted text; `retry`: an `llm` step (or a research summary) asks its model once more
    /// with the failures as feedback (other steps: as `fail`), then fails; `fail`: fail the
    /// step (`check_failed`).
    #[serde(default)]
    pub on_block: CheckOnBlock,
    pub rules: Vec<Check>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckOnBlock {
    #[default]
    Guidance,
    Retry,
    Fail,
}

/// One named check. Every assertion it holds must pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    /// JSON pointer into the output the text assertions look at (`/text`, `/json/body`);
    /// default the whole output (its strings, one per line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Regular expressions that must each match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<String>,
    /// Regular expressions none of which may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbid: Vec<String>,
    /// A CEL expression over `output` and `params` that must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// A JSON Schema the value at `at` must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Gate categories (`email`, `phone`, `iban`, `secret`…) that must not be found at `at`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

/// The result of one check, as the audit record holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// Why it failed: missing or found patterns (with byte offsets), schema errors, a false
    /// expression, gate rule ids with their paths. Never the matched text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl StepChecks {
    /// Problems in the checks (bad patterns, expressions, schemas, pointers, duplicate names).
    pub fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.rules.iter().enumerate() {
            let here = format!("{at}.checks.rules[{i}]");
            if c.name.trim().is_empty() {
                p.push(problem(&here, "a check needs a `name`"));
            } else if !names.insert(c.name.as_str()) {
                p.push(problem(&here, format!("duplicate check name `{}`", c.name)));
            }
            if c.require.is_empty()
                && c.forbid.is_empty()
                && c.expr.is_none()
                && c.schema.is_none()
                && c.categories.is_empty()
            {
                p.push(problem(
                    &here,
                    "a check needs at least one of `require`, `forbid`, `expr`, `schema`, `categories`",
                ));
            }
            if let Some(ptr) = &c.at
                && !(ptr.is_empty() || ptr.starts_with('/'))
            {
                p.push(problem(
                    format!("{here}.at"),
                    format!("`{ptr}` is not a JSON pointer (write `/text`, `/json/body`)"),
                ));
            }
            for (field, patterns) in [("require", &c.require), ("forbid", &c.forbid)] {
                for (j, pattern) in patterns.iter().enumerate() {
                    if let Err(e) = Regex::new(pattern) {
                        p.push(problem(format!("{here}.{field}[{j}]"), format!("not a regular expression: {e}")));
                    }
                }
            }
            if let Some(e) = &c.expr
                && let Err(err) = crate::expr::compile(e)
            {
                p.push(problem(format!("{here}.expr"), err.to_string()));
            }
            if let Some(s) = &c.schema
                && let Err(e) = compile_schema(s)
            {
                p.push(problem(format!("{here}.schema"), format!("not a valid JSON Schema: {e}")));
            }
        }
    }

    /// Evaluate every check on `output`.
    pub fn evaluate(&self, output: &Value, params: &Value, mesh: &GateMesh, policy: &GatePolicy) -> Vec<CheckResult> {
        self.rules.iter().map(|c| c.evaluate(output, params, mesh, policy)).collect()
    }
}

/// Whether every result passed.
pub fn all_passed(results: &[CheckResult]) -> bool {
    results.iter().all(|r| r.passed)
}

/// The failed checks in one line: `clauses (missing /(?i)limitation of liability/); fee_range (expression is false)`.
pub fn describe_failures(results: &[CheckResult]) -> String {
    results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} ({})", r.name, r.evidence.join("; ")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Check {
    fn evaluate(&self, output: &Value, params: &Value, mesh: &GateMesh, policy: &GatePolicy) -> CheckResult {
        let mut evidence = Vec::new();
        let target = match self.at.as_deref() {
            None | Some("") => Some(output),
            Some(ptr) => output.pointer(ptr),
        };
        match target {
            None => evidence.push(format!("nothing at {}", self.at.as_deref().unwrap_or(""))),
            Some(target) => {
                let text = text_of(target);
                for pattern in &self.require {
                    match Regex::new(pattern) {
                        Ok(re) if re.is_match(&text) => {}
                        Ok(_) => evidence.push(format!("required /{pattern}/ is missing")),
                        Err(e) => evidence.push(format!("/{pattern}/ is not a regular expression: {e}")),
                    }
                }
                for pattern in &self.forbid {
                    match Regex::new(pattern) {
                        Ok(re) => {
                            let at: Vec<String> =
                                re.find_iter(&text).take(5).map(|m| format!("{}..{}", m.start(), m.end())).collect();
                            if !at.is_empty() {
                                evidence.push(format!("forbidden /{pattern}/ found at bytes {}", at.join(", ")));
                            }
                        }
                        Err(e) => evidence.push(format!("/{pattern}/ is not a regular expression: {e}")),
                    }
                }
                if let Some(schema) = &self.schema {
                    match compile_schema(schema) {
                        Ok(s) => evidence.extend(schema_errors(&s, target).into_iter().map(|e| format!("schema: {e}"))),
                        Err(e) => evidence.push(format!("schema does not compile: {e}")),
                    }
                }
                if !self.categories.is_empty() {
                    let (verdict, _) = mesh.scan_json(target, policy, &mut RedactionMap::new());
                    let mut found: Vec<String> = verdict
                        .findings
                        .iter()
                        .filter(|f| self.categories.iter().any(|c| *c == f.category))
                        .map(|f| {
                            let path =
                                format!("{}{}", self.at.as_deref().unwrap_or(""), f.path.as_deref().unwrap_or(""));
                            format!("{} ({}) at {}", f.category, f.rule_id, if path.is_empty() { "/" } else { &path })
                        })
                        .collect();
                    found.dedup();
                    evidence.extend(found);
                }
            }
        }
        if let Some(expr) = &self.expr {
            match crate::expr::eval_bool_over(expr, &[("output", output), ("params", params)]) {
                Ok(true) => {}
                Ok(false) => evidence.push(format!("`{expr}` is false")),
                Err(e) => evidence.push(e.to_string()),
            }
        }
        CheckResult { name: self.name.clone(), passed: evidence.is_empty(), evidence }
    }
}

/// The text a pattern looks at: a string as is; otherwise every string inside, one per line.
fn text_of(v: &Value) -> String {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.to_string()),
            Value::Bool(b) => out.push(b.to_string()),
            Value::Null => {}
        }
    }
    let mut parts = Vec::new();
    walk(v, &mut parts);
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn checks(yaml: &str) -> StepChecks {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn run(c: &StepChecks, output: Value) -> Vec<CheckResult> {
        let mesh = GateMesh::builtin();
        c.evaluate(&output, &json!({"min_fee": 1000, "max_fee": 5000}), &mesh, &GatePolicy::default())
    }

    #[test]
    fn required_and_forbidden_patterns_name_what_is_missing_or_found_without_quoting_it() {
        let c = checks(
            "rules:\n  - { name: clauses, at: /text, require: ['(?i)limitation of liability', '(?i)fees'], forbid: ['(?i)guarantee'] }\n",
        );
        let ok = run(&c, json!({"text": "Fees: 2000. Limitation of liability applies."}));
        assert!(all_passed(&ok), "{ok:?}");
        let bad = run(&c, json!({"text": "We guarantee success. Fees: 2000."}));
        assert!(!all_passed(&bad));
        let ev = &bad[0].evidence;
        assert!(ev.iter().any(|e| e.contains("limitation of liability") && e.contains("missing")), "{ev:?}");
        assert!(ev.iter().any(|e| e.contains("forbidden") && e.contains("3..12")), "{ev:?}");
    }

    #[test]
    fn cel_assertions_see_output_and_params() {
        let c = checks(
            "rules:\n  - { name: fee_range, expr: 'output.json.fee >= params.min_fee && output.json.fee <= params.max_fee' }\n",
        );
        assert!(all_passed(&run(&c, json!({"json": {"fee": 2000}}))));
        let r = run(&c, json!({"json": {"fee": 9000}}));
        assert!(!r[0].passed && r[0].evidence[0].contains("is false"), "{r:?}");
    }

    #[test]
    fn gate_categories_are_scoped_by_json_path() {
        let c = checks("rules:\n  - { name: no_email_in_body, at: /json/body, categories: [email] }\n");
        let out = json!({"json": {"recipient": "ana@example.com", "body": "Dear Ana, …"}});
        assert!(all_passed(&run(&c, out)));
        let out = json!({"json": {"recipient": "ana@example.com", "body": "write to ana@example.com"}});
        let r = run(&c, out);
        assert!(!r[0].passed, "{r:?}");
        assert!(r[0].evidence[0].contains("/json/body"), "{r:?}");
        assert!(!r[0].evidence[0].contains("ana@"), "evidence must not quote the match: {r:?}");
    }

    #[test]
    fn validation_names_bad_patterns_and_empty_checks() {
        let c = checks("rules:\n  - { name: a, require: ['('] }\n  - { name: a }\n");
        let mut p = Vec::new();
        c.check("steps[0] (draft)", &mut p);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|t| t.contains("rules[0].require[0]")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("duplicate check name")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("at least one of")), "{text:?}");
    }
}
