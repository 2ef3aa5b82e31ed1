//! The shared digit pass: one jump from digit to digit feeds every recogniser that needs digits.
//! Here: digit runs (digits joined by single spaces, dashes or dots) for payment cards (issuer
//! prefix + Luhn), US SSNs (invalid ranges excluded), IPv4, and the numeric national ids — French
//! NIR, Dutch BSN, Polish PESEL, Spanish DNI (digits + letter), the Nordic personal identity
//! numbers (`nordic.rs`); the same pass hands capital-led
//! words to `alnum.rs` (IBAN, codice fiscale, NIE) and phone-shaped spans to `phone.rs`.

use crate::gates::checksum::{card_brand, es_dni, fr_nir, luhn, nl_bsn, pl_pesel, ssn_valid};
use crate::gates::pii::{Candidate, PiiKind, alnum, next_digit, nordic, phone, wordy};

const MAX_GROUPS: usize = 8;

/// A run of digit groups.
struct Run {
    start: usize,
    end: usize,
    groups: [(usize, usize); MAX_GROUPS],
    n: usize,
    /// More groups than `MAX_GROUPS`.
    overflow: bool,
    /// The separator between groups, 0 for none.
    sep: u8,
}

impl Run {
    fn lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.groups[..self.n].iter().map(|(s, e)| e - s)
    }
    fn digits(&self, b: &[u8], buf: &mut Vec<u8>) {
        buf.clear();
        for &(s, e) in &self.groups[..self.n] {
            buf.extend_from_slice(&b[s..e]);
        }
    }
}

/// Runs the digit pass; phone-shaped spans go to `phones` when given.
pub(crate) fn scan(
    text: &str,
    on: &dyn Fn(PiiKind) -> bool,
    out: &mut Vec<Candidate>,
    mut phones: Option<&mut Vec<(usize, usize)>>,
) {
    use PiiKind::*;
    let kinds = [Card, Ssn, SsnBare, Ipv4, FrNir, NlBsn, PlPesel, EsDni].map(on);
    let (iban, cf) = (on(Iban), on(ItCodiceFiscale));
    let nordic_on = nordic::Nordic { se: on(SePersonnummer), no: on(NoFodselsnummer), dk: on(DkCpr), fi: on(FiHetu) };
    if !kinds.iter().any(|k| *k) && !iban && !cf && !nordic_on.any() && phones.is_none() {
        return;
    }
    let [card, ssn, ssn_bare, ipv4, nir, bsn, pesel, dni] = kinds;
    let b = text.as_bytes();
    let mut buf = Vec::with_capacity(32);
    let mut i = 0;
    let mut phone_until = 0;
    while let Some(d) = next_digit(b, i) {
        i = d;
        if (iban || cf || dni)
            && d > 0
            && (b[d - 1].is_ascii_uppercase() || b[d - 1] == b'-')
            && let Some(c) = alnum::at_digit(text, d, iban, cf, dni)
        {
            i = c.end;
            phone_until = phone_until.max(c.end);
            out.push(c);
            continue;
        }
        if let Some(p) = phones.as_deref_mut()
            && d >= phone_until
        {
            let (span, next) = phone::candidate(b, d);
            phone_until = next;
            p.extend(span);
        }
        if i > 0 && (wordy(b, i - 1) || b[i - 1] == b'.' && i > 1 && b[i - 2].is_ascii_digit()) {
            // Digits inside an identifier or after a decimal point: skip the whole token.
            while i < b.len() && (wordy(b, i) || b[i] == b'.') {
                i += 1;
            }
            continue;
        }
        let mut run = read_run(b, i);
        i = run.end.max(i + 1);
        if nordic_on.any() {
            nordic::at(text, run.start, nordic_on, out);
        }
        // A last group glued to a word (`4111111111111111 0A`) is part of that word, not of
        // the run: the groups before it are still judged on their own.
        if wordy(b, run.end) && run.n > 1 && !run.overflow {
            run.n -= 1;
            run.end = run.groups[run.n - 1].1;
        }
        let after_word = wordy(b, run.end);
        let plus_before = run.start > 0 && b[run.start - 1] == b'+';
        run.digits(b, &mut buf);
        let n_digits = buf.len();
        let mut push =
            |kind, s: usize, e: usize, canonical: String| out.push(Candidate { kind, start: s, end: e, canonical });
        if dni && run.n == 1 && n_digits == 8 {
            let (letter_at, end) = match (b.get(run.end), b.get(run.end + 1)) {
                (Some(b'-' | b' '), Some(l)) if l.is_ascii_uppercase() => (run.end + 1, run.end + 2),
                (Some(l), _) if l.is_ascii_uppercase() => (run.end, run.end + 1),
                _ => (0, 0),
            };
            if end > 0 && !wordy(b, end) {
                let mut id = buf.clone();
                id.push(b[letter_at]);
                if es_dni(&id) {
                    push(EsDni, run.start, end, String::from_utf8(id).expect("ascii"));
                }
            }
        }
        if after_word || run.overflow {
            continue;
        }
        if ipv4
            && run.n == 4
            && run.sep == b'.'
            && ipv4_ok(b, &run)
            && !(b.get(run.end) == Some(&b'.') && wordy(b, run.end + 1))
        {
            push(Ipv4, run.start, run.end, text[run.start..run.end].to_string());
            continue;
        }
        if run.sep == b'.' || plus_before {
            continue;
        }
        if card {
            card_candidates(&run, &buf, &mut push);
        }
        let lens: Vec<usize> = run.lens().collect();
        if ssn && lens == [3, 2, 4] && ssn_digits_ok(&buf) {
            push(Ssn, run.start, run.end, String::from_utf8(buf.clone()).expect("ascii"));
        }
        if run.n == 1 {
            let canon = || String::from_utf8(buf.clone()).expect("ascii");
            if ssn_bare && n_digits == 9 && ssn_digits_ok(&buf) {
                push(SsnBare, run.start, run.end, canon());
            }
            if bsn && n_digits == 9 && nl_bsn(&buf) {
                push(NlBsn, run.start, run.end, canon());
            }
            if pesel && n_digits == 11 && pl_pesel(&buf) {
                push(PlPesel, run.start, run.end, canon());
            }
        }
        if nir && n_digits == 15 && run.sep != b'-' && fr_nir(&buf) {
            push(FrNir, run.start, run.end, String::from_utf8(buf.clone()).expect("ascii"));
        }
    }
}

fn read_run(b: &[u8], start: usize) -> Run {
    let mut run = Run { start, end: start, groups: [(0, 0); MAX_GROUPS], n: 0, overflow: false, sep: 0 };
    let mut j = start;
    loop {
        let gs = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if run.n < MAX_GROUPS {
            run.groups[run.n] = (gs, j);
            run.n += 1;
        } else {
            run.overflow = true;
        }
        run.end = j;
        match (b.get(j), b.get(j + 1)) {
            // A change of separator ends the run: `10.0.0.1 200`, `2024-01-15 10:00`.
            (Some(&s @ (b' ' | b'-' | b'.')), Some(d)) if d.is_ascii_digit() && (run.sep == 0 || run.sep == s) => {
                run.sep = s;
                j += 1;
            }
            _ => return run,
        }
    }
}

fn ipv4_ok(b: &[u8], run: &Run) -> bool {
    if run.start > 0 && matches!(b[run.start - 1], b'.' | b'v' | b'V') {
        return false;
    }
    // "version 10.4.3.2" is a version, not an address.
    let before = &b[run.start.saturating_sub(12)..run.start];
    let word = before.trim_ascii_end().rsplit(|c| !c.is_ascii_alphabetic()).next().unwrap_or_default();
    if [&b"version"[..], b"ver", b"release", b"build"].iter().any(|w| word.eq_ignore_ascii_case(w)) {
        return false;
    }
    run.groups[..4].iter().all(|&(s, e)| {
        e - s <= 3 && std::str::from_utf8(&b[s..e]).ok().and_then(|t| t.parse::<u32>().ok()).is_some_and(|v| v <= 255)
    })
}

fn ssn_digits_ok(d: &[u8]) -> bool {
    let n = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |a, c| a * 10 + (c - b'0') as u32);
    d.len() == 9 && ssn_valid(n(0..3), n(3..5), n(5..9))
}

/// A card is the whole run or a stretch of its groups: a space-separated run can glue a card to
/// a year before it or an expiry after it.
fn card_candidates(run: &Run, digits: &[u8], push: &mut impl FnMut(PiiKind, usize, usize, String)) {
    let grouped = run.n > 1;
    let mut offset = 0;
    for k0 in 0..run.n {
        let mut count = 0;
        for k in k0..run.n {
            let (s, e) = run.groups[k];
            let len = e - s;
            if grouped && !(3..=6).contains(&len) && !(k == k0 && (13..=19).contains(&len)) {
                break;
            }
            count += len;
            if count > 19 {
                break;
            }
            if (13..=19).contains(&count) && (k == k0 || (3..=6).contains(&len)) {
                let d = &digits[offset..offset + count];
                if card_brand(d).is_some() && luhn(d) {
                    let canonical = String::from_utf8(d.to_vec()).expect("ascii");
                    push(PiiKind::Card, run.groups[k0].0, e, canonical);
                    return;
                }
            }
        }
        offset += run.groups[k0].1 - run.groups[k0].0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(t: &str) -> Vec<(PiiKind, String)> {
        let mut v = Vec::new();
        scan(t, &|k| !matches!(k, PiiKind::Iban | PiiKind::ItCodiceFiscale), &mut v, None);
        v.iter().map(|c| (c.kind, t[c.start..c.end].to_string())).collect()
    }

    #[test]
    fn cards() {
        use PiiKind::Card;
        assert_eq!(found("card 4111 1111 1111 1111 ok"), [(Card, "4111 1111 1111 1111".into())]);
        // A group glued to a word after the card does not hide it.
        assert_eq!(found("paid 4111111111111111 0A"), [(Card, "4111111111111111".into())]);
        assert_eq!(found("card 4111 1111 1111 1111 12ab"), [(Card, "4111 1111 1111 1111".into())]);
        assert_eq!(found("4111-1111-1111-1111"), [(Card, "4111-1111-1111-1111".into())]);
        assert_eq!(found("amex 378282246310005."), [(Card, "378282246310005".into())]);
        assert_eq!(found("4111 1111 1111 1111 1225"), [(Card, "4111 1111 1111 1111".into())]);
        assert_eq!(found("in 1999 4111111111111111"), [(Card, "4111111111111111".into())]);
        // Luhn failures, unknown prefixes, decimals, identifiers, phone numbers with +.
        for neg in [
            "4111 1111 1111 1112",
            "1234 5678 9012 3456",
            "3.141592653589793238",
            "id_4111111111111111",
            "+4111111111111111",
            "4111111111111111a",
        ] {
            assert!(found(neg).iter().all(|(k, _)| *k != Card), "{neg}");
        }
    }

    #[test]
    fn ssn_ip_and_national_ids() {
        use PiiKind::*;
        assert_eq!(found("ssn 123-45-6789"), [(Ssn, "123-45-6789".into())]);
        assert!(found("666-45-6789 000-12-3456 123-00-4567").is_empty());
        assert_eq!(found("from 192.168.1.20:80"), [(Ipv4, "192.168.1.20".into())]);
        assert!(found("v1.2.3.4 and 1.2.3.4.5 and 300.1.1.1 version 10.4.3.2").is_empty());
        assert_eq!(found("from 10.0.0.1 200"), [(Ipv4, "10.0.0.1".into())]);
        assert_eq!(found("DNI 12345678Z."), [(EsDni, "12345678Z".into())]);
        assert!(found("12345678A").is_empty());
        assert_eq!(found("nir 1 85 05 78 006 084 91"), [(FrNir, "1 85 05 78 006 084 91".into())]);
        assert!(found("BSN 111222333").contains(&(NlBsn, "111222333".into())));
        assert!(found("PESEL 44051401359").contains(&(PlPesel, "44051401359".into())));
    }

    #[test]
    fn nordic_identity_numbers() {
        use PiiKind::{DkCpr, FiHetu, NoFodselsnummer, SePersonnummer};
        let has = |t: &str, k: PiiKind, v: &str| found(t).contains(&(k, v.to_string()));
        // Swedish: 10 and 12 digits, with `-`, `+` or nothing; a samordningsnummer (day + 60).
        for v in ["811218-9876", "8112189876", "19811218-9876", "198112189876", "811218+9876", "701063-2383"] {
            assert!(has(&format!("pnr {v}."), SePersonnummer, v), "{v}: {:?}", found(v));
        }
        assert!(!has("811218-9875", SePersonnummer, "811218-9875"), "Luhn");
        assert!(!has("811318-9876", SePersonnummer, "811318-9876"), "month 13");
        assert!(found("81121898765").iter().all(|(k, _)| *k != SePersonnummer), "longer run");
        // Norwegian: both mod-11 digits, D-numbers.
        assert!(has("fnr 15038549925", NoFodselsnummer, "15038549925"));
        assert!(has("fnr 150385 49925", NoFodselsnummer, "150385 49925"));
        assert!(has("D-nummer 41019012393", NoFodselsnummer, "41019012393"));
        assert!(!has("15038549926", NoFodselsnummer, "15038549926"));
        assert!(!has("15038549935", NoFodselsnummer, "15038549935"));
        // Danish: a date and four digits (the rule requires context).
        assert!(has("CPR 010190-1234", DkCpr, "010190-1234"));
        assert!(!has("CPR 320190-1234", DkCpr, "320190-1234"));
        // Finnish: century sign and check character.
        assert!(has("hetu 131052-308T,", FiHetu, "131052-308T"));
        assert!(has("010594Y2190", FiHetu, "010594Y2190"));
        assert!(!has("131052-308U", FiHetu, "131052-308U"));
        assert!(!has("131052-308Tx", FiHetu, "131052-308T"));
    }
}
