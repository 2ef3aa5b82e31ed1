//! The receipt document and how it is signed.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::receipt::canonical::canonical_json;
use crate::receipt::signing::ReceiptSigner;
use crate::store::chain::{ChainLink, ChainedEntry};

/// The receipt format this module writes and checks.
pub const FORMAT: &str = "tollgate.receipt/v1";

/// A signed run record (what `tollgate runs export RUN --receipt` writes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub format: String,
    /// Run, workflow, owner, spec digest, who started it, trigger, parameters (redacted),
    /// status, cost, times; and the chain's length (`entries`) and last link (`head`).
    pub header: Value,
    pub entries: Vec<ReceiptEntry>,
    /// The public key the receipt claims to be signed with (hex); a verifier compares it with
    /// the service key it trusts.
    pub key: String,
    /// The header's signature (with the key and the chain's head and length).
    pub signature: String,
}

/// One journal entry in a receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptEntry {
    /// Position in the journal, from 0.
    pub index: u64,
    /// The journal event (`run_started`, `step_succeeded`, `human_decided`…).
    pub kind: String,
    /// When it happened (ms since the Unix epoch).
    pub at: u64,
    /// The link it follows, the SHA-256 of the journaled event, and its own link (hex):
    /// `link = SHA-256("tollgate/v1/journal\0" ‖ prev ‖ digest)`.
    pub prev: String,
    pub digest: String,
    pub link: String,
    /// The audit record of the event (who, what, timings, cost, verdicts), redacted.
    pub record: Value,
    /// Signature of the entry (run, index, kind, at, link, record).
    pub signature: String,
}

/// One entry to put in a receipt: what the journal says about it.
pub struct EntryInput<'a> {
    pub kind: &'a str,
    pub at: u64,
    pub chained: &'a ChainedEntry,
    pub record: Value,
}

impl ReceiptEntry {
    /// What an entry's signature covers.
    pub fn signed_bytes(run: &str, index: u64, kind: &str, at: u64, link: &str, record: &Value) -> Vec<u8> {
        canonical_json(
            &json!({"format": FORMAT, "run": run, "index": index, "kind": kind, "at": at, "link": link, "record": record}),
        )
    }
}

impl Receipt {
    /// What the header's signature covers.
    pub fn signed_header(header: &Value, key: &str) -> Vec<u8> {
        canonical_json(&json!({"format": FORMAT, "header": header, "key": key}))
    }

    /// Sign a run's record: `header` must name the `run`; `entries` are its journal, in order.
    pub fn sign(signer: &ReceiptSigner, run: &str, mut header: Value, entries: Vec<EntryInput<'_>>) -> Receipt {
        let mut head = ChainLink::genesis(&crate::ids::RunId::new(run));
        let entries: Vec<ReceiptEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let index = i as u64;
                let link = e.chained.link.to_hex();
                head = e.chained.link;
                let signature = signer.sign(&ReceiptEntry::signed_bytes(run, index, e.kind, e.at, &link, &e.record));
                ReceiptEntry {
                    index,
                    kind: e.kind.to_string(),
                    at: e.at,
                    prev: e.chained.prev.to_hex(),
                    digest: hex::encode(e.chained.digest),
                    link,
                    record: e.record,
                    signature,
                }
            })
            .collect();
        header["run"] = json!(run);
        header["entries"] = json!(entries.len());
        header["head"] = json!(head.to_hex());
        let key = signer.public().to_string();
        let signature = signer.sign(&Self::signed_header(&header, &key));
        Receipt { format: FORMAT.to_string(), header, entries, key, signature }
    }
}
