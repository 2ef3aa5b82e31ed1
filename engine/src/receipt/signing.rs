//! The service's receipt key (Ed25519): created once, sealed in the store with the service key
//! (`Store::receipt_signer`); its public half is what an auditor checks receipts against.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use zeroize::Zeroizing;

/// The private signing key. `Debug` prints only the public key.
#[derive(Clone)]
pub struct ReceiptSigner(SigningKey);

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptSigner({})", self.public())
    }
}

impl ReceiptSigner {
    /// A fresh random seed (32 bytes) for a new key.
    pub fn generate_seed() -> Zeroizing<[u8; 32]> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut seed[..]);
        seed
    }

    pub fn from_seed(seed: &[u8; 32]) -> ReceiptSigner {
        ReceiptSigner(SigningKey::from_bytes(seed))
    }

    pub fn public(&self) -> ReceiptKey {
        ReceiptKey(self.0.verifying_key())
    }

    /// The signature of `message`, in hex.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.0.sign(message).to_bytes())
    }
}

/// A public receipt key: 64 lower-case hex characters (the 32-byte Ed25519 key).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReceiptKey(VerifyingKey);

impl std::fmt::Display for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptKey({self})")
    }
}

impl std::str::FromStr for ReceiptKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| {
            format!(
                "a receipt key is 64 hex characters (an Ed25519 public key); got {:?}",
                s.chars().take(80).collect::<String>()
            )
        })?;
        VerifyingKey::from_bytes(&bytes).map(ReceiptKey).map_err(|_| "not a valid Ed25519 public key".to_string())
    }
}

impl ReceiptKey {
    /// Whether `signature` (hex) is this key's signature of `message` (strict verification:
    /// no malleable or small-order forms).
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let mut bytes = [0u8; 64];
        if signature.len() != 128
            || signature.bytes().any(|b| b.is_ascii_uppercase())
            || hex::decode_to_slice(signature, &mut bytes).is_err()
        {
            return false;
        }
        let sig = Signature::from_bytes(&bytes);
        self.0.verify_strict(message, &sig).is_ok() && self.0.verify(message, &sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let a = ReceiptSigner::from_seed(&ReceiptSigner::generate_seed());
        let b = ReceiptSigner::from_seed(&ReceiptSigner::generate_seed());
        let sig = a.sign(b"hello");
        assert!(a.public().verifies(b"hello", &sig));
        assert!(!a.public().verifies(b"hellO", &sig));
        assert!(!b.public().verifies(b"hello", &sig));
        assert!(!a.public().verifies(b"hello", &sig.to_uppercase()));
        let key: ReceiptKey = a.public().to_string().parse().unwrap();
        assert_eq!(key, a.public());
        assert!("abc".parse::<ReceiptKey>().unwrap_err().contains("64 hex"));
        assert_eq!(format!("{a:?}"), format!("ReceiptSigner({})", a.public()));
    }
}
