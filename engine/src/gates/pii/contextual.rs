//! Recognisers that only run near their context words: dates of birth ("born", "DOB", …) and
//! postal addresses ("address", "ship to", …). A date or a street name alone is too common to
//! flag; next to those words it is personal data. Each regex runs on a small window after a
//! context word, so the cost is bounded by the number of context words.

use std::sync::LazyLock;

use regex::Regex;

use crate::gates::pii::{Candidate, PiiKind};
use crate::gates::scan::floor_boundary;

const MONTHS: &str =
    r"jan|feb|m[aä]r|apr|ma[iy]|jun|jul|aug|sep|o[ck]t|nov|de[cz]|janv|f[ée]vr|avr|juin|juil|ao[uû]|d[ée]c";

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    let p = format!(
        r"(?ix)\b(?:
          (?P<y1>(?:19|20)\d{{2}})[-/.](?P<m1>\d{{1,2}})[-/.](?P<d1>\d{{1,2}})
        | (?P<a2>\d{{1,2}})[-/.](?P<b2>\d{{1,2}})[-/.](?P<y2>(?:19|20)\d{{2}})
        | (?P<d3>\d{{1,2}})(?:st|nd|rd|th)?\.?\s+(?:{MONTHS})[a-zéû]*\.?,?\s+(?:19|20)\d{{2}}
        | (?:{MONTHS})[a-zéû]*\.?\s+(?P<d4>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}
        )\b"
    );
    Regex::new(&p).expect("date regex")
});

static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    let street = r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq|Close|Crescent|Gardens|Row|Mews";
    let p = format!(
        r"(?x)
        \b\d{{1,6}}[A-Za-z]?\s+(?:[A-Z0-9][A-Za-z0-9.'-]*\s+){{0,4}}(?:{street})\b\.?
          (?:\s*,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Flat|\#)\.?\s*[A-Za-z0-9-]+)?
          (?:\s*,\s*[A-Z][a-z][A-Za-z.'-]*(?:\s+[A-Z][a-z][A-Za-z.'-]*){{0,3}})?
          (?:\s*,?\s*[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?)?
          (?:\s*,?\s*[A-Z]{{1,2}}\d[A-Z\d]?\s*\d[A-Z]{{2}})?
        | \b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|platz|allee|gasse|ring|damm)\s+\d{{1,4}}[a-z]?
          (?:\s*,\s*\d{{5}}\s+[A-ZÄÖÜ][a-zäöüß]+)?
        | \b\d{{1,4}}(?:\s*(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|route)\s+[^,\n]{{2,60}}
          (?:,\s*\d{{5}}\s+[A-Z][^,\n]{{1,40}})?
        "
    );
    Regex::new(&p).expect("address regex")
});

/// Scans a window of `window` bytes after each context word occurrence in `words`.
pub(crate) fn scan(kind: PiiKind, text: &str, words: &[(usize, usize)], window: usize, out: &mut Vec<Candidate>) {
    let re: &Regex = match kind {
        PiiKind::Dob => &DATE,
        PiiKind::Address => &ADDRESS,
        _ => return,
    };
    let mut last_end = 0;
    for &(_, word_end) in words {
        let from = floor_boundary(text, word_end.max(last_end));
        let to = floor_boundary(text, (word_end + window).min(text.len()));
        if from >= to {
            continue;
        }
        for caps in re.captures_iter(&text[from..to]) {
            let m = caps.get(0).expect("group 0");
            if kind == PiiKind::Dob && !date_ok(&caps) {
                continue;
            }
            let (s, e) = (from + m.start(), from + m.end());
            let canonical = m.as_str().to_lowercase();
            out.push(Candidate { kind, start: s, end: e, canonical });
            last_end = e;
        }
    }
}

fn date_ok(c: &regex::Captures<'_>) -> bool {
    let n = |name| c.name(name).and_then(|m| m.as_str().parse::<u32>().ok());
    let day = |d: Option<u32>| d.is_some_and(|d| (1..=31).contains(&d));
    let month = |m: Option<u32>| m.is_some_and(|m| (1..=12).contains(&m));
    if c.name("y1").is_some() {
        return month(n("m1")) && day(n("d1"));
    }
    if c.name("y2").is_some() {
        let (a, b) = (n("a2"), n("b2"));
        return (day(a) && month(b)) || (month(a) && day(b));
    }
    day(n("d3")) || day(n("d4"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(kind: PiiKind, t: &str, word: &str) -> Vec<String> {
        let s = t.find(word).unwrap();
        let mut v = Vec::new();
        scan(kind, t, &[(s, s + word.len())], 120, &mut v);
        v.iter().map(|c| t[c.start..c.end].to_string()).collect()
    }

    #[test]
    fn dates_of_birth() {
        assert_eq!(found(PiiKind::Dob, "DOB: 1985-03-12, ok", "DOB"), ["1985-03-12"]);
        assert_eq!(found(PiiKind::Dob, "born on 12 March 1985 in", "born"), ["12 March 1985"]);
        assert_eq!(found(PiiKind::Dob, "born July 4th, 1976", "born"), ["July 4th, 1976"]);
        assert_eq!(found(PiiKind::Dob, "Geburtsdatum 03.12.1985", "Geburtsdatum"), ["03.12.1985"]);
        assert!(found(PiiKind::Dob, "born 1985-13-45", "born").is_empty());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            found(PiiKind::Address, "address: 1600 Pennsylvania Avenue NW, Washington, DC 20500", "address"),
            ["1600 Pennsylvania Avenue"]
        );
        assert_eq!(
            found(PiiKind::Address, "ship to 221B Baker Street, London NW1 6XE", "ship to"),
            ["221B Baker Street, London NW1 6XE"]
        );
        assert_eq!(
            found(PiiKind::Address, "Adresse: Hauptstraße 5, 10115 Berlin", "Adresse"),
            ["Hauptstraße 5, 10115 Berlin"]
        );
        assert!(found(PiiKind::Address, "address the 3 issues in the report", "address").is_empty());
    }
}
