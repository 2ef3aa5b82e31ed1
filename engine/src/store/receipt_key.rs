//! The service's receipt signing key in the store: an Ed25519 seed sealed with the service
//! key under [`keys::RECEIPT_KEY`], created by whichever process needs it first (first writer
//! wins, so every process of a fleet signs with the same key).

use zeroize::Zeroizing;

use crate::receipt::ReceiptSigner;
use crate::store::{Store, StoreError, keys};

impl Store {
    /// The service's receipt signer, created on first use.
    pub async fn receipt_signer(&self) -> Result<ReceiptSigner, StoreError> {
        let key = keys::RECEIPT_KEY;
        if let Some(signer) = self.read_receipt_key().await? {
            return Ok(signer);
        }
        let seed = ReceiptSigner::generate_seed();
        let hex_seed = Zeroizing::new(hex::encode(&seed[..]));
        let sealed = self.service_key().seal(key.as_bytes(), hex_seed.as_bytes());
        self.backend().put_if_absent(key, &sealed, None).await?;
        // Another process may have won: use whichever key is stored.
        self.read_receipt_key().await?.ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn read_receipt_key(&self) -> Result<Option<ReceiptSigner>, StoreError> {
        let key = keys::RECEIPT_KEY;
        let Some(sealed) = self.backend().get(key).await? else { return Ok(None) };
        let plain = Zeroizing::new(
            self.service_key().open(key.as_bytes(), &sealed).map_err(|_| StoreError::Sealed(key.to_string()))?,
        );
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&plain[..], &mut seed[..])
            .map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })?;
        Ok(Some(ReceiptSigner::from_seed(&seed)))
    }
}
