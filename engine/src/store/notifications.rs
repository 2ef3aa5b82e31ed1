//! Console notifications (`notify` steps): one sealed record per notification (service key: a
//! notification belongs to its recipients, not to a workflow's owner) and an index per
//! recipient user, `idx/notify/{user}`, whose members are notification ids (ULIDs, so they
//! sort by time). `GET /api/notifications` reads the caller's index; the update bus tells live
//! consoles that one arrived (ids only).

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, keys};

/// One notification, as its recipients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// A ULID.
    pub id: String,
    /// The user or group it was addressed to.
    pub to: String,
    pub subject: String,
    pub message: String,
    pub workflow: String,
    pub run: String,
    pub step: String,
    pub at: u64,
}

impl Store {
    /// Record `n` for each of `recipients` (user names).
    pub async fn put_notification(&self, n: &Notification, recipients: &[String]) -> Result<(), StoreError> {
        let key = keys::notification(&n.id);
        let sealed = self.service_key().seal(key.as_bytes(), &serde_json::to_vec(n).expect("notifications serialise"));
        self.backend().put(&key, &sealed, None).await?;
        for user in recipients {
            self.backend().index_add(&keys::notifications_of(user), &n.id).await?;
        }
        Ok(())
    }

    /// The newest `limit` notifications of `user`, newest first.
    pub async fn notifications(&self, user: &str, limit: usize) -> Result<Vec<Notification>, StoreError> {
        let ids = self.backend().index_page_desc(&keys::notifications_of(user), None, limit).await?;
        let store_keys: Vec<String> = ids.iter().map(|id| keys::notification(id)).collect();
        let mut out = Vec::new();
        for (key, sealed) in store_keys.iter().zip(self.backend().get_many(&store_keys).await?) {
            let Some(sealed) = sealed else { continue };
            let plain =
                self.service_key().open(key.as_bytes(), &sealed).map_err(|_| StoreError::Sealed(key.clone()))?;
            out.push(
                serde_json::from_slice(&plain)
                    .map_err(|e| StoreError::Corrupt { key: key.clone(), reason: e.to_string() })?,
            );
        }
        Ok(out)
    }
}
