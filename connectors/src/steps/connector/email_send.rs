//! `email.send`: one message through an smtp connection, at most once per step — the step's
//! idempotency key (the same for every attempt) keys the send record, so a retry or a
//! re-dispatch after a lost outcome returns the recorded send instead of mailing again (see
//! `Connections::send_email_once`). Attachments come from upstream outputs (`content`,
//! `content_base64`) or from blobs the workflow's triggers stored (`blob`).
//!
//! Output: `{message_id, to, cc, bcc, subject, attachments: [{filename, content_type, size}],
//! recipients, response, at, already_sent}`.

use base64::Engine as _;
use serde_json::{Value, json};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::steps::{AttachmentSource, AttachmentSpec, ConnectorAction, EmailSendWith};
use tollgate_engine::step::{StepError, StepInvocation};

use crate::connections::{Attachment, Connections, Email};

/// The most all attachments of one message may weigh together.
pub const MAX_ATTACHMENT_BYTES: usize = 25 * 1024 * 1024;

pub(super) async fn run(
    c: &Connections,
    call: &StepInvocation<'_>,
    owner: &OwnerId,
    connection: &str,
) -> Result<Value, StepError> {
    let with: EmailSendWith = super::fields(call, ConnectorAction::EmailSend, EmailSendWith::problem)?;
    let mut attachments = Vec::with_capacity(with.attachments.len());
    let mut total = 0;
    for (i, a) in with.attachments.iter().enumerate() {
        let attachment = attachment(c, call, i, a).await?;
        total += attachment.bytes.len();
        if total > MAX_ATTACHMENT_BYTES {
            return Err(StepError::permanent(
                "connector_input",
                format!("the attachments weigh more than {} MiB", MAX_ATTACHMENT_BYTES >> 20),
            ));
        }
        attachments.push(attachment);
    }
    let email = Email {
        to: with.to.addresses(),
        cc: with.cc.addresses(),
        bcc: with.bcc.addresses(),
        subject: with.subject.clone(),
        body: with.body.clone(),
        attachments,
        message_id: None,
    };
    let once = c
        .send_email_once(call.workflow, &call.idempotency_key, call.attempt, owner, connection, &email)
        .await
        .map_err(|e| e.into_step_error())?;
    let listed: Vec<Value> = email
        .attachments
        .iter()
        .map(|a| json!({ "filename": a.filename, "content_type": a.content_type, "size": a.bytes.len() }))
        .collect();
    Ok(json!({
        "message_id": once.sent.message_id,
        "to": email.to,
        "cc": email.cc,
        "bcc": email.bcc,
        "subject": email.subject,
        "attachments": listed,
        "recipients": once.sent.recipients,
        "response": once.sent.response,
        "at": once.sent.at_ms,
        "already_sent": once.already_sent,
    }))
}

/// The bytes, name and type of attachment `i`.
async fn attachment(
    c: &Connections,
    call: &StepInvocation<'_>,
    i: usize,
    a: &AttachmentSpec,
) -> Result<Attachment, StepError> {
    let bad =
        |e: String| StepError::permanent("connector_input", format!("`email.send` with: `attachments[{i}]`: {e}"));
    let (bytes, default_type) = match a.source().map_err(bad)? {
        AttachmentSource::Content(Value::String(text)) => (text.clone().into_bytes(), "text/plain; charset=utf-8"),
        AttachmentSource::Content(value) => {
            (serde_json::to_vec_pretty(value).expect("JSON values serialise"), "application/json")
        }
        AttachmentSource::Base64(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| bad(format!("`content_base64` is not base64: {e}")))?;
            (bytes, "application/octet-stream")
        }
        AttachmentSource::Blob(reference) => {
            let blob = c
                .store()
                .blob(call.workflow, reference)
                .await
                .map_err(|e| StepError::retryable("connection_failed", format!("reading attachment blob: {e}")))?;
            let bytes = blob.ok_or_else(|| {
                StepError::permanent("attachment_not_found", format!("`attachments[{i}]`: blob `{reference}` is not a stored blob of workflow `{}` (expired, or another workflow's)", call.workflow))
            })?;
            (bytes, "application/octet-stream")
        }
    };
    Ok(Attachment {
        filename: a.filename.clone().filter(|f| !f.trim().is_empty()).unwrap_or_else(|| "attachment".into()),
        content_type: a.content_type.clone().unwrap_or_else(|| default_type.into()),
        bytes,
    })
}
