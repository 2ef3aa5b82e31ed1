//! `GateMesh`: a compiled, checked rule set and the entry points the rest of Tollgate calls —
//! scan a step's text or JSON output under a policy, with the run's redaction map.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use crate::gates::error::GateError;
use crate::gates::examples::check_regex;
use crate::gates::redact::{Replacement, apply};
use crate::gates::regex_rules::{CompiledRegexRule, RegexRule};
use crate::gates::rules::{self, Ruleset, assemble};
use crate::gates::scan::{Scanner, decide, fail_closed};
use crate::gates::verdict::{GateOutcome, GateVerdict, RulesetId};
use crate::gates::{GateAction, GatePolicy, RedactionMap};

/// The deterministic gate mesh. Cheap to clone; `Send + Sync`, share one per workflow.
#[derive(Clone, Debug)]
pub struct GateMesh {
    rules: Arc<Ruleset>,
}

static BUILTIN: OnceLock<Arc<Ruleset>> = OnceLock::new();

impl GateMesh {
    /// The rules shipped in `config/gates/`, embedded in the binary (compiled and checked once
    /// per process).
    pub fn builtin() -> GateMesh {
        let rules = BUILTIN.get_or_init(|| {
            Arc::new(rules::compile(&rules::builtin_sources()).expect("embedded gate rules are valid (tested)"))
        });
        GateMesh { rules: rules.clone() }
    }

    /// Rules from a directory of TOML files (every `*.toml` except `policy*.toml`).
    pub fn load_dir(path: impl AsRef<Path>) -> Result<GateMesh, GateError> {
        let files = rules::dir_sources(path.as_ref())?;
        Ok(GateMesh { rules: Arc::new(rules::compile(&files)?) })
    }

    /// This mesh plus a workflow's own regex rules (examples checked, ids unique). The ruleset
    /// hash changes with them, so verdicts name exactly what ran.
    pub fn with_extra_rules(&self, extra: Vec<RegexRule>) -> Result<GateMesh, GateError> {
        let base = &self.rules;
        let mut regex: Vec<CompiledRegexRule> = base.regex.clone();
        let mut hasher = Sha256::new();
        hasher.update(base.id.hash.as_bytes());
        hasher.update(serde_json::to_vec(&extra).expect("rules serialise"));
        for r in extra {
            let taken = base
                .secrets
                .iter()
                .map(|s| &s.meta.id)
                .chain(base.pii.rules.iter().map(|p| &p.meta.id))
                .chain(base.threat.iter().map(|t| &t.meta.id))
                .chain(regex.iter().map(|x| &x.meta.id))
                .any(|id| *id == r.id);
            if taken {
                return Err(GateError::DuplicateRule { rule: r.id });
            }
            let c = CompiledRegexRule::compile(r)?;
            check_regex(&c)?;
            regex.push(c);
        }
        let id = RulesetId { version: base.id.version.clone(), hash: hex::encode(hasher.finalize()) };
        let rs =
            assemble(id, base.secrets.clone(), base.allowlist.clone(), base.pii.clone(), base.threat.clone(), regex);
        Ok(GateMesh { rules: Arc::new(rs) })
    }

    /// A user rule's own action (which the policy does not override), if `rule_id` has one.
    pub(crate) fn rule_action(&self, rule_id: &str) -> Option<GateAction> {
        self.rules.regex.iter().find(|r| r.meta.id == rule_id).and_then(|r| r.meta.action)
    }

    /// Version and hash of the rules this mesh runs.
    pub fn ruleset(&self) -> &RulesetId {
        &self.rules.id
    }

    /// Scans a text output. `redacted` is the rewritten text when any finding redacts or blocks.
    pub fn scan_text(&self, text: &str, policy: &GatePolicy, map: &mut RedactionMap) -> GateOutcome {
        let rs = &*self.rules;
        if text.len() > policy.max_input_bytes {
            let msg = format!("output of {} bytes exceeds the limit of {} bytes", text.len(), policy.max_input_bytes);
            return GateOutcome { verdict: fail_closed("mesh.oversize", msg, &rs.id), redacted: None };
        }
        let scanner = Scanner::new(rs, policy);
        let mut found = Vec::new();
        if scanner.scan_str(text, None, false, &mut found).is_err() {
            return GateOutcome { verdict: timed_out(policy, &rs.id), redacted: None };
        }
        let spans: Vec<_> = found.iter().map(|f| f.span).collect();
        let (verdict, placeholders) = decide(found, policy, map, &rs.id);
        let reps: Vec<Replacement> = spans
            .into_iter()
            .zip(placeholders)
            .filter_map(|(span, p)| p.map(|placeholder| Replacement { span, placeholder }))
            .collect();
        let redacted = (!reps.is_empty()).then(|| apply(text, reps));
        GateOutcome { verdict, redacted }
    }

    /// Scans every string and object key of a JSON output. Findings carry the JSON pointer of
    /// their string; the second value is the document with those strings rewritten.
    pub fn scan_json(
        &self,
        value: &serde_json::Value,
        policy: &GatePolicy,
        map: &mut RedactionMap,
    ) -> (GateVerdict, Option<serde_json::Value>) {
        crate::gates::json::scan(&self.rules, value, policy, map)
    }
}

pub(crate) fn timed_out(policy: &GatePolicy, id: &RulesetId) -> GateVerdict {
    let msg = format!("scan exceeded its time budget of {} ms", policy.time_budget_ms);
    fail_closed("mesh.time_budget", msg, id)
}
