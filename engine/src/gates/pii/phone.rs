//! Phone recogniser: cheap shape filters pick candidates (a `+` country code, a parenthesised
//! area code, national grouping, or a context word nearby), then libphonenumber (the
//! `phonenumber` crate) validates them for the policy's regions. Dates, year ranges, IPs and
//! spans already claimed by another recogniser never reach the parser.

use phonenumber::country;

use crate::gates::pii::{Candidate, PiiKind, wordy};
use crate::gates::verdict::Span;

fn phone_char(c: u8) -> bool {
    c.is_ascii_digit() || matches!(c, b' ' | b'-' | b'.' | b'(' | b')' | b'/')
}

/// A phone-shaped candidate starting at digit `d` (or the `+`/`(` before it): its span and where
/// the shape scan stopped, or only the latter when there is none. Called from the shared digit
/// pass of `numeric.rs`.
pub(crate) fn candidate(b: &[u8], d: usize) -> (Option<(usize, usize)>, usize) {
    let opener = d > 0 && matches!(b[d - 1], b'+' | b'(') && !(d > 1 && wordy(b, d - 2));
    if !opener && d > 0 && (wordy(b, d - 1) || b[d - 1] == b'.') {
        return (None, d + 1);
    }
    let start = if opener { d - 1 } else { d };
    let mut j = d + 1;
    while j < b.len() && phone_char(b[j]) && !(b[j] == b' ' && b[j - 1] == b' ') {
        j += 1;
    }
    let mut end = j;
    while end > start && !b[end - 1].is_ascii_digit() && b[end - 1] != b')' {
        end -= 1;
    }
    if b[end - 1] == b')' && !b[start..end].contains(&b'(') {
        end -= 1;
    }
    let digits = b[start..end].iter().filter(|c| c.is_ascii_digit()).count();
    if !(7..=15).contains(&digits) || wordy(b, end) {
        return (None, j);
    }
    (Some((start, end)), j)
}

/// Validates phone-shaped spans, skipping those another recogniser claimed (sorted by start).
pub(crate) fn validate(
    text: &str,
    spans: &[(usize, usize)],
    regions: &[country::Id],
    claimed: &[Span],
    context: impl Fn(usize, usize) -> bool,
    out: &mut Vec<Candidate>,
) {
    for &(start, end) in spans {
        if overlaps(claimed, start, end) {
            continue;
        }
        if let Some(e164) = check(&text[start..end], regions, || context(start, end)) {
            out.push(Candidate { kind: PiiKind::Phone, start, end, canonical: e164 });
        }
    }
}

/// Whether `[start, end)` overlaps a span of `claimed` (sorted by start, rarely nested).
fn overlaps(claimed: &[Span], start: usize, end: usize) -> bool {
    let i = claimed.partition_point(|s| s.start < end);
    claimed[..i].iter().rev().take(4).any(|s| s.end > start)
}

/// Shape filters, then validation; returns the E.164 form.
fn check(cand: &str, regions: &[country::Id], context: impl Fn() -> bool) -> Option<String> {
    let digits = cand.bytes().filter(u8::is_ascii_digit).count();
    let plus = cand.starts_with('+');
    if !(7..=15).contains(&digits) || (plus && digits < 8) {
        return None;
    }
    let groups: Vec<&str> = cand.split([' ', '-', '.', '/', '(', ')']).filter(|g| !g.is_empty()).collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let seps: Vec<u8> = cand.bytes().filter(|c| matches!(c, b'-' | b'.' | b'/')).collect();
    let year = |g: &str| g.len() == 4 && (g.starts_with("19") || g.starts_with("20"));
    let small = |g: &str, max: u32| g.len() <= 2 && g.parse::<u32>().is_ok_and(|v| (1..=max).contains(&v));
    let date_like = groups.windows(3).any(|w| {
        (year(w[0]) && small(w[1], 12) && small(w[2], 31))
            || (small(w[0], 31) && small(w[1], 31) && (year(w[2]) || !seps.is_empty() && w[2].len() == 2))
    });
    let ip_like = lens.len() == 4 && seps.iter().all(|&s| s == b'.') && !seps.is_empty();
    let year_range = lens == [4, 4] && groups.iter().all(|g| g.starts_with("19") || g.starts_with("20"));
    if date_like || ip_like || year_range {
        return None;
    }
    let paren = cand.starts_with('(');
    // National formats group 2–4 digits; runs of 4-digit groups are account or card fragments,
    // 3-2-4 is the SSN layout.
    let fours = lens.iter().filter(|&&l| l == 4).count();
    let shaped = (lens.len() >= 3 || (lens.len() == 2 && groups[0].starts_with('0')))
        && fours < 3
        && (lens[0] != 4 || groups[0].starts_with('0'))
        && lens != [3, 2, 4];
    if !(plus || paren || shaped || context()) {
        return None;
    }
    let parsed = if plus {
        phonenumber::parse(None, cand).ok().filter(phonenumber::is_valid)
    } else {
        regions.iter().find_map(|r| phonenumber::parse(Some(*r), cand).ok().filter(phonenumber::is_valid))
    }?;
    Some(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(t: &str, ctx: bool) -> Vec<String> {
        let regions = ["US", "GB", "DE", "FR"].map(|r| r.parse().unwrap());
        let mut spans = Vec::new();
        crate::gates::pii::numeric::scan(t, &|k| k == PiiKind::Phone, &mut Vec::new(), Some(&mut spans));
        let mut v = Vec::new();
        validate(t, &spans, &regions, &[], |_, _| ctx, &mut v);
        v.iter().map(|c| c.canonical.clone()).collect()
    }

    #[test]
    fn international_national_and_context() {
        assert_eq!(found("call +44 20 7946 0958 today", false), ["+442079460958"]);
        assert_eq!(found("(415) 555-2671", false), ["+14155552671"]);
        assert_eq!(found("office 030 901820", true), ["+4930901820"]);
        assert_eq!(found("06 12 34 56 78", false).len(), 1);
    }

    #[test]
    fn lookalikes_are_not_phones() {
        for neg in [
            "2024-01-15 10:00",
            "12/03/1985",
            "1999-2004",
            "10.0.0.12",
            "order 4155552671",
            "v2.3.4567",
            "+12",
            "7525 1191 8326 71",
            "666-12-3456",
        ] {
            assert!(found(neg, false).is_empty(), "{neg}");
        }
    }
}
