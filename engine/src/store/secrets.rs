//! The secret store: named values (API keys) that belong to an owner, sealed with the owner's
//! key (`MasterKey::owner_key`) and bound to their store key, so a secret is readable only by
//! code acting for that owner, and neither its value nor anything derived from it is in a key.
//! Secrets are written by `tollgate secrets set NAME` (the value from stdin) and read by the
//! handlers that need them (the `llm` step's provider key); they never enter a spec, a journal,
//! an output or a log.

use zeroize::Zeroizing;

use crate::ids::OwnerId;
use crate::store::{Store, StoreError, keys};

/// The purpose secrets' owner key is derived for.
const SECRETS: &str = "secrets";

/// Secret names: letters, digits, `_`, `-`, `.`; 1 to 128 characters.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Store {
    /// Set (or replace) `owner`'s secret `name`.
    pub async fn put_secret(&self, owner: &OwnerId, name: &str, value: &str) -> Result<(), StoreError> {
        if !valid_secret_name(name) {
            return Err(StoreError::Forbidden(format!(
                "`{name}` is not a valid secret name (letters, digits, `_`, `-`, `.`)"
            )));
        }
        let key = keys::secret(owner, name);
        let sealed = self.owner_key(owner, SECRETS).seal(key.as_bytes(), value.as_bytes());
        self.backend().put(&key, &sealed, None).await
    }

    /// `owner`'s secret `name`, if set.
    pub async fn secret(&self, owner: &OwnerId, name: &str) -> Result<Option<Zeroizing<String>>, StoreError> {
        if !valid_secret_name(name) {
            return Ok(None);
        }
        let key = keys::secret(owner, name);
        let Some(sealed) = self.backend().get(&key).await? else { return Ok(None) };
        let plain = self
            .owner_key(owner, SECRETS)
            .open(key.as_bytes(), &sealed)
            .map_err(|_| StoreError::Sealed(key.clone()))?;
        let text =
            String::from_utf8(plain).map_err(|_| StoreError::Corrupt { key, reason: "secret is not UTF-8".into() })?;
        Ok(Some(Zeroizing::new(text)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::MasterKey;
    use crate::store::Backend;
    use crate::store::memory::MemoryBackend;

    /// The memory backend's futures are ready on their first poll.
    fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory backend never waits"),
        }
    }

    #[test]
    fn a_secret_is_sealed_per_owner_and_bound_to_its_key() {
        let backend = Arc::new(MemoryBackend::new());
        let store = Store::new(backend.clone(), MasterKey::generate());
        let (alice, bob) = (OwnerId::from("alice"), OwnerId::from("bob"));
        ready(store.put_secret(&alice, "openai", "sk-MARKER-123")).unwrap();
        assert_eq!(
            ready(store.secret(&alice, "openai")).unwrap().as_deref().map(String::as_str),
            Some("sk-MARKER-123")
        );
        assert!(ready(store.secret(&bob, "openai")).unwrap().is_none());
        let raw = ready(backend.get("secret/alice/openai")).unwrap().unwrap();
        assert!(!raw.windows(6).any(|w| w == b"MARKER"), "stored in the clear");
        // Moved under another owner's name, it does not open.
        ready(backend.put("secret/bob/openai", &raw, None)).unwrap();
        assert!(matches!(ready(store.secret(&bob, "openai")), Err(StoreError::Sealed(_))));
        assert!(ready(store.put_secret(&alice, "a/b", "x")).is_err());
    }
}
