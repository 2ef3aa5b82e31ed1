//! The scan of one string through every enabled detector, and the decision over all findings of
//! an output: per-finding actions, the threat score, keyed hashes and placeholders. `mesh.rs` and
//! `json.rs` drive it; detectors only see normalised text and report raw findings.

use std::time::{Duration, Instant};

use phonenumber::country;

use crate::gates::normalize::normalize;
use crate::gates::policy::GatePolicy;
use crate::gates::redact::RedactionMap;
use crate::gates::rules::{RuleMeta, Ruleset};
use crate::gates::threat;
use crate::gates::verdict::{Detector, Finding, GateAction, GateVerdict, RulesetId, Severity, Span, ThreatSummary};

/// A detector's match, in normalised-text coordinates unless `original_span`.
#[derive(Debug)]
pub(crate) struct RawFinding<'r> {
    pub meta: &'r RuleMeta,
    pub start: usize,
    pub end: usize,
    /// The value hashed for the finding and the redaction map (never stored raw).
    pub canonical: String,
    pub confidence: f32,
    /// Generic secret rules yield to provider rules on overlap.
    pub generic: bool,
    pub note: Option<String>,
    pub original_span: bool,
}

impl<'r> RawFinding<'r> {
    pub fn signal(meta: &'r RuleMeta, start: usize, end: usize, canonical: &str, weight: f32) -> Self {
        RawFinding {
            meta,
            start,
            end,
            canonical: canonical.to_string(),
            confidence: weight,
            generic: false,
            note: None,
            original_span: false,
        }
    }
}

/// A finding located in the original text (and, for JSON, in the document).
#[derive(Debug)]
pub(crate) struct Located<'r> {
    pub meta: &'r RuleMeta,
    pub span: Span,
    pub canonical: String,
    pub confidence: f32,
    pub note: Option<String>,
    pub path: Option<String>,
    pub in_key: bool,
}

/// The largest char boundary `<= pos`.
pub(crate) fn floor_boundary(text: &str, pos: usize) -> usize {
    let mut p = pos.min(text.len());
    while !text.is_char_boundary(p) {
        p -= 1;
    }
    p
}

/// The smallest char boundary `> pos` (or `len + 1` past the end, which ends a search loop).
pub(crate) fn next_boundary(text: &str, pos: usize) -> usize {
    let mut p = pos + 1;
    while p < text.len() && !text.is_char_boundary(p) {
        p += 1;
    }
    p
}

/// The scan's wall-clock budget; detectors are checked against it between stages.
pub(crate) struct Deadline {
    start: Instant,
    budget: Duration,
}

/// The budget ran out: the caller fails closed.
#[derive(Debug)]
pub(crate) struct Timeout;

impl Deadline {
    pub fn new(ms: u64) -> Self {
        Deadline { start: Instant::now(), budget: Duration::from_millis(ms) }
    }

    pub fn check(&self) -> Result<(), Timeout> {
        if self.start.elapsed() >= self.budget { Err(Timeout) } else { Ok(()) }
    }
}

/// Phone regions of the policy (validated when the policy is; unknown ones are skipped here).
pub(crate) fn regions(policy: &GatePolicy) -> Vec<country::Id> {
    policy.phone_regions.iter().filter_map(|r| r.parse().ok()).collect()
}

/// What a scan of one output needs besides the text.
pub(crate) struct Scanner<'r, 'p> {
    pub rs: &'r Ruleset,
    pub policy: &'p GatePolicy,
    pub regions: Vec<country::Id>,
    pub deadline: Deadline,
}

impl<'r, 'p> Scanner<'r, 'p> {
    pub fn new(rs: &'r Ruleset, policy: &'p GatePolicy) -> Self {
        Scanner { rs, policy, regions: regions(policy), deadline: Deadline::new(policy.time_budget_ms) }
    }

    /// Runs every enabled detector over one string; findings go to `out` in original coordinates.
    pub fn scan_str(
        &self,
        text: &str,
        path: Option<&str>,
        in_key: bool,
        out: &mut Vec<Located<'r>>,
    ) -> Result<(), Timeout> {
        scan_str(self.rs, text, self.policy, &self.regions, &self.deadline, out, path, in_key)
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_str<'r>(
    rs: &'r Ruleset,
    text: &str,
    policy: &GatePolicy,
    regions: &[country::Id],
    deadline: &Deadline,
    out: &mut Vec<Located<'r>>,
    path: Option<&str>,
    in_key: bool,
) -> Result<(), Timeout> {
    deadline.check()?;
    // Between detectors the clock is read only for long texts (a JSON output has many short
    // strings; each is checked on entry).
    let check = || {
        if text.len() > 4096 { deadline.check() } else { Ok(()) }
    };
    let norm = normalize(text);
    let t: &str = &norm.text;
    let hits = rs.prefilter.scan(t);
    let mut raw: Vec<RawFinding<'r>> = Vec::new();
    let d = policy.detectors;
    if d.secrets {
        for (i, r) in rs.secrets.iter().enumerate() {
            if !hits.secret(i).is_empty() && policy.rule_enabled(&r.meta.id) {
                r.scan(t, hits.secret(i), &rs.allowlist, &mut raw);
            }
        }
        check()?;
    }
    if d.regex {
        for (i, r) in rs.regex.iter().enumerate() {
            let triggered = r.keywords.is_empty() || !hits.regex(i).is_empty();
            if triggered && policy.rule_enabled(&r.meta.id) {
                r.scan(t, hits.regex(i), &mut raw);
            }
        }
        check()?;
    }
    if d.pii {
        rs.pii.scan(t, &hits, regions, &|id| policy.rule_enabled(id), &mut raw);
        check()?;
    }
    if d.threat {
        threat::scan(&rs.threat, &norm, &hits, policy, &mut raw);
        check()?;
    }
    // A provider rule names the secret better than a generic `key = value` rule on the same span.
    let specific: Vec<(usize, usize)> =
        raw.iter().filter(|f| f.meta.detector == Detector::Secrets && !f.generic).map(|f| (f.start, f.end)).collect();
    for f in raw {
        if f.generic && specific.iter().any(|&(s, e)| f.start < e && s < f.end) {
            continue;
        }
        if f.meta.detector != Detector::Threat && f.confidence < policy.min_confidence {
            continue;
        }
        let span = if f.original_span { Span::new(f.start, f.end) } else { norm.to_original(f.start, f.end) };
        out.push(Located {
            meta: f.meta,
            span,
            canonical: f.canonical,
            confidence: f.confidence,
            note: f.note,
            path: path.map(str::to_string),
            in_key,
        });
    }
    Ok(())
}

/// Turns located findings into a verdict; returns, per finding, the placeholder to substitute
/// when it is redacted (or blocked).
pub(crate) fn decide(
    found: Vec<Located<'_>>,
    policy: &GatePolicy,
    map: &mut RedactionMap,
    ruleset: &RulesetId,
) -> (GateVerdict, Vec<Option<String>>) {
    let mut signals: Vec<(&str, f32)> = Vec::new();
    for f in found.iter().filter(|f| f.meta.detector == Detector::Threat) {
        match signals.iter_mut().find(|(id, _)| *id == f.meta.id) {
            Some((_, w)) => *w = w.max(f.confidence),
            None => signals.push((&f.meta.id, f.confidence)),
        }
    }
    let threat = (!signals.is_empty()).then(|| {
        let score = 1.0 - signals.iter().fold(1.0f32, |acc, (_, w)| acc * (1.0 - w.clamp(0.0, 1.0)));
        let mut names: Vec<String> = signals.iter().map(|(id, _)| id.to_string()).collect();
        names.sort();
        ThreatSummary { score, signals: names }
    });
    let threat_hit = threat.as_ref().is_some_and(|t| t.score >= policy.threat_threshold);
    let mut findings = Vec::with_capacity(found.len());
    let mut placeholders = Vec::with_capacity(found.len());
    for f in found {
        let action = match (f.meta.detector, f.meta.action) {
            (_, Some(a)) => a,
            (Detector::Threat, None) if threat_hit => policy.threat_action,
            _ => policy.action_for(&f.meta.category),
        };
        let match_hash = map.hash(&f.meta.category, &f.canonical);
        placeholders.push((action >= GateAction::Redact).then(|| map.placeholder(&f.meta.category, &match_hash)));
        findings.push(Finding {
            detector: f.meta.detector,
            rule_id: f.meta.id.clone(),
            category: f.meta.category.clone(),
            severity: f.meta.severity,
            span: f.span,
            path: f.path,
            in_key: f.in_key,
            match_hash,
            confidence: f.confidence,
            action,
            message: f.note.or_else(|| f.meta.message.clone()),
        });
    }
    let action = findings.iter().map(|f| f.action).max().unwrap_or(GateAction::Allow);
    (GateVerdict { action, findings, ruleset: ruleset.clone(), threat }, placeholders)
}

/// The verdict of a scan that could not complete: block, with a finding that says why.
pub(crate) fn fail_closed(rule_id: &str, message: String, ruleset: &RulesetId) -> GateVerdict {
    GateVerdict {
        action: GateAction::Block,
        findings: vec![Finding {
            detector: Detector::Mesh,
            rule_id: rule_id.into(),
            category: "mesh".into(),
            severity: Severity::High,
            span: Span::new(0, 0),
            path: None,
            in_key: false,
            match_hash: String::new(),
            confidence: 1.0,
            action: GateAction::Block,
            message: Some(message),
        }],
        ruleset: ruleset.clone(),
        threat: None,
    }
}
