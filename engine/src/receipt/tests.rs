//! Receipts built from a small chained journal: they verify, and every alteration — any value
//! of an entry, a removed or moved entry, another key — is named by its entry.

use serde_json::{Value, json};

use crate::receipt::{EntryInput, Receipt, ReceiptKey, ReceiptSigner, VerifyError, verify};
use crate::store::chain::{ChainLink, ChainedEntry, event_digest};

fn signer() -> ReceiptSigner {
    ReceiptSigner::from_seed(&[7u8; 32])
}

/// A receipt over a four-entry journal, as JSON.
fn receipt(with: &ReceiptSigner) -> Value {
    let run = "01RUN";
    let events = [
        ("run_started", json!({"kind": "run.started", "params": {"client": "[EMAIL_1]"}})),
        (
            "step_succeeded",
            json!({"kind": "step.succeeded", "step": "fetch", "attempt": 1, "cost": "0.01", "output": {"n": 3}}),
        ),
        ("human_decided", json!({"kind": "request.approved", "by": "alice", "comment": "ok"})),
        ("step_succeeded", json!({"kind": "step.succeeded", "step": "send", "attempt": 1, "cost": "0"})),
    ];
    let mut prev = ChainLink::genesis(&crate::ids::RunId::new(run));
    let chained: Vec<ChainedEntry> = events
        .iter()
        .map(|(_, record)| {
            let digest = event_digest(record.to_string().as_bytes());
            let link = prev.next(&digest);
            let e = ChainedEntry { prev, digest, link };
            prev = link;
            e
        })
        .collect();
    let inputs = events
        .iter()
        .zip(&chained)
        .enumerate()
        .map(|(i, ((kind, record), c))| EntryInput { kind, at: 1_000 + i as u64, chained: c, record: record.clone() })
        .collect();
    serde_json::to_value(Receipt::sign(
        with,
        run,
        json!({"spec_digest": "abc", "params": {"client": "[EMAIL_1]"}}),
        inputs,
    ))
    .unwrap()
}

fn check(doc: &Value) -> Result<(), VerifyError> {
    verify(doc, Some(&signer().public())).map(|_| ())
}

/// Every scalar inside `v`, as JSON pointers.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| leaves(v, format!("{at}/{k}"), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| leaves(v, format!("{at}/{i}"), out)),
        _ => out.push(at),
    }
}

fn altered(v: &Value) -> Value {
    match v {
        Value::String(s) if s.is_empty() => json!("x"),
        Value::String(s) => {
            // Change one character (hex stays hex).
            let mut c: Vec<char> = s.chars().collect();
            c[0] = if c[0] == '0' { '1' } else { '0' };
            Value::String(c.into_iter().collect())
        }
        Value::Number(n) => json!(n.as_u64().map_or(1, |n| n + 1)),
        Value::Bool(b) => json!(!b),
        _ => json!(0),
    }
}

#[test]
fn a_receipt_verifies_against_its_service_key() {
    let doc = receipt(&signer());
    let ok = verify(&doc, Some(&signer().public())).unwrap();
    assert_eq!((ok.run.as_str(), ok.entries), ("01RUN", 4));
    // Read back from its text, it still verifies (the signatures cover canonical JSON).
    let text = serde_json::to_string_pretty(&doc).unwrap();
    check(&serde_json::from_str(&text).unwrap()).unwrap();
}

#[test]
fn changing_any_value_of_an_entry_names_that_entry() {
    let doc = receipt(&signer());
    for i in 0..4 {
        let mut paths = Vec::new();
        leaves(&doc["entries"][i], format!("/entries/{i}"), &mut paths);
        assert!(paths.len() >= 8);
        for p in paths {
            let mut bad = doc.clone();
            let v = bad.pointer_mut(&p).unwrap();
            *v = altered(v);
            let err = check(&bad).unwrap_err();
            assert_eq!(err.entry().map(|e| e.0), Some(i), "{p}: {err}");
        }
    }
}

#[test]
fn a_removed_or_moved_entry_is_named() {
    let doc = receipt(&signer());
    let mut removed = doc.clone();
    removed["entries"].as_array_mut().unwrap().remove(1);
    let err = check(&removed).unwrap_err();
    assert_eq!(err.entry(), Some((1, "human_decided")), "{err}");
    assert!(err.to_string().contains("removed"), "{err}");

    let mut last_removed = doc.clone();
    last_removed["entries"].as_array_mut().unwrap().pop();
    assert_eq!(check(&last_removed).unwrap_err().entry().map(|e| e.0), Some(3));

    let mut swapped = doc.clone();
    swapped["entries"].as_array_mut().unwrap().swap(1, 2);
    let err = check(&swapped).unwrap_err();
    assert_eq!(err.entry(), Some((1, "human_decided")), "{err}");
}

#[test]
fn a_receipt_re_signed_with_another_key_fails_naming_the_entry() {
    let other = ReceiptSigner::from_seed(&[9u8; 32]);
    // Entry 2 altered and re-signed with another key, the header too.
    let mut doc = receipt(&signer());
    doc["entries"][2]["record"]["by"] = json!("mallory");
    let e = &doc["entries"][2];
    let bytes = crate::receipt::ReceiptEntry::signed_bytes(
        "01RUN",
        2,
        "human_decided",
        e["at"].as_u64().unwrap(),
        e["link"].as_str().unwrap(),
        &e["record"],
    );
    doc["entries"][2]["signature"] = json!(other.sign(&bytes));
    let err = check(&doc).unwrap_err();
    assert_eq!(err.entry(), Some((2, "human_decided")), "{err}");

    // Everything re-signed with another key that the receipt names: it fails against the
    // service key, and checks out only against the key it names.
    let forged = receipt(&other);
    let err = check(&forged).unwrap_err();
    assert!(err.to_string().contains("not the service key"), "{err}");
    assert_eq!(err.entry().map(|e| e.0), Some(0));
    verify(&forged, None).unwrap();
}

#[test]
fn the_header_is_signed() {
    let mut doc = receipt(&signer());
    doc["header"]["params"]["client"] = json!("someone else");
    assert!(matches!(check(&doc).unwrap_err(), VerifyError::Header(_)));
    let mut doc = receipt(&signer());
    doc["key"] = json!(ReceiptSigner::from_seed(&[1; 32]).public().to_string());
    assert!(check(&doc).is_err());
    assert!(matches!(verify(&json!({"format": "x"}), None).unwrap_err(), VerifyError::Malformed(_)));
    let _: ReceiptKey = signer().public();
}
