//! Rule regexes searched only near their keywords. The prefilter reports where each keyword
//! occurs; a rule whose match starts at its keyword (`lookbehind = 0`) is tried as an anchored
//! search at each occurrence — a mismatch costs a few bytes — and other rules search a bounded
//! window around each occurrence. So a rule's cost follows its keyword count, never the text
//! length, which is what keeps the mesh fast on long outputs full of common words.

use std::ops::Range;

use regex_automata::{Anchored, Input, meta};

use crate::gates::error::GateError;
use crate::gates::scan::{floor_boundary, next_boundary};

/// A compiled rule regex with an optional named group that holds the interesting part.
#[derive(Clone, Debug)]
pub(crate) struct RuleRegex {
    re: meta::Regex,
    group: Option<usize>,
    /// A `key` group: the name a value is assigned to, for rules that judge it.
    key: Option<usize>,
}

/// One match: the whole span and the group's span (the whole span when there is no group).
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub whole: Range<usize>,
    pub part: (usize, usize),
    pub key: Option<(usize, usize)>,
}

/// Where to look.
pub(crate) enum Scope<'h> {
    /// The whole text (rules without keywords).
    Whole,
    /// Near these keyword positions (sorted ascending).
    Near { hits: &'h [usize], lookbehind: usize, max_len: usize },
}

/// `\b` and `\B` become ASCII word boundaries: matching runs on NFKC text, rules are about ASCII
/// tokens, and an ASCII boundary keeps the lazy DFA usable on non-ASCII text (a Unicode
/// boundary makes it fall back to a much slower engine).
fn ascii_boundaries(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(b @ ('b' | 'B')) => {
                out.push_str("(?-u:\\");
                out.push(b);
                out.push(')');
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

impl RuleRegex {
    /// Compiles `pattern` with bounded sizes; `group` names the capture group to report.
    pub fn new(rule: &str, pattern: &str, group: &str) -> Result<Self, GateError> {
        let err = |e: &dyn std::fmt::Display| GateError::Regex { rule: rule.into(), message: e.to_string() };
        // Validate with the regex crate first: its errors point at the offending syntax.
        regex::Regex::new(pattern).map_err(|e| err(&e))?;
        let config = meta::Config::new().nfa_size_limit(Some(4 << 20)).hybrid_cache_capacity(2 << 20);
        let re = meta::Regex::builder().configure(config).build(&ascii_boundaries(pattern)).map_err(|e| err(&e))?;
        let info = re.group_info();
        let index = |name| info.to_index(regex_automata::PatternID::ZERO, name);
        let (group, key) = (index(group), index("key"));
        Ok(RuleRegex { re, group, key })
    }

    pub fn has_group(&self) -> bool {
        self.group.is_some()
    }

    fn search(&self, text: &str, range: Range<usize>, anchored: bool) -> Option<Hit> {
        let mode = if anchored { Anchored::Yes } else { Anchored::No };
        let m = self.re.search(&Input::new(text).range(range).anchored(mode))?;
        let whole = m.start()..m.end();
        let mut part = (m.start(), m.end());
        let mut key = None;
        if self.group.is_some() || self.key.is_some() {
            // Groups are resolved on the match span only (the slow engines never see the text).
            let mut caps = self.re.create_captures();
            let input = Input::new(text).range(whole.clone()).anchored(Anchored::Yes);
            self.re.search_captures(&input, &mut caps);
            if let Some(s) = self.group.and_then(|g| caps.get_group(g)) {
                part = (s.start, s.end);
            }
            key = self.key.and_then(|g| caps.get_group(g)).map(|s| (s.start, s.end));
        }
        Some(Hit { whole, part, key })
    }

    /// Calls `f` for every non-overlapping match in `scope`, left to right.
    pub fn scan(&self, text: &str, scope: Scope<'_>, mut f: impl FnMut(Hit)) {
        let len = text.len();
        let run = |from: usize, to: usize, f: &mut dyn FnMut(Hit)| -> usize {
            let mut at = from;
            let mut last = from;
            while at <= to {
                let Some(h) = self.search(text, at..to, false) else {
                    break;
                };
                at = if h.whole.end > h.whole.start { h.whole.end } else { next_boundary(text, h.whole.end) };
                last = h.whole.end;
                f(h);
            }
            last
        };
        match scope {
            Scope::Whole => {
                run(0, len, &mut f);
            }
            Scope::Near { hits, lookbehind: 0, max_len } => {
                let mut pos = 0;
                for &h in hits {
                    if h < pos || h >= len || !text.is_char_boundary(h) {
                        continue;
                    }
                    let to = ceil_boundary(text, (h + max_len).min(len));
                    if let Some(hit) = self.search(text, h..to, true) {
                        pos = hit.whole.end.max(h + 1);
                        f(hit);
                    }
                }
            }
            Scope::Near { hits, lookbehind, max_len } => {
                let mut pos = 0;
                let mut i = 0;
                while i < hits.len() {
                    // Merge the windows of nearby keyword occurrences into one search.
                    let from = floor_boundary(text, hits[i].saturating_sub(lookbehind).max(pos));
                    let mut to = (hits[i] + max_len).min(len);
                    i += 1;
                    while i < hits.len() && hits[i].saturating_sub(lookbehind) <= to {
                        to = (hits[i] + max_len).min(len);
                        i += 1;
                    }
                    let to = ceil_boundary(text, to);
                    if from < to {
                        pos = pos.max(run(from, to, &mut f));
                    }
                }
            }
        }
    }
}

fn ceil_boundary(text: &str, mut p: usize) -> usize {
    while p < text.len() && !text.is_char_boundary(p) {
        p += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(re: &RuleRegex, text: &str, scope: Scope<'_>) -> Vec<String> {
        let mut v = Vec::new();
        re.scan(text, scope, |h| v.push(text[h.part.0..h.part.1].to_string()));
        v
    }

    #[test]
    fn anchored_and_windowed_searches() {
        let re = RuleRegex::new("t", r"\btok_(?P<secret>[a-z]{4})\b", "secret").unwrap();
        let text = "tok_abcd xtok_zzzz tok_efgh tok_x";
        assert_eq!(all(&re, text, Scope::Whole), ["abcd", "efgh"]);
        let hits = [0, 10, 19, 28];
        assert_eq!(all(&re, text, Scope::Near { hits: &hits, lookbehind: 0, max_len: 64 }), ["abcd", "efgh"]);
        assert_eq!(all(&re, text, Scope::Near { hits: &[19], lookbehind: 0, max_len: 64 }), ["efgh"]);
        // Keyword in the middle of the match: a window reaching back finds it.
        let re = RuleRegex::new("m", r"[a-z]+MID[a-z]+", "none").unwrap();
        let text = "xx abcMIDdef yy";
        assert_eq!(all(&re, text, Scope::Near { hits: &[6], lookbehind: 8, max_len: 16 }), ["abcMIDdef"]);
        assert!(all(&re, text, Scope::Near { hits: &[6], lookbehind: 0, max_len: 16 }).is_empty());
    }

    #[test]
    fn word_boundaries_are_ascii() {
        assert_eq!(ascii_boundaries(r"\bx\B\\b\d"), r"(?-u:\b)x(?-u:\B)\\b\d");
        let re = RuleRegex::new("w", r"\bkey\b", "none").unwrap();
        assert_eq!(all(&re, "é key é", Scope::Whole), ["key"]);
    }
}
