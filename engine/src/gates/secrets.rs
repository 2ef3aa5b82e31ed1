//! Secret scanner: provider token formats, private keys, connection strings and generic
//! `key = value` assignments, each a data rule (`config/gates/secrets.toml`) with prefilter
//! keywords, a regex whose `secret` group is the credential itself, an entropy floor, allowlists
//! for placeholders, and optional structural validators.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use base64::Engine as _;
use regex::{Regex, RegexSet};

use crate::gates::checksum::shannon_entropy;
use crate::gates::error::GateError;
use crate::gates::matcher::{RuleRegex, Scope};
use crate::gates::prefilter::keyword_positions;
use crate::gates::rules::{AllowlistDef, Examples, RuleMeta, SecretRuleDef, build_regex};
use crate::gates::scan::RawFinding;
use crate::gates::verdict::Detector;

/// Structural checks beyond the regex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Validator {
    /// The first segment is base64url JSON with an `alg` or `typ` member.
    Jwt,
    /// The value is not an identifier, call, path or URL (for generic assignments in code).
    NotCode,
}

#[derive(Debug)]
pub(crate) struct SecretRule {
    pub meta: RuleMeta,
    pub keywords: Vec<String>,
    pub examples: Examples,
    regex: RuleRegex,
    entropy: Option<f32>,
    allow: Vec<Regex>,
    validator: Option<Validator>,
    ignore_key_suffixes: Vec<String>,
    lookbehind: usize,
    max_len: usize,
    confidence: f32,
    generic: bool,
}

impl SecretRule {
    pub fn compile(d: SecretRuleDef) -> Result<Self, GateError> {
        let invalid = |m: String| GateError::InvalidRule { rule: d.id.clone(), message: m };
        if d.keywords.is_empty() {
            return Err(invalid("a secret rule needs at least one prefilter keyword".into()));
        }
        let regex = RuleRegex::new(&d.id, &d.regex, "secret")?;
        let validator = match d.validate.as_deref() {
            None => None,
            Some("jwt") => Some(Validator::Jwt),
            Some("not_code") => Some(Validator::NotCode),
            Some(other) => return Err(invalid(format!("unknown validator {other:?}"))),
        };
        let allow = d.allow.iter().map(|p| build_regex(&d.id, p)).collect::<Result<_, _>>()?;
        Ok(SecretRule {
            meta: RuleMeta {
                id: d.id,
                category: "secret".into(),
                severity: d.severity,
                detector: Detector::Secrets,
                message: (!d.description.is_empty()).then_some(d.description),
                action: None,
            },
            keywords: d.keywords,
            examples: d.examples,
            regex,
            entropy: d.entropy,
            allow,
            validator,
            ignore_key_suffixes: d.ignore_key_suffixes.iter().map(|x| x.to_ascii_lowercase()).collect(),
            lookbehind: d.lookbehind,
            max_len: d.max_len,
            confidence: d.confidence,
            generic: d.generic,
        })
    }

    /// Runs the rule near its keyword occurrences `hits`.
    pub fn scan<'r>(&'r self, text: &str, hits: &[usize], allow: &Allowlist, out: &mut Vec<RawFinding<'r>>) {
        let scope = Scope::Near { hits, lookbehind: self.lookbehind, max_len: self.max_len };
        self.regex.scan(text, scope, |h| {
            let (s, e) = h.part;
            if let Some((ks, ke)) = h.key
                && self.ignored_key(&text[ks..ke])
            {
                return;
            }
            if e > s && self.accepts(&text[s..e], allow) {
                out.push(RawFinding {
                    meta: &self.meta,
                    start: s,
                    end: e,
                    canonical: text[s..e].to_string(),
                    confidence: self.confidence,
                    generic: self.generic,
                    note: None,
                    original_span: false,
                });
            }
        });
    }

    /// Where the rule's keywords occur in `text` (what the prefilter would report).
    pub fn keyword_hits(&self, text: &str) -> Vec<usize> {
        keyword_positions(&self.keywords, text)
    }

    fn ignored_key(&self, key: &str) -> bool {
        let key: String = key
            .trim_end_matches(['"', '\''])
            .chars()
            .map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_lowercase() })
            .collect();
        self.ignore_key_suffixes.iter().any(|x| key.ends_with(x.as_str()))
    }

    fn accepts(&self, v: &str, allow: &Allowlist) -> bool {
        if self.entropy.is_some_and(|min| shannon_entropy(v.as_bytes()) < min) {
            return false;
        }
        if allow.allows(v) || self.allow.iter().any(|r| r.is_match(v)) {
            return false;
        }
        match self.validator {
            None => true,
            Some(Validator::Jwt) => jwt_header_ok(v),
            Some(Validator::NotCode) => not_code(v),
        }
    }
}

/// Placeholder values that are never reported: documentation examples, templates, env refs.
#[derive(Debug)]
pub(crate) struct Allowlist {
    substrings: Option<AhoCorasick>,
    patterns: RegexSet,
    pub examples: Examples,
}

impl Allowlist {
    pub fn compile(d: &AllowlistDef) -> Result<Self, GateError> {
        let substrings = (!d.substrings.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .build(&d.substrings)
                .expect("allowlist automaton within limits")
        });
        let patterns = RegexSet::new(&d.patterns)
            .map_err(|e| GateError::Regex { rule: "allowlist".into(), message: e.to_string() })?;
        Ok(Allowlist { substrings, patterns, examples: d.examples.clone() })
    }

    pub fn allows(&self, value: &str) -> bool {
        self.substrings.as_ref().is_some_and(|ac| ac.is_match(value)) || self.patterns.is_match(value)
    }
}

fn jwt_header_ok(token: &str) -> bool {
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(bytes) = engine.decode(head.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
        .is_ok_and(|m| m.contains_key("alg") || m.contains_key("typ"))
}

/// A generic `token = value` in code is usually an expression, not a literal secret: reject
/// calls, URLs, paths, pure numbers and identifier chains, keep mixed letter/digit/symbol values.
fn not_code(v: &str) -> bool {
    if v.contains("://") || v.contains('(') || v.contains(')') || v.contains(char::is_whitespace) {
        return false;
    }
    let letters = v.bytes().any(|b| b.is_ascii_alphabetic());
    let digits = v.bytes().any(|b| b.is_ascii_digit());
    let symbols = v.bytes().any(|b| !b.is_ascii_alphanumeric() && !b"._/-:".contains(&b) && b != b'_');
    (letters && digits) || symbols
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators() {
        assert!(jwt_header_ok("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"));
        assert!(!jwt_header_ok("eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.sig"));
        assert!(not_code("S3cr3tPassw0rd"));
        assert!(not_code("p@ss!word"));
        assert!(!not_code("self.token_value"));
        assert!(!not_code("getToken()"));
        assert!(!not_code("12345678901"));
        assert!(!not_code("https://auth.example.com/token"));
    }
}
