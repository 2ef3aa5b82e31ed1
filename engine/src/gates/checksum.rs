//! Check digits and format tables that turn "looks like a number" into "is one": Luhn for cards,
//! ISO 13616 mod-97 for IBANs, US SSN invalid ranges, and the national id checksums of a few EU
//! countries (the Nordic ones included). These are what keep the PII detector's false positives down.

/// Luhn check over ASCII digits.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = (d - b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Whether a card number (digits only) has a known issuer prefix for its length.
pub(crate) fn card_brand(d: &[u8]) -> Option<&'static str> {
    let n = d.len();
    let p = |k: usize| -> u32 { d[..k.min(n)].iter().fold(0u32, |a, b| a * 10 + (b - b'0') as u32) };
    match (p(1), p(2), p(3), p(4), p(6)) {
        (4, ..) if matches!(n, 13 | 16 | 19) => Some("visa"),
        (_, 51..=55, ..) if n == 16 => Some("mastercard"),
        (_, _, _, 2221..=2720, _) if n == 16 => Some("mastercard"),
        (_, 34 | 37, ..) if n == 15 => Some("amex"),
        (_, _, _, 6011, _) | (_, 65, ..) | (_, _, 644..=649, ..) if (16..=19).contains(&n) => Some("discover"),
        (_, _, _, 3528..=3589, _) if (16..=19).contains(&n) => Some("jcb"),
        (_, _, 300..=305, ..) | (_, 36 | 38 | 39, ..) if (14..=19).contains(&n) => Some("diners"),
        (_, 62, ..) if (16..=19).contains(&n) => Some("unionpay"),
        (_, 50 | 56..=58, ..) | (_, 67 | 63, ..) if (12..=19).contains(&n) => Some("maestro"),
        (_, _, _, 2200..=2204, _) if n == 16 => Some("mir"),
        _ => None,
    }
}

/// IBAN length per ISO 3166 country code (SWIFT IBAN registry).
pub(crate) fn iban_length(cc: &[u8]) -> Option<usize> {
    const TABLE: &[(&[u8; 2], usize)] = &[
        (b"AD", 24),
        (b"AE", 23),
        (b"AL", 28),
        (b"AT", 20),
        (b"AZ", 28),
        (b"BA", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BH", 22),
        (b"BI", 27),
        (b"BR", 29),
        (b"BY", 28),
        (b"CH", 21),
        (b"CR", 22),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DJ", 27),
        (b"DK", 18),
        (b"DO", 28),
        (b"EE", 20),
        (b"EG", 29),
        (b"ES", 24),
        (b"FI", 18),
        (b"FK", 18),
        (b"FO", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GE", 22),
        (b"GI", 23),
        (b"GL", 18),
        (b"GR", 27),
        (b"GT", 28),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IQ", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"JO", 30),
        (b"KW", 30),
        (b"KZ", 20),
        (b"LB", 28),
        (b"LC", 32),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"LY", 25),
        (b"MC", 27),
        (b"MD", 24),
        (b"ME", 22),
        (b"MK", 19),
        (b"MN", 20),
        (b"MR", 27),
        (b"MT", 31),
        (b"MU", 30),
        (b"NI", 28),
        (b"NL", 18),
        (b"NO", 15),
        (b"OM", 23),
        (b"PK", 24),
        (b"PL", 28),
        (b"PS", 29),
        (b"PT", 25),
        (b"QA", 29),
        (b"RO", 24),
        (b"RS", 22),
        (b"RU", 33),
        (b"SA", 24),
        (b"SC", 31),
        (b"SD", 18),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"SO", 23),
        (b"ST", 25),
        (b"SV", 28),
        (b"TL", 23),
        (b"TN", 24),
        (b"TR", 26),
        (b"UA", 29),
        (b"VA", 22),
        (b"VG", 24),
        (b"XK", 20),
        (b"YE", 30),
    ];
    TABLE.iter().find(|(c, _)| c[..] == cc[..2]).map(|(_, l)| *l)
}

/// ISO 7064 mod 97-10 over an IBAN (compact, uppercase alphanumerics).
pub(crate) fn iban_mod97(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        match c {
            b'0'..=b'9' => rem = (rem * 10 + (c - b'0') as u32) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + (c - b'A' + 10) as u32) % 97,
            _ => return false,
        }
    }
    rem == 1
}

/// US SSN validity: area not 000, 666 or 900–999; group not 00; serial not 0000; and not one of
/// the numbers published in advertising (078-05-1120, 219-09-9999).
pub(crate) fn ssn_valid(area: u32, group: u32, serial: u32) -> bool {
    let invalid_range = area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0;
    let advertised = matches!((area, group, serial), (78, 5, 1120) | (219, 9, 9999));
    !invalid_range && !advertised
}

fn num(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |a, b| a * 10 + (b - b'0') as u64)
}

/// Spanish DNI (8 digits + letter) and NIE (X/Y/Z + 7 digits + letter).
pub(crate) fn es_dni(id: &[u8]) -> bool {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    if id.len() != 9 {
        return false;
    }
    let lead = match id[0] {
        b'X' => 0,
        b'Y' => 1,
        b'Z' => 2,
        b'0'..=b'9' => (id[0] - b'0') as u64,
        _ => return false,
    };
    if !id[1..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let n = lead * 10_000_000 + num(&id[1..8]);
    LETTERS[(n % 23) as usize] == id[8]
}

/// Italian codice fiscale (16 chars, omocodia letters accepted in digit positions).
pub(crate) fn it_codice_fiscale(cf: &[u8]) -> bool {
    const ODD: [u32; 26] =
        [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];
    const DIGIT_POS: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];
    if cf.len() != 16 || !cf.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
        return false;
    }
    for (i, &c) in cf.iter().enumerate() {
        let ok = if DIGIT_POS.contains(&i) {
            c.is_ascii_digit() || b"LMNPQRSTUV".contains(&c)
        } else {
            c.is_ascii_uppercase()
        };
        if !ok {
            return false;
        }
    }
    if !b"ABCDEHLMPRST".contains(&cf[8]) {
        return false;
    }
    let mut sum = 0;
    for (i, &c) in cf[..15].iter().enumerate() {
        let v = if c.is_ascii_digit() { (c - b'0') as usize } else { (c - b'A') as usize };
        // Positions are 1-based in the specification: odd positions use the odd table.
        sum += if i % 2 == 0 { ODD[v] } else { v as u32 };
    }
    cf[15] == b'A' + (sum % 26) as u8
}

/// French NIR (INSEE number): 13 digits + 2-digit key = 97 − (number mod 97).
pub(crate) fn fr_nir(d: &[u8]) -> bool {
    if d.len() != 15 || !matches!(d[0], b'1' | b'2') {
        return false;
    }
    let month = num(&d[3..5]);
    if !(1..=12).contains(&month) && !(20..=42).contains(&month) && !(50..=99).contains(&month) {
        return false;
    }
    97 - num(&d[..13]) % 97 == num(&d[13..])
}

/// Dutch BSN, the "11-proef": weights 9..2 and −1 on the last digit, sum divisible by 11.
pub(crate) fn nl_bsn(d: &[u8]) -> bool {
    if d.len() != 9 || d[0] == b'0' && d[1] == b'0' {
        return false;
    }
    let mut sum: i64 = 0;
    for (i, &c) in d.iter().enumerate() {
        let w = if i == 8 { -1 } else { 9 - i as i64 };
        sum += w * (c - b'0') as i64;
    }
    sum != 0 && sum % 11 == 0
}

/// Polish PESEL: weights 1,3,7,9 repeated; check digit = (10 − sum mod 10) mod 10; valid month.
pub(crate) fn pl_pesel(d: &[u8]) -> bool {
    const W: [u32; 10] = [1, 3, 7, 9, 1, 3, 7, 9, 1, 3];
    if d.len() != 11 {
        return false;
    }
    let month = num(&d[2..4]) % 20;
    let day = num(&d[4..6]);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return false;
    }
    let sum: u32 = d[..10].iter().zip(W).map(|(c, w)| (c - b'0') as u32 * w).sum();
    (10 - sum % 10) % 10 == (d[10] - b'0') as u32
}

/// Whether `day` and `month` can be a date (day 1–31, month 1–12, day ≤ the month's length in a
/// leap year).
pub(crate) fn valid_day_month(day: u32, month: u32) -> bool {
    const DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12).contains(&month) && (1..=DAYS[month as usize - 1]).contains(&day)
}

/// Norwegian fødselsnummer (11 digits `DDMMYYIIIKK`): a date (D-numbers add 40 to the day,
/// H-numbers 40 to the month) and both mod-11 check digits.
pub(crate) fn no_fodselsnummer(d: &[u8]) -> bool {
    if d.len() != 11 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let v: Vec<u32> = d.iter().map(|c| u32::from(c - b'0')).collect();
    let (mut day, mut month) = (v[0] * 10 + v[1], v[2] * 10 + v[3]);
    if day > 40 {
        day -= 40;
    }
    if month > 40 {
        month -= 40;
    }
    if !valid_day_month(day, month) {
        return false;
    }
    let check = |weights: &[u32]| {
        let s: u32 = weights.iter().zip(&v).map(|(w, x)| w * x).sum();
        match 11 - s % 11 {
            11 => Some(0),
            10 => None,
            k => Some(k),
        }
    };
    check(&[3, 7, 6, 1, 8, 9, 4, 5, 2]) == Some(v[9]) && check(&[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) == Some(v[10])
}

/// The check character of a Finnish henkilötunnus from its date `DDMMYY` and individual number
/// `ZZZ` (002–899), or `None` when the individual number is out of range.
pub(crate) fn fi_hetu_check(date: &[u8], individual: &[u8]) -> Option<u8> {
    const CHARS: &[u8; 31] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";
    let n = |b: &[u8]| b.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0'));
    if !(2..=899).contains(&n(individual)) {
        return None;
    }
    Some(CHARS[((n(date) * 1000 + n(individual)) % 31) as usize])
}

/// Shannon entropy in bits per byte.
pub(crate) fn shannon_entropy(s: &[u8]) -> f32 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f32;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f32 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digit_tables() {
        type Check = fn(&[u8]) -> bool;
        let cases: &[(&str, Check, bool)] = &[
            ("4111111111111111", luhn, true),
            ("4111111111111112", luhn, false),
            ("378282246310005", luhn, true),
            ("GB82WEST12345698765432", iban_mod97, true),
            ("GB82WEST12345698765433", iban_mod97, false),
            ("DE89370400440532013000", iban_mod97, true),
            ("12345678Z", es_dni, true),
            ("12345678A", es_dni, false),
            ("X1234567L", es_dni, true),
            ("RSSMRA85T10A562S", it_codice_fiscale, true),
            ("RSSMRA85T10A562T", it_codice_fiscale, false),
            ("185057800608491", fr_nir, true),
            ("185057800608436", fr_nir, false),
            ("111222333", nl_bsn, true),
            ("111222334", nl_bsn, false),
            ("44051401359", pl_pesel, true),
            ("44051401358", pl_pesel, false),
        ];
        for (s, f, want) in cases {
            assert_eq!(f(s.as_bytes()), *want, "{s}");
        }
    }

    #[test]
    fn brands_and_ssn_ranges() {
        assert_eq!(card_brand(b"4111111111111111"), Some("visa"));
        assert_eq!(card_brand(b"5555555555554444"), Some("mastercard"));
        assert_eq!(card_brand(b"378282246310005"), Some("amex"));
        assert_eq!(card_brand(b"1234567812345670"), None);
        assert_eq!(iban_length(b"DE"), Some(22));
        assert_eq!(iban_length(b"ZZ"), None);
        assert!(ssn_valid(123, 45, 6789));
        assert!(!ssn_valid(666, 45, 6789));
        assert!(!ssn_valid(900, 45, 6789));
        assert!(!ssn_valid(123, 0, 6789));
        assert!(!ssn_valid(78, 5, 1120));
        assert!(shannon_entropy(b"aaaa") < 0.01);
        assert!(shannon_entropy(b"abcd") > 1.99);
    }
}
