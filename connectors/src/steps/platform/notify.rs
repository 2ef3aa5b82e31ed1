//! `notify`: a console notification to a user or group — recorded for each user it reaches
//! (`tollgate_engine::store::notifications`); the run driver then tells live consoles — and,
//! with `connection`, the same message emailed (once per step, whatever the retries) to those
//! of the users with an email address, through the owner's named `smtp` connection. Output: `{kind: "notification", notification, to, recipients, emailed}` (user
//! names; the addresses stay in the user records).

use serde_json::{Value, json};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::steps::NotifyWith;
use tollgate_engine::step::{StepError, StepInvocation};
use tollgate_engine::store::{Notification, Store};

use super::unavailable;
use crate::connections::{Connections, Email};

/// Marks a `notify` step's output, so the run driver knows to tell consoles.
pub const NOTIFY_OUTPUT_KIND: &str = "notification";

pub(super) async fn send(
    store: &Store,
    connections: Option<&Connections>,
    owner: &OwnerId,
    call: &StepInvocation<'_>,
    n: NotifyWith,
) -> Result<Value, StepError> {
    let users = store.users().await.map_err(unavailable)?;
    let reached: Vec<_> = users.iter().filter(|u| u.acts_for(&n.to)).collect();
    // Before the first user exists (development mode) the name is taken as written.
    let recipients: Vec<String> =
        if users.is_empty() { vec![n.to.clone()] } else { reached.iter().map(|u| u.name.clone()).collect() };
    if recipients.is_empty() {
        return Err(StepError::permanent(
            "no_recipient",
            format!("`{}` is neither a user nor a group with members", n.to),
        ));
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
        let Some(connections) = connections else {
            return Err(StepError::permanent(
                "bad_with",
                "with.connection: this process cannot send email through connections",
            ));
        };
        let addresses: Vec<String> = reached.iter().filter_map(|u| u.email.clone()).collect();
        if !addresses.is_empty() {
            // At most once per step (the step's idempotency key), like `connector`'s email.send.
            let email =
                Email { to: addresses, subject: n.subject.clone(), body: n.message.clone(), ..Email::default() };
            connections
                .send_email_once(call.workflow, &call.idempotency_key, call.attempt, owner, connection, &email)
                .await
                .map_err(|e| e.into_step_error())?;
        }
        emailed = reached.iter().filter(|u| u.email.is_some()).map(|u| u.name.clone()).collect();
    }
    Ok(
        json!({ "kind": NOTIFY_OUTPUT_KIND, "notification": id, "to": n.to, "recipients": recipients, "emailed": emailed }),
    )
}

fn digest16(s: &str) -> [u8; 16] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(s.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    out
}
