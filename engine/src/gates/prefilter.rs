//! Keyword prefilter: one Aho-Corasick pass over the text finds every rule keyword and context
//! word, so a rule's regex runs only when one of its keywords occurs (and only from its first
//! occurrence), and context-sensitive PII rules know where their context words are. This single
//! pass is what keeps the mesh fast: most rules never run on a given text.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

/// What a keyword switches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Secret(usize),
    Threat(usize),
    Regex(usize),
    /// A context word of the PII rule with this index.
    Context(usize),
}

/// The automaton and, per keyword, the rules it triggers.
#[derive(Debug)]
pub(crate) struct Prefilter {
    ac: Option<AhoCorasick>,
    targets: Vec<Vec<Target>>,
    counts: [usize; 4],
}

/// What one pass found: the first keyword position per rule (`usize::MAX` when absent) and every
/// context word occurrence (start, end) per PII rule.
#[derive(Debug, Default)]
pub(crate) struct Hits {
    pub secret: Vec<usize>,
    pub threat: Vec<usize>,
    pub regex: Vec<usize>,
    pub context: Vec<Vec<(usize, usize)>>,
}

pub(crate) const NONE: usize = usize::MAX;

impl Prefilter {
    /// Builds the automaton from (keyword, target) pairs; keywords match ASCII case-insensitively.
    /// `counts` are the numbers of secret, threat, regex and PII rules.
    pub fn build(pairs: Vec<(String, Target)>, counts: [usize; 4]) -> Prefilter {
        let mut keywords: Vec<String> = Vec::new();
        let mut targets: Vec<Vec<Target>> = Vec::new();
        for (kw, t) in pairs {
            let kw = kw.to_ascii_lowercase();
            if kw.is_empty() {
                continue;
            }
            match keywords.iter().position(|k| *k == kw) {
                Some(i) => {
                    if !targets[i].contains(&t) {
                        targets[i].push(t)
                    }
                }
                None => {
                    keywords.push(kw);
                    targets.push(vec![t]);
                }
            }
        }
        let ac = (!keywords.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&keywords)
                .expect("keyword automaton within limits")
        });
        Prefilter { ac, targets, counts }
    }

    pub fn scan(&self, text: &str) -> Hits {
        let [s, t, r, c] = self.counts;
        let mut hits = Hits {
            secret: vec![NONE; s],
            threat: vec![NONE; t],
            regex: vec![NONE; r],
            context: Vec::new(),
        };
        hits.context.resize_with(c, Vec::new);
        let Some(ac) = &self.ac else { return hits };
        for m in ac.find_overlapping_iter(text) {
            for t in &self.targets[m.pattern().as_usize()] {
                match *t {
                    Target::Secret(i) => hits.secret[i] = hits.secret[i].min(m.start()),
                    Target::Threat(i) => hits.threat[i] = hits.threat[i].min(m.start()),
                    Target::Regex(i) => hits.regex[i] = hits.regex[i].min(m.start()),
                    Target::Context(i) => hits.context[i].push((m.start(), m.end())),
                }
            }
        }
        hits
    }
}

impl Hits {
    /// Whether a context word of PII rule `rule` stands as a whole word within `window` bytes of
    /// `[start, end)`.
    pub fn context_near(&self, text: &str, rule: usize, start: usize, end: usize, window: usize) -> bool {
        self.context.get(rule).is_some_and(|v| {
            v.iter().any(|&(s, e)| {
                e + window >= start && s <= end + window && is_word(text.as_bytes(), s, e)
            })
        })
    }

    /// Context word occurrences of PII rule `rule` that stand as whole words.
    pub fn context_words<'a>(&'a self, text: &'a str, rule: usize) -> impl Iterator<Item = (usize, usize)> + 'a {
        self.context
            .get(rule)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&(s, e)| is_word(text.as_bytes(), s, e))
    }
}

/// Whether `[s, e)` is not glued to letters or digits on either side ("dob" is not in "adobe").
fn is_word(b: &[u8], s: usize, e: usize) -> bool {
    let inner_start = b.get(s).is_some_and(|c| c.is_ascii_alphanumeric());
    let inner_end = e > 0 && b.get(e - 1).is_some_and(|c| c.is_ascii_alphanumeric());
    let before = s > 0 && b[s - 1].is_ascii_alphanumeric();
    let after = b.get(e).is_some_and(|c| c.is_ascii_alphanumeric());
    !(inner_start && before) && !(inner_end && after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_hits_and_context_words() {
        let p = Prefilter::build(
            vec![
                ("ghp_".into(), Target::Secret(0)),
                ("Ignore".into(), Target::Threat(0)),
                ("dob".into(), Target::Context(0)),
            ],
            [1, 1, 0, 1],
        );
        let text = "adobe DOB: x IGNORE ghp_ ghp_";
        let h = p.scan(text);
        assert_eq!(h.secret, vec![20]);
        assert_eq!(h.threat, vec![13]);
        assert_eq!(h.context[0].len(), 2);
        assert_eq!(h.context_words(text, 0).collect::<Vec<_>>(), vec![(6, 9)]);
        assert!(h.context_near(text, 0, 11, 12, 5));
        assert!(!h.context_near(text, 0, 25, 29, 5));
    }
}
