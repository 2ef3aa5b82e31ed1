//! [`Store`] records of the fire path: dedup claims (first writer wins, with a TTL), the
//! workflow's fire history (each entry sealed, with a TTL), trigger state and secrets, and
//! blobs carried by reference (uploads, mail attachments), each with a TTL. Dedup keys and
//! blob contents reach store keys only as workflow-keyed digests.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::RecordKey;
use crate::ids::{FireId, TriggerId, WorkflowId};
use crate::store::{Store, StoreError, keys};
use crate::trigger::{FireClaim, FireRecord, TriggerStateRecord};

/// How long a mail attachment's blob is kept unless configured (`attachment_ttl`): the runs
/// that read it by reference have that long to do so.
pub const DEFAULT_ATTACHMENT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn seal<T: Serialize>(k: &RecordKey, key: &str, value: &T) -> Vec<u8> {
    k.seal(key.as_bytes(), &serde_json::to_vec(value).expect("records serialise to JSON"))
}

fn open<T: DeserializeOwned>(k: &RecordKey, key: &str, sealed: &[u8]) -> Result<T, StoreError> {
    let plain = k.open(key.as_bytes(), sealed).map_err(|_| StoreError::Sealed(key.to_string()))?;
    serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
}

impl Store {
    async fn get_sealed_in<T: DeserializeOwned>(&self, wf: &WorkflowId, key: &str) -> Result<Option<T>, StoreError> {
        let k = self.workflow_key(wf).await?;
        self.backend().get(key).await?.map(|s| open(&k, key, &s)).transpose()
    }

    /// The store key of the claim on `key` (the dedup key is digested with the workflow's key).
    pub async fn fire_claim_key(&self, wf: &WorkflowId, trigger: &TriggerId, key: &str) -> Result<String, StoreError> {
        let k = self.workflow_key(wf).await?;
        Ok(keys::fire_claim(wf, trigger, &k.digest(key.as_bytes())))
    }

    /// Claim a fire's dedup key for `ttl` (the dedup window), atomically: `SET NX PX` on Redis,
    /// an insert-if-absent on SQLite. `Ok(None)`: this fire won; otherwise the claim that was
    /// there first.
    pub async fn claim_fire(
        &self,
        wf: &WorkflowId,
        trigger: &TriggerId,
        key: &str,
        claim: &FireClaim,
        ttl: Duration,
    ) -> Result<Option<FireClaim>, StoreError> {
        let k = self.workflow_key(wf).await?;
        let store_key = keys::fire_claim(wf, trigger, &k.digest(key.as_bytes()));
        for _ in 0..3 {
            if self.backend().put_if_absent(&store_key, &seal(&k, &store_key, claim), Some(ttl)).await? {
                return Ok(None);
            }
            // Lost: read the winner. It may have expired in between; then claim again.
            if let Some(sealed) = self.backend().get(&store_key).await? {
                return Ok(Some(open(&k, &store_key, &sealed)?));
            }
        }
        Err(StoreError::Unavailable(format!("claim {store_key} kept expiring while it was read")))
    }

    /// Give a claim back (the fire could not be recorded: a redelivery must be able to retry).
    pub async fn release_fire_claim(&self, wf: &WorkflowId, trigger: &TriggerId, key: &str) -> Result<(), StoreError> {
        let store_key = self.fire_claim_key(wf, trigger, key).await?;
        self.backend().delete(&store_key).await
    }

    /// Append a fire to its workflow's history (sealed; it expires after `ttl`).
    pub async fn record_fire(&self, record: &FireRecord, ttl: Duration) -> Result<(), StoreError> {
        let k = self.workflow_key(&record.workflow).await?;
        let key = keys::fire_record(&record.workflow, &record.fire);
        self.backend().put(&key, &seal(&k, &key, record), Some(ttl)).await
    }

    pub async fn fire_record(&self, wf: &WorkflowId, fire: &FireId) -> Result<Option<FireRecord>, StoreError> {
        self.get_sealed_in(wf, &keys::fire_record(wf, fire)).await
    }

    /// A workflow's fire history, newest first, at most `limit` entries (expired ones are gone).
    pub async fn fire_history(&self, wf: &WorkflowId, limit: usize) -> Result<Vec<FireRecord>, StoreError> {
        let k = self.workflow_key(wf).await?;
        let mut keys = self.backend().scan_prefix(&keys::fire_history(wf)).await?;
        keys.reverse(); // fire ids are ULIDs: newest last
        keys.truncate(limit);
        let values = self.backend().get_many(&keys).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(values) {
            // An entry that expired between the scan and the read is simply gone.
            if let Some(sealed) = value {
                out.push(open(&k, key, &sealed)?);
            }
        }
        Ok(out)
    }

    /// Save a trigger's state (and list the trigger, once, in the trigger index).
    pub async fn put_trigger_state(&self, state: &TriggerStateRecord) -> Result<(), StoreError> {
        let k = self.workflow_key(&state.workflow).await?;
        let key = keys::trigger_state(&state.workflow, &state.trigger);
        self.backend().put(&key, &seal(&k, &key, state), None).await?;
        self.backend().index_add(keys::TRIGGERS, &format!("{}/{}", state.workflow, state.trigger)).await
    }

    pub async fn trigger_state(
        &self,
        wf: &WorkflowId,
        trigger: &TriggerId,
    ) -> Result<Option<TriggerStateRecord>, StoreError> {
        self.get_sealed_in(wf, &keys::trigger_state(wf, trigger)).await
    }

    /// Every trigger that has saved a state, as (workflow, trigger).
    pub async fn triggers(&self) -> Result<Vec<(WorkflowId, TriggerId)>, StoreError> {
        Ok(self
            .backend()
            .index_members(keys::TRIGGERS)
            .await?
            .into_iter()
            .filter_map(|m| m.split_once('/').map(|(w, t)| (WorkflowId::new(w), TriggerId::new(t))))
            .collect())
    }

    /// A trigger's secret, if one was set or generated.
    pub async fn trigger_secret(&self, wf: &WorkflowId, trigger: &TriggerId) -> Result<Option<String>, StoreError> {
        self.get_sealed_in(wf, &keys::trigger_secret(wf, trigger)).await
    }

    /// Set a trigger's secret (replacing any).
    pub async fn put_trigger_secret(
        &self,
        wf: &WorkflowId,
        trigger: &TriggerId,
        secret: &str,
    ) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::trigger_secret(wf, trigger);
        self.backend().put(&key, &seal(&k, &key, &secret), None).await
    }

    /// A trigger's secret, generating one (first writer wins) if it has none.
    pub async fn ensure_trigger_secret(
        &self,
        wf: &WorkflowId,
        trigger: &TriggerId,
        fresh: &str,
    ) -> Result<String, StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::trigger_secret(wf, trigger);
        self.backend().put_if_absent(&key, &seal(&k, &key, &fresh), None).await?;
        self.trigger_secret(wf, trigger).await?.ok_or(StoreError::NotFound(key))
    }

    /// Keep content passed by reference — an upload, a mail's attachment (the IMAP trigger's or
    /// an `email.fetch`'s) — sealed, for `ttl`: no blob lives forever. Returns its reference (a
    /// keyed digest of the content, so equal content is stored once; storing it again renews
    /// its expiry).
    pub async fn put_blob(&self, wf: &WorkflowId, content: &[u8], ttl: Duration) -> Result<String, StoreError> {
        let k = self.workflow_key(wf).await?;
        let digest = k.digest(content);
        let key = keys::fire_blob(wf, &digest);
        self.backend().put(&key, &k.seal(key.as_bytes(), content), Some(ttl)).await?;
        Ok(digest)
    }

    pub async fn blob(&self, wf: &WorkflowId, reference: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::fire_blob(wf, reference);
        self.backend()
            .get(&key)
            .await?
            .map(|s| k.open(key.as_bytes(), &s).map_err(|_| StoreError::Sealed(key.clone())))
            .transpose()
    }
}
