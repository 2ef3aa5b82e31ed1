//! `email.fetch`: the newest `limit` messages of an IMAP mailbox matching `search`, parsed
//! (read-only: nothing is flagged or moved). Attachments are sealed in the store as blobs of
//! the workflow, as the IMAP trigger does — kept for the connections' `attachment_ttl`, like
//! the trigger's — so an `email.send` can pass them on.
//!
//! Output: `{mailbox, search, count, messages: [{uid, message_id, from, to, subject, date,
//! text, html, attachments: [{filename, content_type, size, blob}]}]}`, oldest first; a message
//! that cannot be parsed is `{uid, size, error}`.

use serde_json::{Value, json};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::steps::{ConnectorAction, EmailFetchWith};
use tollgate_engine::step::{StepError, StepInvocation};

use crate::connections::Connections;

pub(super) async fn run(
    c: &Connections,
    call: &StepInvocation<'_>,
    owner: &OwnerId,
    connection: &str,
) -> Result<Value, StepError> {
    let with: EmailFetchWith = super::fields(call, ConnectorAction::EmailFetch, EmailFetchWith::problem)?;
    let mails = c
        .fetch_emails(owner, connection, &with.mailbox, &with.search, with.limit as usize)
        .await
        .map_err(|e| e.into_step_error())?;
    let mut messages = Vec::with_capacity(mails.len());
    for mail in mails {
        let parsed = match mail.parsed {
            Ok(p) => p,
            Err(e) => {
                messages.push(json!({ "uid": mail.uid, "size": mail.size, "error": e.to_string() }));
                continue;
            }
        };
        let mut attachments = Vec::with_capacity(parsed.attachments.len());
        for a in &parsed.attachments {
            let blob = c
                .store()
                .put_blob(call.workflow, &a.bytes, c.attachment_ttl())
                .await
                .map_err(|e| StepError::retryable("connection_failed", format!("storing an attachment: {e}")))?;
            attachments.push(
                json!({ "filename": a.filename, "content_type": a.content_type, "size": a.bytes.len(), "blob": blob }),
            );
        }
        let mut m = serde_json::to_value(&parsed).expect("parsed mail serialises");
        m["uid"] = json!(mail.uid);
        m["attachments"] = Value::Array(attachments);
        messages.push(m);
    }
    Ok(json!({ "mailbox": with.mailbox, "search": with.search, "count": messages.len(), "messages": messages }))
}
