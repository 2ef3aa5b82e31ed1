//! Redaction: the per-run map from keyed hashes of matched values to placeholder numbers, and the
//! rewrite of a text with typed placeholders such as `[EMAIL_1]`.
//!
//! The map never holds a raw value: it is keyed by HMAC-SHA256(run key, category ‖ 0 ‖ canonical
//! value), so the same email gets the same placeholder in every step of a run, and someone who
//! reads the map without the key learns nothing about the values. The key travels with the map
//! (the map is stored sealed with the run), hence the `Debug` impl that hides it.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::gates::verdict::Span;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Per-run redaction state; serialise it with the run so placeholders stay stable across steps.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct RedactionMap {
    #[serde(with = "hex_key")]
    key: [u8; 32],
    /// Placeholder type (`EMAIL`) → last number handed out.
    counters: BTreeMap<String, u32>,
    /// Keyed hash (hex) → placeholder number.
    entries: BTreeMap<String, u32>,
}

impl RedactionMap {
    /// A map with a fresh random key (one per run).
    pub fn new() -> Self {
        Self::with_key(rand::random())
    }

    /// A map with a given key (tests, evaluation, or a key derived from the run's key).
    pub fn with_key(key: [u8; 32]) -> Self {
        RedactionMap { key, counters: BTreeMap::new(), entries: BTreeMap::new() }
    }

    /// Number of distinct values that have a placeholder.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keyed hash (32 hex chars) of a canonical value in a category.
    pub fn hash(&self, category: &str, canonical: &str) -> String {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("any key length");
        mac.update(category.as_bytes());
        mac.update(&[0]);
        mac.update(canonical.as_bytes());
        let out = mac.finalize().into_bytes();
        hex::encode(&out[..16])
    }

    /// The placeholder for the value whose keyed hash is `hash`, allocating the next number of
    /// its type on first sight.
    pub fn placeholder(&mut self, category: &str, hash: &str) -> String {
        let kind = placeholder_kind(category);
        let n = match self.entries.get(hash) {
            Some(n) => *n,
            None => {
                let c = self.counters.entry(kind.clone()).or_insert(0);
                *c += 1;
                self.entries.insert(hash.to_string(), *c);
                *c
            }
        };
        format!("[{kind}_{n}]")
    }
}

impl Default for RedactionMap {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedactionMap {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for RedactionMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactionMap")
            .field("key", &"<hidden>")
            .field("counters", &self.counters)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// `EMAIL` for `email`, `NATIONAL_ID` for `national_id`, `MY_RULE` for `my-rule`.
pub fn placeholder_kind(category: &str) -> String {
    let s: String =
        category.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if s.is_empty() { "REDACTED".into() } else { s }
}

/// A span to replace and the placeholder to put there.
pub(crate) struct Replacement {
    pub span: Span,
    pub placeholder: String,
}

/// Rewrites `text`, replacing each span with its placeholder. Overlapping spans are merged into
/// one (the first placeholder of the merged group wins) so no part of any match survives.
pub(crate) fn apply(text: &str, mut reps: Vec<Replacement>) -> String {
    reps.sort_by(|a, b| a.span.start.cmp(&b.span.start).then(b.span.end.cmp(&a.span.end)));
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut i = 0;
    while i < reps.len() {
        let start = reps[i].span.start.max(pos);
        let mut end = reps[i].span.end;
        let ph = &reps[i].placeholder;
        let mut j = i + 1;
        while j < reps.len() && reps[j].span.start < end {
            end = end.max(reps[j].span.end);
            j += 1;
        }
        if end > pos {
            out.push_str(&text[pos..start]);
            out.push_str(ph);
            pos = end;
        }
        i = j;
    }
    out.push_str(&text[pos..]);
    out
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into().map_err(|_| serde::de::Error::custom("redaction key must be 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_placeholder_and_numbers_per_type() {
        let mut m = RedactionMap::with_key([7; 32]);
        let a = m.hash("email", "a@x.io");
        let b = m.hash("email", "b@x.io");
        let c = m.hash("card", "4111111111111111");
        assert_eq!(m.placeholder("email", &a), "[EMAIL_1]");
        assert_eq!(m.placeholder("email", &b), "[EMAIL_2]");
        assert_eq!(m.placeholder("card", &c), "[CARD_1]");
        assert_eq!(m.placeholder("email", &a), "[EMAIL_1]");
        // Survives a serde round trip (the run stores it between steps) without raw values.
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("x.io"));
        let mut back: RedactionMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back.placeholder("email", &b), "[EMAIL_2]");
        assert!(!format!("{m:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn hash_is_keyed() {
        let a = RedactionMap::with_key([1; 32]).hash("email", "a@x.io");
        let b = RedactionMap::with_key([2; 32]).hash("email", "a@x.io");
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn overlapping_spans_merge() {
        let r = |s, e, p: &str| Replacement { span: Span::new(s, e), placeholder: p.into() };
        let out = apply("0123456789", vec![r(2, 5, "[A]"), r(4, 7, "[B]"), r(8, 9, "[C]")]);
        assert_eq!(out, "01[A]7[C]9");
        assert_eq!(apply("abc", vec![]), "abc");
        assert_eq!(placeholder_kind("my-rule"), "MY_RULE");
    }
}
