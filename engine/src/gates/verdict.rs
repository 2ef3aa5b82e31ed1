//! What the gate mesh says about one output: the action, the findings behind it and the ruleset that
//! produced them. These types are recorded in the run journal, so they are serde types and carry no
//! raw matched value — only keyed hashes and byte spans into the original text.

use serde::{Deserialize, Serialize};

/// What happens to the output. Ordered: a stricter action wins when findings disagree.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum GateAction {
    /// The output passes unchanged (findings, if any, are recorded only).
    Allow,
    /// The output passes with the offending spans replaced by typed placeholders.
    Redact,
    /// The output does not pass.
    Block,
}

/// How bad a finding is if it is real. Ordered from least to most severe.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// Which detector of the mesh produced a finding.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// A user-defined regex rule of the workflow.
    Regex,
    /// Personal data: emails, phones, cards, IBANs, national ids, IPs, dates of birth, addresses.
    Pii,
    /// Credentials: provider tokens, private keys, connection strings, key = value assignments.
    Secrets,
    /// Prompt-injection and exfiltration heuristics.
    Threat,
    /// The mesh itself: oversized input or an exceeded time budget (fail-closed findings).
    Mesh,
}

/// A half-open byte range `[start, end)` into the ORIGINAL text (both ends are char boundaries).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// One thing a detector found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Finding {
    pub detector: Detector,
    /// Stable rule id, e.g. `secret.github_pat` or `pii.email`.
    pub rule_id: String,
    /// Category the policy maps to an action, e.g. `email`, `card`, `secret`, `threat`.
    pub category: String,
    pub severity: Severity,
    /// Byte span in the original text (or in the JSON string at `path`).
    pub span: Span,
    /// JSON pointer (RFC 6901) of the string that holds the match, for `scan_json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// True when the match is in an object key (at `path`) rather than a string value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_key: bool,
    /// Keyed hash (HMAC-SHA256, run key) of the canonical matched value; never the value itself.
    pub match_hash: String,
    /// 0.0–1.0; checksums and context words raise it.
    pub confidence: f32,
    /// The action this finding asks for under the policy in force.
    pub action: GateAction,
    /// Human-facing explanation (user regex rules and fail-closed findings carry one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Identifies the exact rule set a verdict was produced with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RulesetId {
    pub version: String,
    /// SHA-256 (hex) over the rule files and any per-workflow extra rules.
    pub hash: String,
}

/// The threat classifier's score for the whole output, with the signals that made it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ThreatSummary {
    /// Noisy-OR of the distinct signals' weights, 0.0–1.0.
    pub score: f32,
    /// Distinct signal ids that fired, sorted.
    pub signals: Vec<String>,
}

/// The mesh's decision about one output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GateVerdict {
    pub action: GateAction,
    pub findings: Vec<Finding>,
    pub ruleset: RulesetId,
    /// Present when the threat detector ran and at least one signal fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat: Option<ThreatSummary>,
}

impl GateVerdict {
    /// Rule ids that fired, sorted and deduplicated (what `runs show` prints).
    pub fn rule_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.findings.iter().map(|f| f.rule_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Result of scanning text: the verdict and, when something was redacted, the rewritten text.
///
/// `redacted` is `Some` whenever at least one finding asks for `redact` or `block` and the scan
/// completed; it is `None` when the action is `allow` (use the original) or when the scan failed
/// closed (oversize, time budget), since then the spans are not known.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GateOutcome {
    pub verdict: GateVerdict,
    pub redacted: Option<String>,
}
