//! Memory notes: what a workflow's `platform` step remembers for its owner (`memory.write`)
//! and reads back (`memory.read`, `memory.list`). Each note is sealed with the owner's
//! `memory` key (HKDF from the master key, bound to the owner) and to its store key, so
//! another owner's key cannot open it and no note is readable at rest. A note's store key
//! holds the owner and an id only: a note written under a `key` gets an id that is a keyed
//! hash of owner and key (the key itself may name a client), one without gets a fresh ULID.
//! The owner's index `idx/memory/{owner}` lists the ids; listing reads them in one batch and
//! orders by time.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::OwnerId;
use crate::store::{Store, StoreError, keys};

/// The purpose notes' owner key (and the MAC key for ids) is derived for.
const MEMORY: &str = "memory";

/// One note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// The key it was written under (given, or its generated id).
    pub key: String,
    pub text: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it was (last) written, ms since the epoch.
    pub at: u64,
    /// The workflow and run that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// What a listing keeps.
#[derive(Clone, Debug, Default)]
pub struct NoteFilter<'a> {
    /// Written at or after this time (ms since the epoch).
    pub since: u64,
    pub tag: Option<&'a str>,
    pub limit: usize,
}

impl Store {
    /// The id a note written under `key` is filed under for `owner`.
    fn note_id(&self, owner: &OwnerId, key: &str) -> String {
        let secret = self.mac_key(MEMORY);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret[..]).expect("HMAC takes any key length");
        mac.update(owner.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(key.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Write (or replace) a note of `owner`. A note without a key gets a fresh one, returned.
    pub async fn put_note(&self, owner: &OwnerId, mut note: Note) -> Result<Note, StoreError> {
        if note.key.is_empty() {
            note.key = ulid::Ulid::generate().to_string();
        }
        let id = self.note_id(owner, &note.key);
        let key = keys::memory_note(owner, &id);
        let sealed =
            self.owner_key(owner, MEMORY).seal(key.as_bytes(), &serde_json::to_vec(&note).expect("notes serialise"));
        self.backend().put(&key, &sealed, None).await?;
        self.backend().index_add(&keys::memory_notes(owner), &id).await?;
        Ok(note)
    }

    /// `owner`'s note under `key`, if any.
    pub async fn note(&self, owner: &OwnerId, key: &str) -> Result<Option<Note>, StoreError> {
        let id = self.note_id(owner, key);
        let k = keys::memory_note(owner, &id);
        let Some(sealed) = self.backend().get(&k).await? else { return Ok(None) };
        self.open_note(owner, &k, &sealed).map(Some)
    }

    /// `owner`'s notes that pass `filter`, newest first.
    pub async fn notes(&self, owner: &OwnerId, filter: &NoteFilter<'_>) -> Result<Vec<Note>, StoreError> {
        let ids = self.backend().index_members(&keys::memory_notes(owner)).await?;
        let store_keys: Vec<String> = ids.iter().map(|id| keys::memory_note(owner, id)).collect();
        let mut out = Vec::new();
        for (k, sealed) in store_keys.iter().zip(self.backend().get_many(&store_keys).await?) {
            let Some(sealed) = sealed else { continue };
            let note = self.open_note(owner, k, &sealed)?;
            if note.at >= filter.since && filter.tag.is_none_or(|t| note.tags.iter().any(|n| n == t)) {
                out.push(note);
            }
        }
        out.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.key.cmp(&b.key)));
        out.truncate(filter.limit);
        Ok(out)
    }

    fn open_note(&self, owner: &OwnerId, key: &str, sealed: &[u8]) -> Result<Note, StoreError> {
        let plain = self
            .owner_key(owner, MEMORY)
            .open(key.as_bytes(), sealed)
            .map_err(|_| StoreError::Sealed(key.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::MasterKey;
    use crate::store::Backend;
    use crate::store::memory::MemoryBackend;

    fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory backend never waits"),
        }
    }

    fn note(key: &str, text: &str, tags: &[&str], at: u64) -> Note {
        Note {
            key: key.into(),
            text: text.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            at,
            workflow: None,
            run: None,
        }
    }

    #[test]
    fn notes_are_sealed_per_owner_and_listed_by_time_and_tag() {
        let backend = Arc::new(MemoryBackend::new());
        let store = Store::new(backend.clone(), MasterKey::generate());
        let (alice, bob) = (OwnerId::from("alice"), OwnerId::from("bob"));
        ready(store.put_note(&alice, note("client-acme", "Acme MARKER renews in May", &["client"], 10))).unwrap();
        ready(store.put_note(&alice, note("", "weekly call", &["ops"], 20))).unwrap();
        ready(store.put_note(&alice, note("client-acme", "Acme renews in June", &["client", "renewal"], 30))).unwrap();
        let all = ready(store.notes(&alice, &NoteFilter { since: 0, tag: None, limit: 10 })).unwrap();
        assert_eq!(
            all.iter().map(|n| n.at).collect::<Vec<_>>(),
            vec![30, 20],
            "newest first; a key's note is replaced"
        );
        let client = ready(store.notes(&alice, &NoteFilter { since: 0, tag: Some("client"), limit: 10 })).unwrap();
        assert_eq!(client.len(), 1);
        assert!(ready(store.notes(&alice, &NoteFilter { since: 25, tag: Some("ops"), limit: 10 })).unwrap().is_empty());
        assert_eq!(ready(store.note(&alice, "client-acme")).unwrap().unwrap().text, "Acme renews in June");
        // Bob has none, and cannot open Alice's under his name.
        assert!(ready(store.note(&bob, "client-acme")).unwrap().is_none());
        assert!(ready(store.notes(&bob, &NoteFilter { since: 0, tag: None, limit: 10 })).unwrap().is_empty());
        let id = store.note_id(&alice, "client-acme");
        let raw = ready(backend.get(&keys::memory_note(&alice, &id))).unwrap().unwrap();
        assert!(!raw.windows(4).any(|w| w == b"Acme"), "stored in the clear");
        assert!(!id.contains("acme"), "the key names no client");
        ready(backend.put(&keys::memory_note(&bob, &store.note_id(&bob, "client-acme")), &raw, None)).unwrap();
        assert!(matches!(ready(store.note(&bob, "client-acme")), Err(StoreError::Sealed(_))));
    }
}
