//! Users of the admin API and the console: a name, a role, groups, and API tokens that are
//! kept only as slow hashes (Argon2id, PHC strings). Who may see and decide what is decided
//! here too ([`User::sees`], [`User::acts_for`]), so every route asks the same question.
//!
//! A token reads `tg_<id>_<secret>`: the id finds its one hash record (no scan over every
//! user's hash), the whole token is what the hash covers.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ids::is_valid_id;

/// What a user may do beyond their own workflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users; sees and decides every workflow's runs and requests.
    Admin,
    /// Sees and decides the workflows owned by them or by one of their groups.
    Operator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

/// A user (sealed at rest with the service key, under `user/{name}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Groups the user belongs to: a workflow owned by a group is theirs too.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Where pages (new and escalated requests) are mailed, when SMTP is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub created_at: u64,
}

impl User {
    /// Whether `owner` (a workflow's owner, or a request's assignee) names this user or one of
    /// their groups.
    pub fn acts_for(&self, owner: &str) -> bool {
        self.name == owner || self.groups.iter().any(|g| g == owner)
    }

    /// Whether this user may see (and decide) what `owner` owns: their own, their groups', or
    /// anything for an admin.
    pub fn sees(&self, owner: &str) -> bool {
        self.role == Role::Admin || self.acts_for(owner)
    }

    /// Problems with a new user's name, groups and email, in words.
    pub fn check(&self) -> Result<(), String> {
        if !is_valid_id(&self.name) {
            return Err(format!(
                "user name `{}` is not valid (letters, digits, `_`, `-`, `.`; at most 128)",
                self.name
            ));
        }
        if let Some(g) = self.groups.iter().find(|g| !is_valid_id(g)) {
            return Err(format!("group name `{g}` is not valid (letters, digits, `_`, `-`, `.`; at most 128)"));
        }
        if let Some(e) = &self.email {
            let ok = e.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !e.contains(char::is_whitespace)
            });
            if !ok {
                return Err(format!("`{e}` is not an email address"));
            }
        }
        Ok(())
    }
}

/// The hash of one API token (sealed at rest with the service key, under `user-token/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user: String,
    /// Argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    pub hash: String,
    pub created_at: u64,
}

/// A freshly issued token: shown once to the person who asked for it, never stored.
pub struct IssuedToken {
    pub id: String,
    pub token: Zeroizing<String>,
    /// What is stored instead.
    pub hash: String,
}

/// Issue a random token (192 bits of secret) and its Argon2id hash.
pub fn issue_token() -> IssuedToken {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let token = Zeroizing::new(format!("tg_{id}_{}", hex::encode(secret)));
    let hash = hash_token(&token);
    IssuedToken { id, token, hash }
}

/// The id part of a token, if it has the token's shape.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("tg_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex16 = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex16(id, 16) && hex16(secret, 48)).then_some(id)
}

/// Argon2id with the crate's defaults (OWASP's m = 19 MiB, t = 2, p = 1) and a random salt.
pub fn hash_token(token: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    Argon2::default().hash_password(token.as_bytes(), &salt).expect("argon2 hashes any input").to_string()
}

/// Whether `token` is the one `hash` was made from (constant time inside argon2's verifier).
pub fn verify_token(token: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(token.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role, groups: &[&str]) -> User {
        User {
            name: name.into(),
            role,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            email: None,
            created_at: 0,
        }
    }

    #[test]
    fn tokens_verify_only_against_their_own_hash() {
        let a = issue_token();
        let b = issue_token();
        assert_eq!(token_id(&a.token), Some(a.id.as_str()));
        assert!(verify_token(&a.token, &a.hash));
        assert!(!verify_token(&b.token, &a.hash));
        assert!(!verify_token(&a.token[..a.token.len() - 1], &a.hash));
        assert!(a.hash.starts_with("$argon2id$"), "{}", a.hash);
        assert!(!a.hash.contains(&a.token[3..]), "the hash does not hold the token");
        for bad in ["", "tg_", "tg_zz_yy", "Bearer x", &a.token[..20]] {
            assert_eq!(token_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn users_see_their_own_and_their_groups_workflows() {
        let alice = user("alice", Role::Operator, &["finance"]);
        assert!(alice.sees("alice") && alice.sees("finance"));
        assert!(!alice.sees("bob") && !alice.sees("ops"));
        let root = user("root", Role::Admin, &[]);
        assert!(root.sees("bob") && !root.acts_for("bob"));
    }

    #[test]
    fn bad_names_and_emails_are_named() {
        let mut u = user("al ice", Role::Operator, &[]);
        assert!(u.check().unwrap_err().contains("al ice"));
        u.name = "alice".into();
        u.groups = vec!["fin/ance".into()];
        assert!(u.check().unwrap_err().contains("fin/ance"));
        u.groups.clear();
        u.email = Some("alice".into());
        assert!(u.check().unwrap_err().contains("not an email"));
        u.email = Some("alice@example.com".into());
        assert!(u.check().is_ok());
    }
}
