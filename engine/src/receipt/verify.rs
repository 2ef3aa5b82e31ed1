//! Checking a receipt: its chain (recomputed from each entry's `prev` and `digest`), each
//! entry's signature, the header's signature, against the key the verifier trusts. The first
//! problem is reported, naming the entry (index and event) where there is one.

use serde_json::Value;

use crate::receipt::document::{FORMAT, Receipt, ReceiptEntry};
use crate::receipt::signing::ReceiptKey;
use crate::store::chain::ChainLink;

/// A receipt that checked out.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub run: String,
    pub entries: usize,
    pub key: ReceiptKey,
    /// The chain's last link (hex).
    pub head: String,
}

/// Why a receipt does not verify.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a receipt: {0}")]
    Malformed(String),
    #[error("entry {index} ({kind}) {reason}")]
    Entry { index: usize, kind: String, reason: String },
    #[error("the receipt's header {0}")]
    Header(String),
}

impl VerifyError {
    /// The entry named, if the problem is in one.
    pub fn entry(&self) -> Option<(usize, &str)> {
        match self {
            VerifyError::Entry { index, kind, .. } => Some((*index, kind)),
            _ => None,
        }
    }
}

/// Check a receipt (as parsed JSON) against `trusted`, the service key; without one, against
/// the key the receipt names (which proves integrity, not origin).
pub fn verify(doc: &Value, trusted: Option<&ReceiptKey>) -> Result<Verified, VerifyError> {
    let malformed = |what: &str| VerifyError::Malformed(what.to_string());
    if doc.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(malformed(&format!("`format` is not {FORMAT:?}")));
    }
    let named: ReceiptKey = doc
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("`key` is missing"))?
        .parse()
        .map_err(|e: String| VerifyError::Malformed(format!("`key`: {e}")))?;
    let key = trusted.copied().unwrap_or(named);
    let other_key = (key != named)
        .then(|| format!(" (the receipt names key {named}, not the service key {key}: re-signed with another key?)"));
    let header = doc.get("header").filter(|h| h.is_object()).ok_or_else(|| malformed("`header` is missing"))?;
    let run = header.get("run").and_then(Value::as_str).ok_or_else(|| malformed("`header.run` is missing"))?;
    let entries = doc.get("entries").and_then(Value::as_array).ok_or_else(|| malformed("`entries` is missing"))?;

    let mut expected_prev = ChainLink::genesis(&crate::ids::RunId::new(run));
    for (i, raw) in entries.iter().enumerate() {
        let kind = raw.get("kind").and_then(Value::as_str).unwrap_or("?").to_string();
        let fail = |reason: String| VerifyError::Entry { index: i, kind: kind.clone(), reason };
        let e: ReceiptEntry =
            serde_json::from_value(raw.clone()).map_err(|err| fail(format!("is malformed: {err}")))?;
        if e.index != i as u64 {
            return Err(fail(format!(
                "is out of place: position {i} holds journal entry {} — an entry was removed or the entries were reordered",
                e.index
            )));
        }
        let prev = ChainLink::from_hex(&e.prev).ok_or_else(|| fail("has a malformed `prev` link".into()))?;
        if prev != expected_prev {
            return Err(fail(if i == 0 {
                "does not start this run's hash chain (`prev` is not the run's genesis link)".into()
            } else {
                format!("does not follow entry {} in the hash chain (`prev` is not that entry's link)", i - 1)
            }));
        }
        let mut digest = [0u8; 32];
        if e.digest.len() != 64
            || e.digest.bytes().any(|b| b.is_ascii_uppercase())
            || hex::decode_to_slice(&e.digest, &mut digest).is_err()
        {
            return Err(fail("has a malformed `digest`".into()));
        }
        let link = prev.next(&digest);
        if ChainLink::from_hex(&e.link) != Some(link) {
            return Err(fail("was altered: its `link` is not the hash of `prev` and `digest`".into()));
        }
        if !key.verifies(&ReceiptEntry::signed_bytes(run, e.index, &e.kind, e.at, &e.link, &e.record), &e.signature) {
            return Err(fail(match &other_key {
                Some(why) => format!("is not signed by the service key{why}"),
                None => "was altered: its signature does not match its content".into(),
            }));
        }
        expected_prev = link;
    }
    let signed_count =
        header.get("entries").and_then(Value::as_u64).ok_or_else(|| malformed("`header.entries` is missing"))?;
    if (entries.len() as u64) < signed_count {
        return Err(VerifyError::Entry {
            index: entries.len(),
            kind: "missing".into(),
            reason: format!(
                "was removed: the header signs {signed_count} entries and the receipt holds {}",
                entries.len()
            ),
        });
    }
    if (entries.len() as u64) > signed_count {
        return Err(VerifyError::Entry {
            index: signed_count as usize,
            kind: entries[signed_count as usize].get("kind").and_then(Value::as_str).unwrap_or("?").to_string(),
            reason: format!("was added: the header signs {signed_count} entries"),
        });
    }
    let head = header.get("head").and_then(Value::as_str).ok_or_else(|| malformed("`header.head` is missing"))?;
    if ChainLink::from_hex(head) != Some(expected_prev) {
        return Err(VerifyError::Header("names another head of the hash chain than its last entry's link".into()));
    }
    let signature = doc.get("signature").and_then(Value::as_str).ok_or_else(|| malformed("`signature` is missing"))?;
    if !key.verifies(&Receipt::signed_header(header, &named.to_string()), signature) {
        return Err(VerifyError::Header(match other_key {
            Some(why) => format!("is not signed by the service key{why}"),
            None => "was altered (run, parameters, status or cost): its signature does not match".into(),
        }));
    }
    if let Some(why) = other_key {
        return Err(VerifyError::Header(format!("names another key{why}")));
    }
    Ok(Verified { run: run.to_string(), entries: entries.len(), key, head: head.to_string() })
}
