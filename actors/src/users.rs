//! [`UserDirectory`]: adding users and turning an API token into the user it belongs to.
//!
//! Tokens are stored only as Argon2id hashes (`tollgate_engine::users`), which take tens of
//! milliseconds to check by design; a successful check is remembered for [`VERIFIED_FOR`]
//! under the token's SHA-256 (in this process's memory only), so a console polling the API
//! pays the slow hash about once a minute, not on every request. A wrong token is never
//! remembered and always pays the full hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tollgate_engine::store::{Store, StoreError};
use tollgate_engine::users::{self, Role, TokenRecord, User};
use zeroize::Zeroizing;

use crate::system::now_ms;

/// How long a verified token is trusted without hashing it again.
pub const VERIFIED_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error("a user named `{0}` already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The users of one store, with the cache of recently verified tokens.
pub struct UserDirectory {
    store: Arc<Store>,
    verified: Mutex<HashMap<[u8; 32], (User, Instant)>>,
}

/// A new user and the token to give them (shown once; only its hash is kept).
pub struct NewUser {
    pub user: User,
    pub token: Zeroizing<String>,
}

impl UserDirectory {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, verified: Mutex::new(HashMap::new()) }
    }

    /// Create a user and their first API token.
    pub async fn add(
        &self,
        name: &str,
        role: Role,
        groups: Vec<String>,
        email: Option<String>,
    ) -> Result<NewUser, UserError> {
        let mut groups = groups;
        groups.sort();
        groups.dedup();
        let user = User { name: name.to_string(), role, groups, email, created_at: now_ms() };
        user.check().map_err(UserError::Invalid)?;
        let issued =
            tokio::task::spawn_blocking(users::issue_token).await.map_err(|e| UserError::Invalid(e.to_string()))?;
        let record = TokenRecord { user: user.name.clone(), hash: issued.hash, created_at: user.created_at };
        if !self.store.add_user(&user, &issued.id, &record).await? {
            return Err(UserError::Exists(user.name));
        }
        Ok(NewUser { user, token: issued.token })
    }

    /// The user `token` belongs to, or `None` for a token that is malformed, unknown or wrong.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>, StoreError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((user, at)) = self.verified.lock().expect("token cache lock").get(&digest) {
            if at.elapsed() < VERIFIED_FOR {
                return Ok(Some(user.clone()));
            }
        }
        let Some(id) = users::token_id(token) else { return Ok(None) };
        let Some(record) = self.store.token_record(id).await? else {
            // Hash anyway, so an unknown id takes as long to refuse as a wrong secret.
            let t = token.to_string();
            let _ = tokio::task::spawn_blocking(move || users::verify_token(&t, &DUMMY_HASH)).await;
            return Ok(None);
        };
        let (t, hash) = (token.to_string(), record.hash.clone());
        if !tokio::task::spawn_blocking(move || users::verify_token(&t, &hash)).await.unwrap_or(false) {
            return Ok(None);
        }
        let Some(user) = self.store.user(&record.user).await? else { return Ok(None) };
        let mut cache = self.verified.lock().expect("token cache lock");
        cache.retain(|_, (_, at)| at.elapsed() < VERIFIED_FOR);
        cache.insert(digest, (user.clone(), Instant::now()));
        Ok(Some(user))
    }

    pub async fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.store.user(name).await
    }

    pub async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.store.users().await
    }

    /// The users `assignee` names: the user of that name, or every member of that group.
    pub async fn resolve(&self, assignee: &str) -> Result<Vec<User>, StoreError> {
        Ok(self.store.users().await?.into_iter().filter(|u| u.acts_for(assignee)).collect())
    }

    /// Whether any user exists yet.
    pub async fn any(&self) -> Result<bool, StoreError> {
        self.store.has_users().await
    }
}

/// A hash of a token nobody holds (checked against for unknown token ids).
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| users::hash_token("tg_unused"));
