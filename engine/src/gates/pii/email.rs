//! Email recogniser: finds each `@` with memchr and grows the local part and domain around it
//! by their RFC 5321 character sets, then checks the domain's shape. URL userinfo
//! (`scheme://user:pass@host`) and retina asset names (`icon@2x.png`) are not emails.

use crate::gates::pii::{Candidate, PiiKind};

const FILE_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "ts", "map", "json", "pdf"];

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-'".contains(&c)
}

fn domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

pub(crate) fn scan(text: &str, out: &mut Vec<Candidate>) {
    let b = text.as_bytes();
    let mut last_end = 0;
    for at in memchr::memchr_iter(b'@', b) {
        if at < last_end {
            continue;
        }
        let mut s = at;
        while s > 0 && at - s < 64 && local_char(b[s - 1]) {
            s -= 1;
        }
        while s < at && matches!(b[s], b'.' | b'\'') {
            s += 1;
        }
        let mut e = at + 1;
        while e < b.len() && e - at < 255 && domain_char(b[e]) {
            e += 1;
        }
        while e > at + 1 && matches!(b[e - 1], b'.' | b'-') {
            e -= 1;
        }
        if s == at || e <= at + 1 || !domain_ok(&text[at + 1..e]) || in_url_userinfo(b, s) {
            continue;
        }
        last_end = e;
        out.push(Candidate { kind: PiiKind::Email, start: s, end: e, canonical: text[s..e].to_ascii_lowercase() });
    }
}

fn domain_ok(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-')) {
        return false;
    }
    let tld = labels[labels.len() - 1];
    tld.len() >= 2
        && tld.bytes().all(|c| c.is_ascii_alphabetic())
        && !FILE_EXTENSIONS.iter().any(|x| tld.eq_ignore_ascii_case(x))
}

/// `postgres://user:secret@db.host` — the part before `@` is credentials, not a mailbox.
fn in_url_userinfo(b: &[u8], local_start: usize) -> bool {
    let mut i = local_start;
    while i > 0 && local_start - i < 256 && !b[i - 1].is_ascii_whitespace() && !b"\"'<>(".contains(&b[i - 1]) {
        i -= 1;
        if b[i..].starts_with(b"://") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emails(t: &str) -> Vec<String> {
        let mut v = Vec::new();
        scan(t, &mut v);
        v.iter().map(|c| t[c.start..c.end].to_string()).collect()
    }

    #[test]
    fn positives_and_hard_negatives() {
        assert_eq!(emails("mail Jane.Doe+news@Mail.Example.co.uk."), ["Jane.Doe+news@Mail.Example.co.uk"]);
        assert_eq!(emails("<a@b.io>,c_d@e-f.org"), ["a@b.io", "c_d@e-f.org"]);
        for neg in
            ["@types/node", "user@localhost", "icon@2x.png", "postgres://u:p@db.example.com/x", "a@b.c", "@decorator"]
        {
            assert!(emails(neg).is_empty(), "{neg}");
        }
    }
}
