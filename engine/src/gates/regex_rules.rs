//! User-defined regex rules: a workflow's own patterns (an internal project code name, a customer
//! id format) with their category, action and message. They carry examples like every other rule
//! and may name prefilter keywords; without keywords they run on every text.

use serde::{Deserialize, Serialize};

use crate::gates::error::GateError;
use crate::gates::matcher::{RuleRegex, Scope};
use crate::gates::prefilter::keyword_positions;
use crate::gates::rules::{Examples, RuleMeta};
use crate::gates::scan::RawFinding;
use crate::gates::verdict::{Detector, GateAction, Severity};

fn default_severity() -> Severity {
    Severity::Medium
}

/// A per-workflow regex rule, as written in the workflow spec or a rule file (`[[regex]]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegexRule {
    /// Unique rule id, reported in findings.
    pub id: String,
    /// Category the finding is filed under (and redacted as, e.g. `project` → `[PROJECT_1]`).
    pub category: String,
    /// The rule's own action; when absent the policy's action for the category applies.
    #[serde(default)]
    pub action: Option<GateAction>,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Shown to whoever reviews a blocked or redacted output.
    #[serde(default)]
    pub message: Option<String>,
    /// Rust `regex` syntax (linear time; no look-around or backreferences).
    pub pattern: String,
    /// Optional prefilter keywords (ASCII case-insensitive); if given, at least one must occur.
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(flatten)]
    pub examples: Examples,
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledRegexRule {
    pub meta: RuleMeta,
    pub keywords: Vec<String>,
    pub examples: Examples,
    regex: RuleRegex,
}

impl CompiledRegexRule {
    pub fn compile(r: RegexRule) -> Result<Self, GateError> {
        if r.id.is_empty() || r.category.is_empty() {
            return Err(GateError::InvalidRule { rule: r.id, message: "id and category are required".into() });
        }
        if r.examples.positive.is_empty() {
            return Err(GateError::InvalidRule {
                rule: r.id,
                message: "at least one positive example is required".into(),
            });
        }
        let regex = RuleRegex::new(&r.id, &r.pattern, "")?;
        Ok(CompiledRegexRule {
            meta: RuleMeta {
                id: r.id,
                category: r.category,
                severity: r.severity,
                detector: Detector::Regex,
                message: r.message,
                action: r.action,
            },
            keywords: r.keywords,
            examples: r.examples,
            regex,
        })
    }

    /// Runs near the keyword occurrences `hits`, or over the whole text without keywords.
    pub fn scan<'r>(&'r self, text: &str, hits: &[usize], out: &mut Vec<RawFinding<'r>>) {
        let scope =
            if self.keywords.is_empty() { Scope::Whole } else { Scope::Near { hits, lookbehind: 256, max_len: 512 } };
        self.regex.scan(text, scope, |h| {
            if h.whole.is_empty() {
                return;
            }
            out.push(RawFinding {
                meta: &self.meta,
                start: h.whole.start,
                end: h.whole.end,
                canonical: text[h.whole.clone()].to_string(),
                confidence: 1.0,
                generic: false,
                note: None,
                original_span: false,
            });
        });
    }

    /// Where the rule's keywords occur in `text` (what the prefilter would report).
    pub fn keyword_hits(&self, text: &str) -> Vec<usize> {
        keyword_positions(&self.keywords, text)
    }
}
