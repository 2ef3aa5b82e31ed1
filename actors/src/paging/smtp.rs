//! Page mails over SMTP (lettre, tokio, rustls): one plain-text message per recipient with the
//! question and a link to the request's card. The question is what the console shows (the
//! run's gated data only); nothing else of the run is mailed.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tollgate_engine::ids::{RequestId, RunId};
use tollgate_engine::run::HumanMode;

use crate::config::PagingConfig;

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// One page to one person.
pub struct Page<'a> {
    pub to: &'a str,
    pub request: &'a RequestId,
    pub run: &'a RunId,
    pub question: &'a str,
    pub mode: HumanMode,
    pub link: String,
    /// Paged by escalation (nobody answered in time), rather than as its first assignee.
    pub escalated: bool,
}

impl Mailer {
    pub fn new(config: &PagingConfig) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
            .map_err(|e| anyhow::anyhow!("paging.smtp_url: {e}"))?
            .build();
        let from = config.from.parse().map_err(|e| anyhow::anyhow!("paging.from `{}`: {e}", config.from))?;
        Ok(Self { transport, from })
    }

    pub async fn send(&self, page: &Page<'_>) -> anyhow::Result<()> {
        let mode = serde_json::to_value(page.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
            .replace('_', " ");
        let subject = if page.escalated {
            format!("[tollgate] Escalated: {}", page.question)
        } else {
            format!("[tollgate] {}", page.question)
        };
        let why = if page.escalated {
            "Nobody has answered this request in time, so it was escalated to you."
        } else {
            "A run waits for your decision."
        };
        let body = format!(
            "{why}\n\n{question}\n\nRequest: {request} ({mode})\nRun: {run}\n\nOpen the card: {link}\n",
            question = page.question,
            request = page.request,
            run = page.run,
            link = page.link,
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(page.to.parse()?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)?;
        self.transport.send(message).await?;
        Ok(())
    }
}
