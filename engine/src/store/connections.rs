//! [`Store`] records of connections: an owner's named connections (settings only, sealed with
//! the owner's `connections` key, listed in `idx/conn/{owner}`), their credentials (in the
//! owner's secret store, under `connection.{name}`), and the send records that make a step's
//! `email.send` happen once however often it is attempted.
//!
//! **Send once.** Before an attempt hands a message to the SMTP server it writes
//! [`EmailSendRecord::Sending`] under a workflow-keyed digest of the step's idempotency key
//! (the same for every attempt of the step), first writer wins; once the server has accepted
//! the message it overwrites it with [`EmailSendRecord::Sent`] and the step's output. A later
//! attempt (a retry, a re-dispatch after a lost outcome, a duplicate delivery) that finds
//! `Sent` returns the recorded output and sends nothing. One that finds `Sending` knows an
//! earlier attempt died between its record and the server's answer — the one window where it
//! cannot be known whether the mail went out — and sends again with the same `Message-ID`
//! (derived from the idempotency key), so the recipient's mail store sees one message.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connections::{Connection, credential_secret, valid_connection_name};
use crate::ids::{OwnerId, WorkflowId};
use crate::store::{Store, StoreError, keys};

/// The purpose the owner key of connection records is derived for.
const CONNECTIONS: &str = "connections";

/// Whether, and how far, a step's email has been sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EmailSendRecord {
    /// Attempt `attempt` is handing the message to the server.
    Sending { attempt: u32, message_id: String, at_ms: u64 },
    /// The server accepted the message; `output` is the step's output.
    Sent { attempt: u32, message_id: String, at_ms: u64, output: Value },
}

impl Store {
    /// Save (or replace) `owner`'s connection, and its credential when given: the credential
    /// goes to the owner's secret store first, so a connection is never listed without it.
    pub async fn put_connection(
        &self,
        owner: &OwnerId,
        connection: &Connection,
        credential: Option<&str>,
    ) -> Result<(), StoreError> {
        if !valid_connection_name(&connection.name) {
            return Err(StoreError::Forbidden(format!("`{}` is not a valid connection name", connection.name)));
        }
        if let Some(c) = credential {
            self.put_secret(owner, &connection.credential_secret(), c).await?;
        }
        let key = keys::connection(owner, &connection.name);
        let plain = serde_json::to_vec(connection).expect("connections serialise");
        let sealed = self.owner_key(owner, CONNECTIONS).seal(key.as_bytes(), &plain);
        self.backend().put(&key, &sealed, None).await?;
        self.backend().index_add(&keys::connections(owner), &connection.name).await
    }

    /// `owner`'s connection `name`, if there is one.
    pub async fn connection(&self, owner: &OwnerId, name: &str) -> Result<Option<Connection>, StoreError> {
        if !valid_connection_name(name) {
            return Ok(None);
        }
        let key = keys::connection(owner, name);
        let Some(sealed) = self.backend().get(&key).await? else { return Ok(None) };
        let plain = self
            .owner_key(owner, CONNECTIONS)
            .open(key.as_bytes(), &sealed)
            .map_err(|_| StoreError::Sealed(key.clone()))?;
        serde_json::from_slice(&plain).map(Some).map_err(|e| StoreError::Corrupt { key, reason: e.to_string() })
    }

    /// Every connection of `owner`, by name.
    pub async fn connections(&self, owner: &OwnerId) -> Result<Vec<Connection>, StoreError> {
        let mut out = Vec::new();
        for name in self.backend().index_members(&keys::connections(owner)).await? {
            if let Some(c) = self.connection(owner, &name).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The credential of `owner`'s connection `name`, if one was stored.
    pub async fn connection_credential(
        &self,
        owner: &OwnerId,
        name: &str,
    ) -> Result<Option<zeroize::Zeroizing<String>>, StoreError> {
        self.secret(owner, &credential_secret(name)).await
    }

    /// Remove `owner`'s connection `name` and its credential; returns whether it existed.
    pub async fn remove_connection(&self, owner: &OwnerId, name: &str) -> Result<bool, StoreError> {
        let existed = self.connection(owner, name).await?.is_some();
        self.backend().index_remove(&keys::connections(owner), name).await?;
        self.backend().delete(&keys::connection(owner, name)).await?;
        self.backend().delete(&keys::secret(owner, &credential_secret(name))).await?;
        Ok(existed)
    }

    fn email_sent_key(&self, k: &crate::crypto::RecordKey, wf: &WorkflowId, idempotency_key: &str) -> String {
        keys::email_sent(wf, &k.digest(idempotency_key.as_bytes()))
    }

    /// Record that an attempt is about to send the step's email (first writer wins). `Ok(None)`:
    /// this record is the first; otherwise the record that was there — `Sent` (do not send
    /// again) or `Sending` (an earlier attempt died mid-send: see [`Store::resume_email_send`]).
    pub async fn begin_email_send(
        &self,
        wf: &WorkflowId,
        idempotency_key: &str,
        sending: &EmailSendRecord,
    ) -> Result<Option<EmailSendRecord>, StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = self.email_sent_key(&k, wf, idempotency_key);
        let sealed = k.seal(key.as_bytes(), &serde_json::to_vec(sending).expect("records serialise"));
        if self.backend().put_if_absent(&key, &sealed, None).await? {
            return Ok(None);
        }
        let sealed = self.backend().get(&key).await?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let plain = k.open(key.as_bytes(), &sealed).map_err(|_| StoreError::Sealed(key.clone()))?;
        serde_json::from_slice(&plain).map(Some).map_err(|e| StoreError::Corrupt { key, reason: e.to_string() })
    }

    /// Replace the step's send record (a `Sending` by a later attempt, or the final `Sent`).
    pub async fn record_email_send(
        &self,
        wf: &WorkflowId,
        idempotency_key: &str,
        record: &EmailSendRecord,
    ) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = self.email_sent_key(&k, wf, idempotency_key);
        let sealed = k.seal(key.as_bytes(), &serde_json::to_vec(record).expect("records serialise"));
        self.backend().put(&key, &sealed, None).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::connections::ConnectionKind;
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

    #[test]
    fn connections_are_sealed_per_owner_and_their_credential_is_a_secret() {
        let backend = Arc::new(MemoryBackend::new());
        let store = Store::new(backend.clone(), MasterKey::generate());
        let (ops, other) = (OwnerId::from("ops"), OwnerId::from("other"));
        let settings = [("host", "mail.example.com"), ("user", "ZEBRA-USER"), ("from", "ops@example.com")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Connection::from_settings("office_mail", ConnectionKind::Smtp, &settings).unwrap();
        ready(store.put_connection(&ops, &c, Some("ZEBRA-PASSWORD"))).unwrap();
        assert_eq!(ready(store.connection(&ops, "office_mail")).unwrap(), Some(c.clone()));
        assert_eq!(ready(store.connections(&ops)).unwrap(), vec![c]);
        assert_eq!(
            ready(store.connection_credential(&ops, "office_mail")).unwrap().as_deref().map(String::as_str),
            Some("ZEBRA-PASSWORD")
        );
        assert!(ready(store.connection(&other, "office_mail")).unwrap().is_none());
        for key in ready(backend.scan_prefix("")).unwrap() {
            let raw = ready(backend.get(&key)).unwrap().unwrap_or_default();
            assert!(!raw.windows(5).any(|w| w == b"ZEBRA"), "{key} holds plaintext");
        }
        assert!(ready(store.remove_connection(&ops, "office_mail")).unwrap());
        assert!(ready(store.connections(&ops)).unwrap().is_empty());
        assert!(ready(store.connection_credential(&ops, "office_mail")).unwrap().is_none());
    }
}
