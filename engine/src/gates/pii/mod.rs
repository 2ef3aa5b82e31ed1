//! Personal-data detector. Each recogniser (`kind`) is code — it knows its format and checksum —
//! while the rules in `config/gates/pii.toml` say which kinds are on, their category, severity,
//! base confidence and context words: context near a match raises confidence, and for kinds
//! whose format alone is too weak (bare 9-digit numbers, dates) it is required.

mod alnum;
mod contextual;
mod email;
mod ipv6;
mod nordic;
mod numeric;
mod phone;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use phonenumber::country;

use crate::gates::error::GateError;
use crate::gates::prefilter::{Hits, is_word};
use crate::gates::rules::{Examples, PiiRuleDef, RuleMeta};
use crate::gates::scan::{RawFinding, floor_boundary};
use crate::gates::verdict::{Detector, Span};

/// The built-in recognisers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PiiKind {
    Email,
    Phone,
    Card,
    Iban,
    /// US SSN written `123-45-6789` or `123 45 6789`.
    Ssn,
    /// US SSN written as 9 bare digits (needs context).
    SsnBare,
    Ipv4,
    Ipv6,
    EsDni,
    ItCodiceFiscale,
    FrNir,
    NlBsn,
    PlPesel,
    /// Swedish personnummer / samordningsnummer (date + Luhn).
    SePersonnummer,
    /// Norwegian fødselsnummer / D- and H-numbers (two mod-11 digits).
    NoFodselsnummer,
    /// Danish CPR number (date + serial; needs context).
    DkCpr,
    /// Finnish henkilötunnus (century sign + mod-31 check character).
    FiHetu,
    Dob,
    Address,
}

impl PiiKind {
    fn parse(s: &str) -> Option<Self> {
        use PiiKind::*;
        Some(match s {
            "email" => Email,
            "phone" => Phone,
            "card" => Card,
            "iban" => Iban,
            "ssn" => Ssn,
            "ssn_bare" => SsnBare,
            "ipv4" => Ipv4,
            "ipv6" => Ipv6,
            "es_dni" => EsDni,
            "it_codice_fiscale" => ItCodiceFiscale,
            "fr_nir" => FrNir,
            "nl_bsn" => NlBsn,
            "pl_pesel" => PlPesel,
            "se_personnummer" => SePersonnummer,
            "no_fodselsnummer" => NoFodselsnummer,
            "dk_cpr" => DkCpr,
            "fi_henkilotunnus" => FiHetu,
            "dob" => Dob,
            "address" => Address,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub(crate) struct PiiRule {
    pub meta: RuleMeta,
    pub kind: PiiKind,
    pub context: Vec<String>,
    pub examples: Examples,
    /// Context words, searched only around a candidate (most kinds) — candidates are rare, so
    /// this costs far less than finding every context word in every text.
    ctx: Option<AhoCorasick>,
    confidence: f32,
    context_boost: f32,
    require_context: bool,
    window: usize,
}

impl PiiRule {
    pub fn compile(d: PiiRuleDef) -> Result<Self, GateError> {
        let invalid = |m: String| GateError::InvalidRule { rule: d.id.clone(), message: m };
        let kind = PiiKind::parse(&d.kind).ok_or_else(|| invalid(format!("unknown pii kind {:?}", d.kind)))?;
        let needs_context = matches!(kind, PiiKind::Dob | PiiKind::Address) || d.require_context;
        if needs_context && d.context.is_empty() {
            return Err(invalid("this rule needs context words".into()));
        }
        let ctx = (!d.context.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(&d.context)
                .expect("context automaton within limits")
        });
        Ok(PiiRule {
            ctx,
            meta: RuleMeta {
                id: d.id,
                category: d.category,
                severity: d.severity,
                detector: Detector::Pii,
                message: None,
                action: None,
            },
            kind,
            context: d.context,
            examples: d.examples,
            confidence: d.confidence,
            context_boost: d.context_boost,
            require_context: needs_context,
            window: d.window,
        })
    }
}

impl PiiRule {
    /// Rules that run only where their context words are (and so need their positions).
    pub fn needs_positions(&self) -> bool {
        matches!(self.kind, PiiKind::Dob | PiiKind::Address)
    }

    /// Whether a context word stands as a whole word within `window` bytes of `[start, end)`.
    fn context_near(&self, text: &str, start: usize, end: usize) -> bool {
        let Some(ac) = &self.ctx else { return false };
        let from = floor_boundary(text, start.saturating_sub(self.window));
        let to = floor_boundary(text, (end + self.window).min(text.len()));
        ac.find_iter(&text[from..to]).any(|m| is_word(text.as_bytes(), from + m.start(), from + m.end()))
    }
}

/// All PII rules, indexed by kind.
#[derive(Debug)]
pub(crate) struct PiiRules {
    pub rules: Vec<PiiRule>,
}

/// A match of a recogniser, before rules and context are applied.
pub(crate) struct Candidate {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
    pub canonical: String,
}

impl PiiRules {
    pub fn new(rules: Vec<PiiRule>) -> Self {
        PiiRules { rules }
    }

    fn has(&self, kind: PiiKind, enabled: &dyn Fn(&str) -> bool) -> bool {
        self.rules.iter().any(|r| r.kind == kind && enabled(&r.meta.id))
    }

    /// Runs every enabled recogniser over `text`. `only` restricts to one rule (example checks).
    pub fn scan<'r>(
        &'r self,
        text: &str,
        hits: &Hits,
        regions: &[country::Id],
        enabled: &dyn Fn(&str) -> bool,
        out: &mut Vec<RawFinding<'r>>,
    ) {
        let mut cands: Vec<Candidate> = Vec::new();
        let on = |k| self.has(k, enabled);
        if on(PiiKind::Email) {
            email::scan(text, &mut cands);
        }
        let mut phones = Vec::new();
        let want_phones = on(PiiKind::Phone);
        numeric::scan(text, &on, &mut cands, want_phones.then_some(&mut phones));
        if on(PiiKind::Ipv6) {
            ipv6::scan(text, &mut cands);
        }
        for (i, r) in self.rules.iter().enumerate() {
            if matches!(r.kind, PiiKind::Dob | PiiKind::Address) && enabled(&r.meta.id) {
                let words: Vec<(usize, usize)> = hits.context_words(text, i).collect();
                contextual::scan(r.kind, text, &words, r.window, &mut cands);
            }
        }
        if !phones.is_empty() {
            let mut claimed: Vec<Span> = cands.iter().map(|c| Span::new(c.start, c.end)).collect();
            claimed.sort_unstable();
            let context = |s, e| self.rules.iter().any(|r| r.kind == PiiKind::Phone && r.context_near(text, s, e));
            phone::validate(text, &phones, regions, &claimed, context, &mut cands);
        }
        // An IBAN's digit groups can look like a card or a phone number: the IBAN wins.
        let ibans: Vec<Span> =
            cands.iter().filter(|c| c.kind == PiiKind::Iban).map(|c| Span::new(c.start, c.end)).collect();
        for c in cands {
            if c.kind != PiiKind::Iban && ibans.iter().any(|s| s.overlaps(&Span::new(c.start, c.end))) {
                continue;
            }
            for r in self.rules.iter() {
                if r.kind != c.kind || !enabled(&r.meta.id) {
                    continue;
                }
                let contextual = matches!(r.kind, PiiKind::Dob | PiiKind::Address);
                let near = contextual || r.context_near(text, c.start, c.end);
                if r.require_context && !near {
                    continue;
                }
                let boost = if near && !contextual { r.context_boost } else { 0.0 };
                out.push(RawFinding {
                    meta: &r.meta,
                    start: c.start,
                    end: c.end,
                    canonical: c.canonical.clone(),
                    confidence: (r.confidence + boost).min(1.0),
                    generic: false,
                    note: None,
                    original_span: false,
                });
            }
        }
    }
}

/// Whether `b[i]` is glued to a word character (so a match cannot start or end there).
pub(crate) fn wordy(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Position of the first ASCII digit at or after `i`. Eight bytes are tested at a time (a word
/// has a byte in '0'..='9' iff, after XOR with '0', it has a byte below 10), which lets the
/// numeric recognisers skip prose at a fraction of a cycle per byte.
pub(crate) fn next_digit(b: &[u8], mut i: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let t = w ^ (b'0' as u64 * LO);
        if t.wrapping_sub(10 * LO) & !t & HI != 0
            && let Some(k) = b[i..i + 8].iter().position(u8::is_ascii_digit)
        {
            return Some(i + k);
        }
        i += 8;
    }
    b[i..].iter().position(u8::is_ascii_digit).map(|k| i + k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn next_digit_matches_a_plain_search(s in "[a-z0-9 ./:{}\\x80-\\xff]{0,40}", from in 0usize..40) {
            let b = s.as_bytes();
            let from = from.min(b.len());
            let want = b[from..].iter().position(u8::is_ascii_digit).map(|k| from + k);
            prop_assert_eq!(next_digit(b, from), want);
        }
    }
}
