//! Page webhooks: every new or escalated request POSTed as JSON to `[paging] webhook_url` —
//! request, run, workflow, step, mode, assignees and the card's link, never the request's
//! question or context (those stay behind the console's authentication) — signed like Stripe's
//! timestamped scheme: `Tollgate-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! (`tollgate_engine::trigger::signature`, which also verifies it), with `Tollgate-Delivery`
//! naming the page so a receiver can drop a retried duplicate. A failed delivery (network
//! error, 408, 429, 5xx) is retried with exponential backoff, re-signed each time; another 4xx
//! is final. Every request goes through the egress guard of `api_call`: a private or loopback
//! address only where `[egress] allow` opens it.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use tollgate_connectors::steps::egress::{EgressGuard, Refusal};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::trigger::signature::stripe_header;
use zeroize::Zeroizing;

use crate::config::PagingConfig;

/// The header carrying `t=…,v1=…`.
pub const SIGNATURE_HEADER: &str = "Tollgate-Signature";
/// The header naming the page (the same on every retry of it).
pub const DELIVERY_HEADER: &str = "Tollgate-Delivery";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LAST_BACKOFF: Duration = Duration::from_secs(60);

/// What a page webhook says: ids and where to answer, nothing of the request's content.
#[derive(Clone, Debug, Serialize)]
pub struct WebhookPage {
    /// `request.created` or `request.escalated`.
    pub event: &'static str,
    pub request: String,
    pub run: String,
    pub workflow: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub mode: tollgate_engine::run::HumanMode,
    /// Who may answer: the request's assignee and everyone escalation has paged so far.
    pub assignees: Vec<String>,
    /// Who this page is for (an escalation's new assignee), if it is an escalation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paged: Option<String>,
    /// The request's card in the console.
    pub link: String,
    /// Unix ms the request was created.
    pub created_at: u64,
}

impl WebhookPage {
    /// The page's delivery id: one per request and per escalation target.
    fn delivery(&self) -> String {
        match &self.paged {
            None => format!("{}.created", self.request),
            Some(to) => format!("{}.escalated.{to}", self.request),
        }
    }
}

pub struct Webhook {
    url: Url,
    secret: Zeroizing<Vec<u8>>,
    attempts: u32,
    guard: EgressGuard,
}

impl Webhook {
    /// From `[paging]`: the URL must be http(s) and, if it is an address, one the egress
    /// policy admits; the secret's variable must be set.
    pub fn new(config: &PagingConfig, egress: EgressAllow) -> anyhow::Result<Self> {
        let url =
            Url::parse(&config.webhook_url).map_err(|e| anyhow!("paging.webhook_url `{}`: {e}", config.webhook_url))?;
        let secret = std::env::var(&config.webhook_secret_env).unwrap_or_default();
        if secret.is_empty() {
            bail!(
                "paging.webhook_url is set but its signing secret is not: set the environment variable {} (paging.webhook_secret_env)",
                config.webhook_secret_env
            );
        }
        if config.webhook_attempts == 0 {
            bail!("paging.webhook_attempts must be at least 1");
        }
        let guard = EgressGuard::new(egress, concat!("tollgate/", env!("CARGO_PKG_VERSION")), CONNECT_TIMEOUT);
        // Refused now rather than at the first page: a scheme, or an address the policy closes.
        guard.client_for(&url, &EgressAllow::default()).map_err(|e| anyhow!("paging.webhook_url `{url}`: {e}"))?;
        Ok(Self { url, secret: Zeroizing::new(secret.into_bytes()), attempts: config.webhook_attempts, guard })
    }

    /// Deliver `page`, retrying with backoff; the error says why the last attempt failed.
    pub async fn send(&self, page: &WebhookPage) -> anyhow::Result<()> {
        let body = serde_json::to_vec(page).context("encoding the page")?;
        let delivery = page.delivery();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.post(&body, &delivery).await {
                Ok(()) => return Ok(()),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e)) if attempt >= self.attempts => {
                    return Err(e.context(format!("gave up after {attempt} attempts")));
                }
                Err(Failure::Retry(e)) => {
                    tracing::info!(%delivery, attempt, error = %e, "page webhook failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LAST_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }

    async fn post(&self, body: &[u8], delivery: &str) -> Result<(), Failure> {
        let client = self
            .guard
            .client_for(&self.url, &EgressAllow::default())
            .map_err(|e: Refusal| Failure::Final(anyhow!("{}: {e}", self.url)))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let response = client
            .post(self.url.clone())
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, stripe_header(&self.secret, now, body))
            .header(DELIVERY_HEADER, delivery)
            .body(body.to_vec())
            .send()
            .await;
        match response {
            Err(e) => match tollgate_connectors::steps::egress::denial_in(&e) {
                Some(denied) => Err(Failure::Final(anyhow!("{}: {denied}", self.url))),
                None => Err(Failure::Retry(anyhow!("{}: {e}", self.url))),
            },
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let e = anyhow!("{} answered {status}", self.url);
                if status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    Err(Failure::Retry(e))
                } else {
                    Err(Failure::Final(e))
                }
            }
        }
    }
}

enum Failure {
    Retry(anyhow::Error),
    Final(anyhow::Error),
}
