//! The IMAP source: runs the email-inbound consumer (`tollgate_connectors::imap`) for its
//! mailbox — one consumer per mailbox across the fleet, by a store lease — and turns each
//! message into a fire: attachments sealed into the store (by reference in the payload), the
//! key the hash of the Message-ID (mailbox + UIDVALIDITY + UID without one); an unparseable
//! message is recorded as a failed fire and quarantined. The message is flagged or moved only
//! after the fire path returns, i.e. once the fire is durably recorded.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_connectors::imap::{
    AfterFire, Delivered, ImapConsumer, ImapSettings, InboundMail, MailSink, MailboxLease,
};
use tollgate_engine::spec::triggers::{ImapAfter, ImapTrigger};

use crate::triggers::fire::FireResult;
use crate::triggers::source::{TriggerContext, TriggerError, TriggerSource};

pub struct ImapSource(pub ImapTrigger);

/// The mailbox lease lasts this long without renewal (renewed on every wake-up of the
/// consumer, at least every `liveness`).
const LEASE_TTL_FLOOR: Duration = Duration::from_secs(15);

impl ImapSource {
    pub fn settings(&self, password: String) -> ImapSettings {
        let t = &self.0;
        ImapSettings {
            host: t.host.clone(),
            port: t.port(),
            tls: t.tls,
            ca_file: t.ca_file.as_ref().map(std::path::PathBuf::from),
            user: t.user.clone(),
            password,
            mailbox: t.mailbox.clone(),
            after: match t.after {
                ImapAfter::Flag => AfterFire::Flag(t.flag.clone()),
                ImapAfter::Move => AfterFire::Move(t.move_to.clone().unwrap_or_default()),
            },
            quarantine: t.quarantine.clone(),
            idle: t.idle,
            poll_interval: t.poll,
            liveness_interval: t.liveness,
            command_timeout: Duration::from_secs(30).min(t.liveness.max(Duration::from_secs(5))),
            backoff: (Duration::from_millis(200), Duration::from_secs(30)),
        }
    }
}

/// The dedup key of a message.
pub fn mail_key(mail: &InboundMail) -> String {
    match mail.parsed.as_ref().ok().and_then(|p| p.message_id.as_deref()) {
        Some(id) => format!("mid:{}", hex::encode(&Sha256::digest(id.as_bytes())[..16])),
        None => format!("uid:{}:{}:{}", mail.mailbox_id, mail.uid_validity, mail.uid),
    }
}

struct FireSink {
    ctx: TriggerContext,
}

#[async_trait]
impl MailSink for FireSink {
    async fn deliver(&self, mail: &InboundMail) -> Result<Delivered, String> {
        let source = format!("uid {} (uidvalidity {})", mail.uid, mail.uid_validity);
        let parsed = match &mail.parsed {
            Ok(p) => p,
            Err(e) => {
                let key = mail_key(mail);
                self.ctx
                    .fire_failed(key, source, format!("unparseable message: {e}"))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Delivered::Failed);
            }
        };
        let store = self.ctx.store();
        let mut attachments = Vec::new();
        for a in &parsed.attachments {
            let reference = store
                .put_blob(self.ctx.workflow(), &a.bytes, self.ctx.attachment_ttl())
                .await
                .map_err(|e| e.to_string())?;
            attachments.push(json!({ "filename": a.filename, "content_type": a.content_type, "size": a.bytes.len(), "blob": reference }));
        }
        let mut payload = serde_json::to_value(parsed).unwrap_or(Value::Null);
        payload["attachments"] = Value::Array(attachments);
        payload["uid"] = json!(mail.uid);
        payload["uid_validity"] = json!(mail.uid_validity);
        match self.ctx.fire(mail_key(mail), payload, source).await.map_err(|e| e.to_string())? {
            FireResult::Started { .. } => Ok(Delivered::Fired),
            FireResult::Duplicate { .. } => Ok(Delivered::Duplicate),
            // Recorded as failed (its parameters did not bind…): done with it, like a duplicate.
            FireResult::Failed { .. } => Ok(Delivered::Duplicate),
        }
    }
}

#[async_trait]
impl TriggerSource for ImapSource {
    async fn run(&self, ctx: &TriggerContext) -> Result<(), TriggerError> {
        let password = std::env::var(&self.0.password_env)
            .map_err(|_| TriggerError(format!("the IMAP password variable {} is not set", self.0.password_env)))?;
        let settings = self.settings(password);
        let engine = &ctx.fire_path.tollgate().engine;
        let ttl = LEASE_TTL_FLOOR.max(self.0.liveness * 3);
        let lease = MailboxLease::new(engine.store.backend().clone(), &settings, engine.liveness.id(), ttl);
        let consumer = ImapConsumer::new(settings, Arc::new(FireSink { ctx: ctx.clone() }), lease);
        let mut health = consumer.health();
        let board = ctx.clone();
        let reporter = tokio::spawn(async move {
            while health.changed().await.is_ok() {
                let h = health.borrow_and_update().clone();
                board.set_connected(h.connected);
                if let Some(e) = &h.last_error {
                    board.error(e);
                }
            }
        });
        consumer.run(ctx.shutdown.clone()).await;
        reporter.abort();
        Ok(())
    }
}
