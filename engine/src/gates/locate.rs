//! Where a verdict's findings lie in the REDACTED text people are shown. A finding's span is
//! recorded on the original text, which nobody sees once it is redacted; the redacted text is the
//! original with each group of overlapping redact/block spans replaced by one placeholder
//! (`redact::apply`), so the text between groups is unchanged and every position can be mapped.

use serde::Serialize;
use serde_json::Value;

use crate::gates::verdict::{Finding, GateAction, GateVerdict, Span};

/// A finding as it appears in the redacted text: its byte span there and a short excerpt around
/// it (`before`, the `marked` text — a placeholder when the finding was redacted — and `after`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RedactedLocation {
    pub span: Span,
    pub before: String,
    pub marked: String,
    pub after: String,
}

/// Characters of context kept on each side of a marked span.
const CONTEXT_CHARS: usize = 80;

/// The location of each finding of `verdict` (same order) in `redacted`, the document the run
/// recorded. `None` for a finding in an object key, at a path that is not a string, or when the
/// redacted text does not have the shape the spans imply (it was not produced by this verdict).
pub fn redacted_locations(verdict: &GateVerdict, redacted: &Value) -> Vec<Option<RedactedLocation>> {
    verdict
        .findings
        .iter()
        .map(|f| {
            if f.in_key {
                return None;
            }
            let path = f.path.as_deref().unwrap_or("");
            let text = redacted.pointer(path)?.as_str()?;
            let same_string: Vec<&Finding> =
                verdict.findings.iter().filter(|g| !g.in_key && g.path.as_deref().unwrap_or("") == path).collect();
            let span = locate(text, &same_string, f.span)?;
            Some(excerpt(text, span))
        })
        .collect()
}

/// The groups `redact::apply` replaced, as (original span, span of its placeholder in `text`).
fn groups(text: &str, findings: &[&Finding]) -> Option<Vec<(Span, Span)>> {
    let mut spans: Vec<Span> = findings.iter().filter(|f| f.action >= GateAction::Redact).map(|f| f.span).collect();
    spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut merged: Vec<Span> = Vec::new();
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.start < last.end => last.end = last.end.max(s.end),
            _ => merged.push(s),
        }
    }
    let mut out = Vec::with_capacity(merged.len());
    // Redacted offset minus original offset, after the groups seen so far.
    let mut delta: isize = 0;
    for g in merged {
        let start = g.start.checked_add_signed(delta)?;
        if text.as_bytes().get(start) != Some(&b'[') {
            return None;
        }
        let end = start + text[start..].find(']')? + 1;
        delta += (end - start) as isize - g.len() as isize;
        out.push((g, Span::new(start, end)));
    }
    Some(out)
}

/// Map an original span onto the redacted text: a position inside a replaced group maps to
/// the group's placeholder (so the mark covers all of it), one between groups is shifted.
fn locate(text: &str, findings: &[&Finding], span: Span) -> Option<Span> {
    let groups = groups(text, findings)?;
    let map = |pos: usize, is_end: bool| -> Option<usize> {
        let mut delta: isize = 0;
        for (orig, red) in &groups {
            let inside = if is_end { pos > orig.start && pos <= orig.end } else { pos >= orig.start && pos < orig.end };
            if inside {
                return Some(if is_end { red.end } else { red.start });
            }
            if orig.start >= pos {
                break;
            }
            delta += red.len() as isize - orig.len() as isize;
        }
        pos.checked_add_signed(delta)
    };
    let (start, end) = (map(span.start, false)?, map(span.end, true)?);
    (start <= end && end <= text.len() && text.is_char_boundary(start) && text.is_char_boundary(end))
        .then(|| Span::new(start, end))
}

fn excerpt(text: &str, span: Span) -> RedactedLocation {
    let before = &text[..span.start];
    let before_start = before.char_indices().rev().nth(CONTEXT_CHARS - 1).map_or(0, |(i, _)| i);
    let after = &text[span.end..];
    let after_end = after.char_indices().nth(CONTEXT_CHARS).map_or(after.len(), |(i, _)| i);
    RedactedLocation {
        span,
        before: format!("{}{}", if before_start > 0 { "…" } else { "" }, &before[before_start..]),
        marked: text[span.start..span.end].to_string(),
        after: format!("{}{}", &after[..after_end], if after_end < after.len() { "…" } else { "" }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gates::{GateMesh, GatePolicy, RedactionMap, RegexRule};

    fn codename_mesh() -> GateMesh {
        let rule: RegexRule = serde_json::from_value(json!({
            "id": "codename", "category": "codename", "pattern": "\\bPROJECT-[A-Z]{4}\\b",
            "action": "block", "positive": ["launch PROJECT-LYNX"], "negative": ["project lynx"]
        }))
        .unwrap();
        GateMesh::builtin().with_extra_rules(vec![rule]).unwrap()
    }

    #[test]
    fn a_redacted_finding_marks_its_placeholder_and_later_ones_shift() {
        let doc = json!({"memo": {"text": "Mail jane.doe@acme-corp.com about PROJECT-LYNX today, then ping bob@x-corp.io"}, "n": 3});
        let mesh = codename_mesh();
        let (verdict, redacted) = mesh.scan_json(&doc, &GatePolicy::default(), &mut RedactionMap::with_key([3; 32]));
        let redacted = redacted.expect("something was redacted");
        let text = redacted["memo"]["text"].as_str().unwrap();
        let locs = redacted_locations(&verdict, &redacted);
        assert_eq!(locs.len(), verdict.findings.len());
        let marked: Vec<(String, String)> = verdict
            .findings
            .iter()
            .zip(&locs)
            .map(|(f, l)| (f.rule_id.clone(), l.as_ref().expect("located").marked.clone()))
            .collect();
        assert!(marked.contains(&("codename".into(), "[CODENAME_1]".into())), "{marked:?} in {text}");
        for (f, l) in verdict.findings.iter().zip(&locs) {
            let l = l.as_ref().unwrap();
            assert_eq!(&text[l.span.start..l.span.end], l.marked);
            assert!(l.marked.starts_with('[') && l.marked.ends_with(']'), "{} marked {:?}", f.rule_id, l.marked);
            assert_eq!(format!("{}{}{}", l.before, l.marked, l.after), text);
        }
    }

    #[test]
    fn an_allowed_finding_is_shifted_past_earlier_placeholders() {
        let doc = json!({"text": "PROJECT-LYNX is led by jane.doe@acme-corp.com"});
        let policy: GatePolicy = GatePolicy::from_toml("[actions]\nemail = \"allow\"\n").unwrap();
        let (verdict, redacted) = codename_mesh().scan_json(&doc, &policy, &mut RedactionMap::with_key([3; 32]));
        let redacted = redacted.unwrap();
        let locs = redacted_locations(&verdict, &redacted);
        let email = verdict.findings.iter().position(|f| f.rule_id == "pii.email").expect("email found");
        assert_eq!(verdict.findings[email].action, GateAction::Allow);
        assert_eq!(locs[email].as_ref().unwrap().marked, "jane.doe@acme-corp.com");
        assert_eq!(redacted["text"], "[CODENAME_1] is led by jane.doe@acme-corp.com");
    }

    #[test]
    fn text_that_does_not_fit_the_verdict_is_not_located() {
        let doc = json!({"text": "about PROJECT-LYNX"});
        let (verdict, _) =
            codename_mesh().scan_json(&doc, &GatePolicy::default(), &mut RedactionMap::with_key([3; 32]));
        assert_eq!(redacted_locations(&verdict, &json!({"text": "something else entirely"})), vec![None]);
        assert_eq!(redacted_locations(&verdict, &json!({"other": 1})), vec![None]);
    }
}
