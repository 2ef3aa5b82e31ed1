//! Recognisers for ids that start with capital letters, sharing one pass over word starts: IBAN
//! (country length table + mod-97, compact or in groups of four), Italian codice fiscale (check
//! character), Spanish NIE (X/Y/Z + digits + check letter).

use crate::gates::checksum::{es_dni, iban_length, iban_mod97, it_codice_fiscale};
use crate::gates::pii::{Candidate, PiiKind, wordy};

/// Every id here has a digit within its first seven bytes right after capital letters (IBAN
/// `CC` + digits, codice fiscale six letters + digits, NIE `X` + digits), so the shared digit pass
/// of `numeric.rs` calls this at each digit and it looks back for the word start.
pub(crate) fn at_digit(text: &str, d: usize, iban: bool, cf: bool, dni: bool) -> Option<Candidate> {
    let b = text.as_bytes();
    let mut ws = d;
    while ws > 0 && d - ws < 6 && b[ws - 1].is_ascii_uppercase() {
        ws -= 1;
    }
    if ws == d && d >= 2 && b[d - 1] == b'-' && matches!(b[d - 2], b'X' | b'Y' | b'Z') {
        ws = d - 2;
    }
    if ws == d || (ws > 0 && wordy(b, ws - 1)) {
        return None;
    }
    let (kind, end, canonical) = if iban
        && d - ws == 2
        && let Some((end, compact)) = read_iban(b, ws)
    {
        (PiiKind::Iban, end, compact)
    } else if cf && d - ws == 6 && b.len() >= ws + 16 && !wordy(b, ws + 16) && it_codice_fiscale(&b[ws..ws + 16]) {
        (PiiKind::ItCodiceFiscale, ws + 16, text[ws..ws + 16].to_string())
    } else if dni
        && matches!(b[ws], b'X' | b'Y' | b'Z')
        && let Some((end, id)) = read_nie(b, ws)
    {
        (PiiKind::EsDni, end, id)
    } else {
        return None;
    };
    Some(Candidate { kind, start: ws, end, canonical })
}

/// An IBAN starting at `s`: returns its end and compact uppercase form.
fn read_iban(b: &[u8], s: usize) -> Option<(usize, String)> {
    if b.len() < s + 4 || !b[s + 1].is_ascii_uppercase() || !b[s + 2].is_ascii_digit() || !b[s + 3].is_ascii_digit() {
        return None;
    }
    let len = iban_length(&b[s..s + 2])?;
    let mut compact = Vec::with_capacity(len);
    let mut j = s;
    while compact.len() < len && j < b.len() {
        let c = b[j];
        if c.is_ascii_alphanumeric() {
            compact.push(c.to_ascii_uppercase());
            j += 1;
        } else if c == b' ' && j + 1 < b.len() && b[j + 1].is_ascii_alphanumeric() && compact.len() % 4 == 0 {
            j += 1;
        } else {
            return None;
        }
    }
    if compact.len() < len || wordy(b, j) || !iban_mod97(&compact) {
        return None;
    }
    Some((j, String::from_utf8(compact).expect("ascii")))
}

fn read_nie(b: &[u8], s: usize) -> Option<(usize, String)> {
    let mut id = vec![b[s]];
    let mut j = s + 1;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    let digits = b.get(j..j + 7)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    id.extend_from_slice(digits);
    j += 7;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    let letter = *b.get(j)?;
    id.push(letter);
    j += 1;
    (!wordy(b, j) && es_dni(&id)).then(|| (j, String::from_utf8(id).expect("ascii")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(t: &str) -> Vec<(PiiKind, String)> {
        let mut v = Vec::new();
        let on = |k| matches!(k, PiiKind::Iban | PiiKind::ItCodiceFiscale | PiiKind::EsDni);
        crate::gates::pii::numeric::scan(t, &on, &mut v, None);
        v.iter().map(|c| (c.kind, t[c.start..c.end].to_string())).collect()
    }

    #[test]
    fn ibans_grouped_and_compact() {
        use PiiKind::Iban;
        assert_eq!(found("pay DE89 3704 0044 0532 0130 00 now"), [(Iban, "DE89 3704 0044 0532 0130 00".into())]);
        assert_eq!(found("GB82WEST12345698765432,"), [(Iban, "GB82WEST12345698765432".into())]);
        // Wrong check digits, wrong length, unknown country, glued to a word.
        for neg in
            ["DE88 3704 0044 0532 0130 00", "DE89370400440532013", "ZZ89370400440532013000", "GB82WEST12345698765432X"]
        {
            assert!(found(neg).is_empty(), "{neg}");
        }
    }

    #[test]
    fn codice_fiscale_and_nie() {
        assert_eq!(found("CF: RSSMRA85T10A562S"), [(PiiKind::ItCodiceFiscale, "RSSMRA85T10A562S".into())]);
        assert!(found("RSSMRA85T10A562T").is_empty());
        assert_eq!(found("NIE X-1234567-L"), [(PiiKind::EsDni, "X-1234567-L".into())]);
        assert!(found("X1234567A").is_empty());
    }
}
