//! Encryption at rest: per-workflow keys derived from the service master key, AES-SIV sealing.
//!
//! key(workflow) = HKDF-SHA256(ikm = master key, salt = the workflow's random salt,
//!                             info = "tollgate/v1" ‖ owner ‖ 0 ‖ workflow id ‖ 0 ‖ key version)
//! A record is sealed with AES-256-SIV (RFC 5297) under that key, with a random 16-byte nonce
//! and the record's store key as associated data: a ciphertext copied under another key, or to
//! another workflow, fails to open. Deleting a workflow's salt makes its records unreadable.

use aes_siv::aead::{Aead, KeyInit, Payload};
use aes_siv::{Aes256SivAead, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::ids::{OwnerId, WorkflowId};

/// Sealed records start with this byte so a format change can be recognised.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 16;
/// Length of a master key and of a derived record key (AES-256-SIV takes two 256-bit keys).
pub const KEY_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("master key must be {KEY_LEN} bytes (128 hex characters), got {0} bytes")]
    BadMasterKeyLength(usize),
    #[error("master key is not valid hex: {0}")]
    BadMasterKeyHex(String),
    #[error("sealed record is malformed or of an unknown format")]
    Malformed,
    #[error("sealed record failed to open: wrong key, wrong record, or tampered")]
    OpenFailed,
}

/// The service master key. Never logged: `Debug` prints nothing of it.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::BadMasterKeyLength(bytes.len()))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(hex::decode(s.trim()).map_err(|e| CryptoError::BadMasterKeyHex(e.to_string()))?);
        Self::from_bytes(&bytes)
    }

    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut k);
        Self(Zeroizing::new(k))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    /// The key for one workflow, bound to its owner, salt and key version.
    pub fn workflow_key(&self, salt: &[u8], owner: &OwnerId, workflow: &WorkflowId, version: u32) -> RecordKey {
        let mut info = Vec::with_capacity(32 + owner.0.len() + workflow.0.len());
        info.extend_from_slice(b"tollgate/v1/workflow\0");
        info.extend_from_slice(owner.0.as_bytes());
        info.push(0);
        info.extend_from_slice(workflow.0.as_bytes());
        info.push(0);
        info.extend_from_slice(&version.to_be_bytes());
        self.derive(Some(salt), &info)
    }

    /// The key for one owner's records of one `purpose` (`secrets`: their API keys; `docs`:
    /// their document collections), which belong to no single workflow.
    pub fn owner_key(&self, owner: &OwnerId, purpose: &str) -> RecordKey {
        let mut info = Vec::with_capacity(32 + owner.0.len() + purpose.len());
        info.extend_from_slice(b"tollgate/v1/owner\0");
        info.extend_from_slice(owner.0.as_bytes());
        info.push(0);
        info.extend_from_slice(purpose.as_bytes());
        self.derive(None, &info)
    }

    /// The key for service-level records (workflow key descriptors, indexes with data).
    pub fn service_key(&self) -> RecordKey {
        self.derive(None, b"tollgate/v1/service")
    }

    /// The key that seals events on the internal bus (service-level: events cross workflows).
    pub fn events_key(&self) -> RecordKey {
        self.derive(None, b"tollgate/v1/events")
    }

    /// A 32-byte key for a MAC or keyed hash that is not a sealed record (the console's session
    /// cookies, event names in store keys),
    /// one per `purpose`: it stays the same across restarts and changes with the master key.
    pub fn mac_key(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(None, &self.0[..]);
        let mut okm = Zeroizing::new([0u8; 32]);
        let info = [b"tollgate/v1/mac\0".as_slice(), purpose.as_bytes()].concat();
        hk.expand(&info, &mut okm[..]).expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }

    fn derive(&self, salt: Option<&[u8]>, info: &[u8]) -> RecordKey {
        let hk = Hkdf::<Sha256>::new(salt, &self.0[..]);
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        hk.expand(info, &mut okm[..]).expect("64 bytes is a valid HKDF-SHA256 output length");
        // A separate key for keyed digests (ids derived from outside data, e.g. dedup keys).
        let mut mac = Zeroizing::new([0u8; 32]);
        hk.expand_multi_info(&[info, b"/digest"], &mut mac[..]).expect("32 bytes is a valid HKDF-SHA256 output length");
        RecordKey {
            cipher: std::sync::Arc::new(Aes256SivAead::new((&okm[..]).try_into().expect("key length"))),
            mac: std::sync::Arc::new(mac),
        }
    }
}

/// A derived key that seals and opens records.
/// Cheap to clone: the cipher state is shared.
#[derive(Clone)]
pub struct RecordKey {
    cipher: std::sync::Arc<Aes256SivAead>,
    mac: std::sync::Arc<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(…)")
    }
}

impl RecordKey {
    /// Seal `plaintext` bound to `aad` (the record's store key).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
            .expect("AES-SIV encryption does not fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// A keyed digest of `data` (HMAC-SHA256, 128 bits in hex): turns a value from outside
    /// (a delivery id, a Message-ID, a content hash) into an id that can sit in a store key
    /// without saying anything about the value to someone who reads the store.
    pub fn digest(&self, data: &[u8]) -> String {
        use hmac::{KeyInit as _, Mac};
        let mut m = hmac::Hmac::<Sha256>::new_from_slice(&self.mac[..]).expect("HMAC takes any key length");
        m.update(data);
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    /// Open a record sealed by [`RecordKey::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_V1 {
            return Err(CryptoError::Malformed);
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().expect("length checked");
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: &sealed[1 + NONCE_LEN..], aad })
            .map_err(|_| CryptoError::OpenFailed)
    }
}

/// A fresh random per-workflow salt.
pub fn new_salt() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::rng().fill_bytes(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(owner: &str, wf: &str, salt: &[u8]) -> RecordKey {
        let master = MasterKey::from_bytes(&[7u8; KEY_LEN]).unwrap();
        master.workflow_key(salt, &OwnerId::from(owner), &WorkflowId::from(wf), 1)
    }

    proptest! {
        #[test]
        fn seal_then_open_round_trips(data in proptest::collection::vec(any::<u8>(), 0..512), aad in "[a-z/]{1,40}") {
            let k = key("alice", "intake", b"salt");
            let sealed = k.seal(aad.as_bytes(), &data);
            prop_assert_eq!(k.open(aad.as_bytes(), &sealed).unwrap(), data);
        }
    }

    #[test]
    fn a_record_moved_to_another_key_or_workflow_or_owner_does_not_open() {
        let k = key("alice", "intake", b"salt");
        let sealed = k.seal(b"run/1/meta", b"secret");
        assert_eq!(k.open(b"run/2/meta", &sealed), Err(CryptoError::OpenFailed));
        assert_eq!(key("bob", "intake", b"salt").open(b"run/1/meta", &sealed), Err(CryptoError::OpenFailed));
        assert_eq!(key("alice", "other", b"salt").open(b"run/1/meta", &sealed), Err(CryptoError::OpenFailed));
        assert_eq!(key("alice", "intake", b"pepper").open(b"run/1/meta", &sealed), Err(CryptoError::OpenFailed));
    }

    #[test]
    fn digests_are_keyed_per_workflow_and_stable() {
        let k = key("alice", "intake", b"salt");
        assert_eq!(k.digest(b"delivery-1"), k.digest(b"delivery-1"));
        assert_ne!(k.digest(b"delivery-1"), k.digest(b"delivery-2"));
        assert_ne!(k.digest(b"delivery-1"), key("alice", "other", b"salt").digest(b"delivery-1"));
        assert_eq!(k.digest(b"x").len(), 32);
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let k = key("alice", "intake", b"salt");
        assert_ne!(k.seal(b"a", b"same"), k.seal(b"a", b"same"));
    }

    #[test]
    fn master_key_parsing_names_the_problem() {
        assert_eq!(MasterKey::from_hex("abcd").unwrap_err(), CryptoError::BadMasterKeyLength(2));
        assert!(matches!(MasterKey::from_hex("zz").unwrap_err(), CryptoError::BadMasterKeyHex(_)));
        let k = MasterKey::generate();
        assert_eq!(MasterKey::from_hex(&k.to_hex()).unwrap().0[..], k.0[..]);
        assert_eq!(format!("{k:?}"), "MasterKey(…)");
    }
}
