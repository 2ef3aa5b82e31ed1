//! Rule self-checks at load time: every positive example of a rule must make that rule fire and
//! no negative example may, through the same code path a real scan takes (normalisation,
//! keyword prefilter, validators, allowlists). A failing rule stops the whole rule set loading.

use crate::gates::error::GateError;
use crate::gates::normalize::normalize;
use crate::gates::policy::GatePolicy;
use crate::gates::regex_rules::CompiledRegexRule;
use crate::gates::rules::{Examples, Ruleset};
use crate::gates::scan::{RawFinding, regions};

/// Checks the examples of every rule of `rs`.
pub(crate) fn check_all(rs: &Ruleset) -> Result<(), GateError> {
    let policy = GatePolicy::default();
    let regions = regions(&policy);
    for r in rs.secrets.iter() {
        require(&r.meta.id, &r.examples, true)?;
        check(&r.meta.id, &r.examples, |text| {
            let norm = normalize(text);
            let mut out = Vec::new();
            r.scan(&norm.text, &r.keyword_hits(&norm.text), &rs.allowlist, &mut out);
            !out.is_empty()
        })?;
    }
    check("allowlist", &rs.allowlist.examples, |v| rs.allowlist.allows(v))?;
    for r in rs.pii.rules.iter() {
        require(&r.meta.id, &r.examples, true)?;
        check(&r.meta.id, &r.examples, |text| {
            let norm = normalize(text);
            let hits = rs.prefilter.scan(&norm.text);
            let mut out: Vec<RawFinding<'_>> = Vec::new();
            rs.pii.scan(&norm.text, &hits, &regions, &|id| id == r.meta.id, &mut out);
            out.iter().any(|f| f.confidence >= policy.min_confidence)
        })?;
    }
    for r in rs.threat.iter() {
        require(&r.meta.id, &r.examples, true)?;
        check(&r.meta.id, &r.examples, |text| r.fires_on(text, &rs.threat, &policy))?;
    }
    for r in &rs.regex {
        check_regex(r)?;
    }
    Ok(())
}

/// Checks one user regex rule.
pub(crate) fn check_regex(r: &CompiledRegexRule) -> Result<(), GateError> {
    require(&r.meta.id, &r.examples, false)?;
    check(&r.meta.id, &r.examples, |text| {
        let norm = normalize(text);
        let mut out = Vec::new();
        r.scan(&norm.text, &r.keyword_hits(&norm.text), &mut out);
        !out.is_empty()
    })
}

/// Data rules need both kinds of example; user regex rules at least a positive one.
fn require(rule: &str, ex: &Examples, negative: bool) -> Result<(), GateError> {
    let missing = if ex.positive.is_empty() {
        Some("positive")
    } else if negative && ex.negative.is_empty() {
        Some("negative")
    } else {
        None
    };
    match missing {
        Some(kind) => Err(GateError::InvalidRule {
            rule: rule.to_string(),
            message: format!("needs at least one {kind} example"),
        }),
        None => Ok(()),
    }
}

fn check(rule: &str, ex: &Examples, fires: impl Fn(&str) -> bool) -> Result<(), GateError> {
    let err = |kind, index, outcome, example: &str| GateError::Example {
        rule: rule.to_string(),
        kind,
        index,
        outcome,
        example: example.chars().take(120).collect(),
    };
    for (i, p) in ex.positive.iter().enumerate() {
        if !fires(p) {
            return Err(err("positive", i + 1, "did not match", p));
        }
    }
    for (i, n) in ex.negative.iter().enumerate() {
        if fires(n) {
            return Err(err("negative", i + 1, "matched", n));
        }
    }
    Ok(())
}
