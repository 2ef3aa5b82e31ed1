//! `notify`: a console notification to a user or group — recorded for each user it reaches
//! (`tollgate_engine::store::notifications`); the run driver then tells live consoles — and,
//! with `connection`, the same message emailed to those users through the owner's named smtp
//! connection. Output: `{kind: "notification", notification, to, recipients, emailed}` (user
//! names; the addresses stay in the user records).

use async_trait::async_trait;
use serde_json::{json, Value};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::steps::NotifyWith;
use tollgate_engine::step::{StepError, StepInvocation};
use tollgate_engine::store::{Notification, Store};

use super::unavailable;

/// Marks a `notify` step's output, so the run driver knows to tell consoles.
pub const NOTIFY_OUTPUT_KIND: &str = "notification";

/// Sends one email through a named connection of an owner (the connections' smtp client).
#[async_trait]
pub trait EmailSender: Send + Sync {
    async fn send(&self, owner: &OwnerId, connection: &str, to: &[String], subject: &str, body: &str, idempotency_key: &str) -> Result<(), StepError>;
}

pub(super) async fn send(store: &Store, email: Option<&dyn EmailSender>, owner: &OwnerId, call: &StepInvocation<'_>, n: NotifyWith) -> Result<Value, StepError> {
    let users = store.users().await.map_err(unavailable)?;
    let reached: Vec<_> = users.iter().filter(|u| u.acts_for(&n.to)).collect();
    // Before the first user exists (development mode) the name is taken as written.
    let recipients: Vec<String> = if users.is_empty() { vec![n.to.clone()] } else { reached.iter().map(|u| u.name.clone()).collect() };
    if recipients.is_empty() {
        return Err(StepError::permanent("no_recipient", format!("`{}` is neither a user nor a group with members", n.to)));
    }
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    // One id per step and run: a retried attempt rewrites the same notification.
    let id = ulid::Ulid::from_parts(at, u128::from_be_bytes(digest16(&call.idempotency_key))).to_string();
    let note = Notification {
        id: id.clone(),
        to: n.to.clone(),
        subject: n.subject.clone(),
        message: n.message.clone(),
        workflow: call.workflow.to_string(),
        run: call.run.to_string(),
        step: call.step_id().to_string(),
        at,
    };
    store.put_notification(&note, &recipients).await.map_err(unavailable)?;
    let mut emailed = Vec::new();
    if let Some(connection) = &n.connection {
        let Some(email) = email else {
            return Err(StepError::permanent("bad_with", "with.connection: this process cannot send email through connections"));
        };
        let addresses: Vec<String> = reached.iter().filter_map(|u| u.email.clone()).collect();
        if !addresses.is_empty() {
            email.send(owner, connection, &addresses, &n.subject, &n.message, &call.idempotency_key).await?;
        }
        emailed = reached.iter().filter(|u| u.email.is_some()).map(|u| u.name.clone()).collect();
    }
    Ok(json!({ "kind": NOTIFY_OUTPUT_KIND, "notification": id, "to": n.to, "recipients": recipients, "emailed": emailed }))
}

fn digest16(s: &str) -> [u8; 16] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(s.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    out
}
