//! Nordic personal identity numbers, read at the start of a digit run by the shared digit pass
//! (`numeric.rs`), each with its own check:
//! - Swedish personnummer / samordningsnummer: `YYMMDD-NNNC`, `YYMMDD+NNNC` (100 years or
//!   older), `YYYYMMDD-NNNC` or the same without separator; the day is 61–91 for a
//!   samordningsnummer; Luhn over the ten digits from `YY`.
//! - Norwegian fødselsnummer (and D-/H-numbers): `DDMMYYIIIKK`, optionally `DDMMYY IIIKK`; two
//!   mod-11 check digits; D-numbers add 40 to the day, H-numbers 40 to the month.
//! - Danish CPR: `DDMMYY-SSSS` or ten digits; a valid date (no check digit since 2007, so the
//!   rule requires context).
//! - Finnish henkilötunnus: `DDMMYY` + century sign (`+`, `-`, `A`–`F`, `U`–`Y`) + `ZZZ` + check
//!   character (`DDMMYYZZZ` mod 31 into `0123456789ABCDEFHJKLMNPRSTUVWXY`).

use crate::gates::checksum::{fi_hetu_check, luhn, no_fodselsnummer, valid_day_month};
use crate::gates::pii::{Candidate, PiiKind, wordy};

/// Which of the four recognisers are on.
#[derive(Clone, Copy)]
pub(crate) struct Nordic {
    pub se: bool,
    pub no: bool,
    pub dk: bool,
    pub fi: bool,
}

impl Nordic {
    pub fn any(self) -> bool {
        self.se || self.no || self.dk || self.fi
    }
}

fn digits_at(b: &[u8], at: usize, n: usize) -> bool {
    b.len() >= at + n && b[at..at + n].iter().all(u8::is_ascii_digit)
}

fn num(b: &[u8]) -> u32 {
    b.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0'))
}

/// The Nordic ids starting at the digit `s` (not glued to a word on the left).
pub(crate) fn at(text: &str, s: usize, on: Nordic, out: &mut Vec<Candidate>) {
    let b = text.as_bytes();
    if !digits_at(b, s, 6) {
        return;
    }
    let mut push = |kind, end: usize, canonical: Vec<u8>| {
        out.push(Candidate { kind, start: s, end, canonical: String::from_utf8(canonical).expect("ascii") })
    };
    let sep = b.get(s + 6).copied();
    // Finnish: DDMMYY, century sign, ZZZ, check character.
    if on.fi
        && let Some(c) = sep
        && matches!(c, b'+' | b'-' | b'A'..=b'F' | b'U'..=b'Y')
        && digits_at(b, s + 7, 3)
        && let Some(&check) = b.get(s + 10)
        && !wordy(b, s + 11)
        && valid_day_month(num(&b[s..s + 2]), num(&b[s + 2..s + 4]))
        && fi_hetu_check(&b[s..s + 6], &b[s + 7..s + 10]) == Some(check)
    {
        push(PiiKind::FiHetu, s + 11, b[s..s + 11].to_vec());
    }
    // Swedish, 12-digit form: YYYYMMDD[-+]NNNC, century 18, 19 or 20.
    if on.se && digits_at(b, s, 8) && matches!(&b[s..s + 2], b"18" | b"19" | b"20") {
        let body = s + 2;
        let tail = if matches!(b.get(s + 8), Some(b'-' | b'+')) { s + 9 } else { s + 8 };
        if digits_at(b, tail, 4) && !wordy(b, tail + 4) && !(tail == s + 8 && wordy(b, s + 12)) {
            let mut ten = b[body..body + 6].to_vec();
            ten.extend_from_slice(&b[tail..tail + 4]);
            if se_ok(&ten) {
                push(PiiKind::SePersonnummer, tail + 4, ten);
            }
        }
    }
    // Ten-digit forms: Swedish YYMMDD[-+]NNNC and Danish DDMMYY-SSSS.
    let tail = match sep {
        Some(b'-' | b'+') => s + 7,
        Some(d) if d.is_ascii_digit() => s + 6,
        _ => 0,
    };
    // Not the start of a longer dotted or dashed number (`010190-1234-5`).
    let continues = matches!(b.get(tail + 4), Some(b'-' | b'.')) && b.get(tail + 5).is_some_and(u8::is_ascii_digit);
    if tail > 0 && digits_at(b, tail, 4) && !wordy(b, tail + 4) && !continues {
        let mut ten = b[s..s + 6].to_vec();
        ten.extend_from_slice(&b[tail..tail + 4]);
        if on.se && se_ok(&ten) {
            push(PiiKind::SePersonnummer, tail + 4, ten.clone());
        }
        if on.dk && sep != Some(b'+') && valid_day_month(num(&ten[0..2]), num(&ten[2..4])) {
            push(PiiKind::DkCpr, tail + 4, ten);
        }
    }
    // Norwegian: DDMMYY IIIKK or eleven digits.
    if on.no {
        let tail = match sep {
            Some(b' ') => s + 7,
            Some(d) if d.is_ascii_digit() => s + 6,
            _ => 0,
        };
        if tail > 0 && digits_at(b, tail, 5) && !wordy(b, tail + 5) {
            let mut eleven = b[s..s + 6].to_vec();
            eleven.extend_from_slice(&b[tail..tail + 5]);
            if no_fodselsnummer(&eleven) {
                push(PiiKind::NoFodselsnummer, tail + 5, eleven);
            }
        }
    }
}

/// A Swedish number's ten digits `YYMMDDNNNC`: a real month, a day (or day + 60), Luhn.
fn se_ok(ten: &[u8]) -> bool {
    let (month, day) = (num(&ten[2..4]), num(&ten[4..6]));
    let day = if day > 60 { day - 60 } else { day };
    valid_day_month(day, month) && luhn(ten)
}
