//! IPv6 recogniser: grows a candidate of hex digits, colons and dots around each colon and lets
//! the standard library parse it. Times (`10:23:45`), MAC addresses and code paths (`std::fmt`,
//! `a::b`) are excluded by shape before parsing.

use std::net::Ipv6Addr;

use crate::gates::pii::{Candidate, PiiKind, wordy};

fn v6_char(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

pub(crate) fn scan(text: &str, out: &mut Vec<Candidate>) {
    let b = text.as_bytes();
    let mut next = 0;
    for p in memchr::memchr_iter(b':', b) {
        if p < next {
            continue;
        }
        let mut s = p;
        while s > 0 && v6_char(b[s - 1]) {
            s -= 1;
        }
        let mut e = p + 1;
        while e < b.len() && v6_char(b[e]) {
            e += 1;
        }
        next = e;
        // A trailing dot or lone colon is punctuation (end of sentence, `host:`).
        while e > s && (b[e - 1] == b'.' || (b[e - 1] == b':' && (e < s + 2 || b[e - 2] != b':'))) {
            e -= 1;
        }
        while s < e && b[s] == b'.' {
            s += 1;
        }
        if (s > 0 && wordy(b, s - 1)) || wordy(b, e) {
            continue;
        }
        let cand = &text[s..e];
        let colons = cand.bytes().filter(|&c| c == b':').count();
        if colons < 2 || !(cand.contains("::") || colons == 7) {
            continue;
        }
        let hex = cand.bytes().filter(u8::is_ascii_hexdigit).count();
        let groups = cand.split(':').filter(|g| !g.is_empty()).count();
        if hex < 4 || !(cand.bytes().any(|c| c.is_ascii_digit()) || groups >= 3) {
            continue;
        }
        if let Ok(addr) = cand.parse::<Ipv6Addr>() {
            out.push(Candidate { kind: PiiKind::Ipv6, start: s, end: e, canonical: addr.to_string() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(t: &str) -> Vec<String> {
        let mut v = Vec::new();
        scan(t, &mut v);
        v.iter().map(|c| t[c.start..c.end].to_string()).collect()
    }

    #[test]
    fn addresses_and_lookalikes() {
        assert_eq!(found("from 2001:db8::8a2e:370:7334."), ["2001:db8::8a2e:370:7334"]);
        assert_eq!(found("[fe80::1ff:fe23:4567:890a]:443"), ["fe80::1ff:fe23:4567:890a"]);
        assert_eq!(found("2001:0db8:85a3:0000:0000:8a2e:0370:7334"), ["2001:0db8:85a3:0000:0000:8a2e:0370:7334"]);
        for neg in ["at 10:23:45.123", "mac 00:1a:2b:3c:4d:5e", "std::fmt::Debug", "a::b", "dead::beef", "Vec::new()"] {
            assert!(found(neg).is_empty(), "{neg}");
        }
    }
}
