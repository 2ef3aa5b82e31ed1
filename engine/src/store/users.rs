//! Users and their token hashes in the store: sealed with the service key (they belong to no
//! workflow), under keys that hold a user's name or a token's public id only.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{Store, StoreError, keys};
use crate::users::{TokenRecord, User};

impl Store {
    async fn get_service<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let Some(sealed) = self.backend().get(key).await? else { return Ok(None) };
        let plain =
            self.service_key().open(key.as_bytes(), &sealed).map_err(|_| StoreError::Sealed(key.to_string()))?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
    }

    fn seal_service<T: Serialize>(&self, key: &str, value: &T) -> Vec<u8> {
        self.service_key().seal(key.as_bytes(), &serde_json::to_vec(value).expect("records serialise"))
    }

    /// Create a user with its first token's hash. Returns false (and writes nothing) when the
    /// name is taken.
    pub async fn add_user(&self, user: &User, token_id: &str, token: &TokenRecord) -> Result<bool, StoreError> {
        let key = keys::user(&user.name);
        if !self.backend().put_if_absent(&key, &self.seal_service(&key, user), None).await? {
            return Ok(false);
        }
        let tkey = keys::user_token(token_id);
        self.backend().put(&tkey, &self.seal_service(&tkey, token), None).await?;
        self.backend().index_add(keys::USERS, &user.name).await?;
        Ok(true)
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.get_service(&keys::user(name)).await
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let mut out = Vec::new();
        for name in self.backend().index_members(keys::USERS).await? {
            if let Some(u) = self.user(&name).await? {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Whether any user exists (before the first, the CLI may still name a decider freely).
    pub async fn has_users(&self) -> Result<bool, StoreError> {
        Ok(!self.backend().index_page_desc(keys::USERS, None, 1).await?.is_empty())
    }

    pub async fn token_record(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get_service(&keys::user_token(id)).await
    }
}
