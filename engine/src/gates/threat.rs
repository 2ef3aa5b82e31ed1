//! Deterministic threat classifier: prompt-injection and exfiltration heuristics. Each rule of
//! `config/gates/threat.toml` is a named signal with a weight; the output's threat score is the
//! noisy-OR of the distinct signals that fired (computed in `scan`), so one strong signal or
//! several weak ones cross the policy threshold, and the verdict names every signal.

use crate::gates::encoded;
use crate::gates::error::GateError;
use crate::gates::matcher::{RuleRegex, Scope};
use crate::gates::normalize::{InvisibleKind, Normalized};
use crate::gates::policy::GatePolicy;
use crate::gates::prefilter::{Hits, keyword_positions};
use crate::gates::rules::{Examples, RuleMeta, ThreatRuleDef};
use crate::gates::scan::RawFinding;
use crate::gates::verdict::Detector;

/// How deep base64/hex payloads inside payloads are decoded and rescanned.
pub(crate) const MAX_DECODE_DEPTH: u8 = 2;

#[derive(Debug)]
pub(crate) enum ThreatKind {
    /// A phrase family or token list (regex).
    Pattern(RuleRegex),
    /// Markdown/HTML image whose URL (group `url`) points to a host not allowed by the policy;
    /// rendering it sends a request — with whatever data the URL carries.
    MarkdownImage(RuleRegex),
    /// Link to a non-allowed host whose URL carries data.
    MarkdownLink(RuleRegex),
    /// Hidden characters flagged by normalisation.
    Invisible(InvisibleKind),
    /// Base64/hex run that decodes to text in which other signals fire.
    Encoded,
}

#[derive(Debug)]
pub(crate) struct ThreatRule {
    pub meta: RuleMeta,
    pub kind: ThreatKind,
    pub weight: f32,
    pub keywords: Vec<String>,
    pub examples: Examples,
    lookbehind: usize,
    max_len: usize,
}

impl ThreatRule {
    pub fn compile(d: ThreatRuleDef) -> Result<Self, GateError> {
        let invalid = |m: &str| GateError::InvalidRule { rule: d.id.clone(), message: m.into() };
        if !(0.0..=1.0).contains(&d.weight) {
            return Err(invalid("weight must be within 0.0..=1.0"));
        }
        let regex = || -> Result<RuleRegex, GateError> {
            let p = d.regex.as_deref().ok_or_else(|| invalid("this kind needs a regex"))?;
            RuleRegex::new(&d.id, p, "url")
        };
        let kind = match d.kind.as_str() {
            "pattern" => ThreatKind::Pattern(regex()?),
            "markdown_image" => ThreatKind::MarkdownImage(regex()?),
            "markdown_link" => ThreatKind::MarkdownLink(regex()?),
            "invisible_zero_width" => ThreatKind::Invisible(InvisibleKind::ZeroWidth),
            "invisible_bidi" => ThreatKind::Invisible(InvisibleKind::Bidi),
            "invisible_tag" => ThreatKind::Invisible(InvisibleKind::Tag),
            "invisible_selector" => ThreatKind::Invisible(InvisibleKind::VariationSelector),
            "encoded_payload" => ThreatKind::Encoded,
            other => return Err(invalid(&format!("unknown threat kind {other:?}"))),
        };
        let needs_keywords =
            matches!(kind, ThreatKind::Pattern(_) | ThreatKind::MarkdownImage(_) | ThreatKind::MarkdownLink(_));
        if needs_keywords && d.keywords.is_empty() {
            return Err(invalid("a regex threat rule needs at least one prefilter keyword"));
        }
        if let ThreatKind::MarkdownImage(r) | ThreatKind::MarkdownLink(r) = &kind
            && !r.has_group()
        {
            return Err(invalid("a markdown rule's regex needs a `url` group"));
        }
        Ok(ThreatRule {
            meta: RuleMeta {
                id: d.id,
                category: "threat".into(),
                severity: d.severity,
                detector: Detector::Threat,
                message: None,
                action: None,
            },
            kind,
            weight: d.weight,
            keywords: d.keywords,
            examples: d.examples,
            lookbehind: d.lookbehind,
            max_len: d.max_len,
        })
    }

    /// Runs a regex-based rule near its keyword occurrences `hits`.
    fn scan_regex<'r>(&'r self, text: &str, hits: &[usize], policy: &GatePolicy, out: &mut Vec<RawFinding<'r>>) {
        let (re, link) = match &self.kind {
            ThreatKind::Pattern(re) => (re, None),
            ThreatKind::MarkdownImage(re) => (re, Some(false)),
            ThreatKind::MarkdownLink(re) => (re, Some(true)),
            _ => return,
        };
        let scope = Scope::Near { hits, lookbehind: self.lookbehind, max_len: self.max_len };
        re.scan(text, scope, |h| {
            let mut weight = self.weight;
            if let Some(is_link) = link {
                let url = &text[h.part.0..h.part.1];
                if policy.host_allowed(url_host(url)) {
                    return;
                }
                match (url_carries_data(url), is_link) {
                    (true, _) => {}
                    // A plain external image still leaks that the output was rendered.
                    (false, false) => weight *= 0.35,
                    (false, true) => return,
                }
            }
            out.push(RawFinding::signal(&self.meta, h.whole.start, h.whole.end, &text[h.whole.clone()], weight));
        });
    }

    /// Whether the rule fires on `text` on its own (rule examples); `all` are the rules rescanned
    /// inside decoded payloads.
    pub fn fires_on(&self, text: &str, all: &[ThreatRule], policy: &GatePolicy) -> bool {
        let mut out = Vec::new();
        match &self.kind {
            ThreatKind::Invisible(_) | ThreatKind::Encoded => {
                let norm = crate::gates::normalize::normalize(text);
                let hits = Hits::default();
                scan_special(std::slice::from_ref(self), all, &norm, &hits, policy, 0, &mut out);
            }
            _ => {
                let norm = crate::gates::normalize::normalize(text);
                self.scan_regex(&norm.text, &keyword_positions(&self.keywords, &norm.text), policy, &mut out);
            }
        }
        !out.is_empty()
    }
}

/// Runs every threat rule on a normalised text. `hits.threat` holds first keyword positions.
pub(crate) fn scan<'r>(
    rules: &'r [ThreatRule],
    norm: &Normalized<'_>,
    hits: &Hits,
    policy: &GatePolicy,
    out: &mut Vec<RawFinding<'r>>,
) {
    for (i, r) in rules.iter().enumerate() {
        let h = hits.threat(i);
        if !h.is_empty() && policy.rule_enabled(&r.meta.id) {
            r.scan_regex(&norm.text, h, policy, out);
        }
    }
    scan_special(rules, rules, norm, hits, policy, 0, out);
}

/// Invisible-character and encoded-payload signals. `nested` are the rules rescanned inside
/// decoded payloads and tag-character text.
fn scan_special<'r>(
    rules: &'r [ThreatRule],
    nested: &'r [ThreatRule],
    norm: &Normalized<'_>,
    _hits: &Hits,
    policy: &GatePolicy,
    depth: u8,
    out: &mut Vec<RawFinding<'r>>,
) {
    for r in rules.iter().filter(|r| policy.rule_enabled(&r.meta.id)) {
        match r.kind {
            ThreatKind::Invisible(kind) => {
                for inv in norm.invisibles.iter().filter(|i| i.kind == kind) {
                    let mut f = RawFinding::signal(&r.meta, inv.span.start, inv.span.end, "", r.weight);
                    f.original_span = true;
                    if kind == InvisibleKind::Tag && !norm.hidden_tags.is_empty() {
                        let inner = nested_signals(nested, &norm.hidden_tags, policy, depth + 1);
                        f.canonical = norm.hidden_tags.clone();
                        if !inner.is_empty() {
                            f.note = Some(format!("hidden text triggers {}", inner.join(", ")));
                        }
                    }
                    out.push(f);
                }
            }
            ThreatKind::Encoded if depth < MAX_DECODE_DEPTH => {
                for (start, end, decoded) in encoded::payloads(&norm.text) {
                    let inner = nested_signals(nested, &decoded, policy, depth + 1);
                    if let Some(w) = inner_weight(nested, &inner) {
                        let mut f = RawFinding::signal(&r.meta, start, end, &decoded, r.weight.max(w));
                        f.note = Some(format!("decoded payload triggers {}", inner.join(", ")));
                        out.push(f);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Ids of the signals that fire on a decoded text (bounded recursion through `depth`).
fn nested_signals(rules: &[ThreatRule], text: &str, policy: &GatePolicy, depth: u8) -> Vec<String> {
    let norm = crate::gates::normalize::normalize(text);
    let mut out = Vec::new();
    for r in rules.iter().filter(|r| policy.rule_enabled(&r.meta.id)) {
        match r.kind {
            ThreatKind::Pattern(_) | ThreatKind::MarkdownImage(_) | ThreatKind::MarkdownLink(_) => {
                r.scan_regex(&norm.text, &keyword_positions(&r.keywords, &norm.text), policy, &mut out);
            }
            _ => {}
        }
    }
    if depth < MAX_DECODE_DEPTH {
        scan_special(rules, rules, &norm, &Hits::default(), policy, depth, &mut out);
    }
    let mut ids: Vec<String> = out.iter().map(|f| f.meta.id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn inner_weight(rules: &[ThreatRule], ids: &[String]) -> Option<f32> {
    ids.iter().filter_map(|id| rules.iter().find(|r| &r.meta.id == id).map(|r| r.weight)).reduce(f32::max)
}

/// Host of an http(s) URL, without userinfo and port.
pub(crate) fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.split(':').next().unwrap_or("")
}

/// Whether a URL carries a payload: a query value, a template, or a long opaque path segment.
fn url_carries_data(url: &str) -> bool {
    if url.contains('{') || url.contains("%7B") || url.contains("%7b") || url.contains('$') {
        return true;
    }
    if let Some((_, q)) = url.split_once('?')
        && q.split('&').any(|kv| kv.split_once('=').is_some_and(|(_, v)| v.len() >= 4))
    {
        return true;
    }
    let path = url.split_once("://").map_or(url, |(_, r)| r);
    path.split(['/', '?', '#'])
        .skip(1)
        .any(|seg| seg.len() >= 24 && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=+%".contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts() {
        assert_eq!(url_host("https://user@evil.io:8443/x?y=1"), "evil.io");
        assert_eq!(url_host("http://a.b"), "a.b");
        assert!(url_carries_data("https://e.io/p.png?d=c2VjcmV0"));
        assert!(url_carries_data("https://e.io/log/{{conversation}}"));
        assert!(url_carries_data("https://e.io/aGVsbG8gd29ybGQgc2VjcmV0IGRhdGE/x.png"));
        assert!(!url_carries_data("https://e.io/images/cat.png"));
        assert!(!url_carries_data("https://e.io/search?q=1"));
    }
}
