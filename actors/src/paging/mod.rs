//! Paging: telling people a request waits for them. Consoles learn of it live from
//! `GET /api/stream` (`http/stream.rs`); where `[paging] smtp_url` is set, the pager here
//! also mails every user a new request is assigned to (a user, or each member of a group)
//! and everyone an escalation pages, with a link to the request's card in the console
//! (`smtp.rs`); where `[paging] webhook_url` is set, it POSTs every new or escalated request,
//! signed, to that URL (`webhook.rs`).
//!
//! The pager follows the process's update bus, so it pages for the runs this process drives
//! (`tollgate serve` drives them all). Each page (a request's creation, each escalation
//! target) is claimed once in the store before it is sent, so a request published again when
//! its run is recovered or rehydrated is not paged twice; a page lost to a crash between the
//! claim and the mail is not sent again (a mail per recovery would be worse): the request
//! stays in every assignee's inbox.

mod smtp;
mod webhook;

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::ids::{RequestId, RunId};

use crate::config::PagingConfig;
use crate::service::Tollgate;
use crate::system::RunUpdate;

pub use smtp::{Mailer, Page};
pub use webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, Webhook, WebhookPage};

/// Start the pager when SMTP or a webhook is configured (`egress`: the service's allowlist,
/// which the webhook obeys); returns whether it was started.
pub fn start(
    t: &Tollgate,
    config: &PagingConfig,
    egress: EgressAllow,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<bool> {
    let mailer = if config.smtp_url.is_empty() { None } else { Some(Arc::new(Mailer::new(config)?)) };
    let webhook = if config.webhook_url.is_empty() { None } else { Some(Arc::new(Webhook::new(config, egress)?)) };
    if mailer.is_none() && webhook.is_none() {
        return Ok(false);
    }
    let t = t.clone();
    let console_url = config.console_url.trim_end_matches('/').to_string();
    let mut updates = t.engine.updates.subscribe();
    tasks.spawn(async move {
        loop {
            let update = tokio::select! {
                _ = shutdown.cancelled() => return,
                u = updates.recv() => u,
            };
            // (run, request, who is paged: the assignee of a new request or an escalation's target)
            let (run, request, to, escalated) = match update {
                Ok(RunUpdate::HumanRequested { run, request }) => (run, request.id, request.assignee, false),
                Ok(RunUpdate::HumanPaged { run, request, to }) => (run, request, Some(to), true),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "pager fell behind the update bus; some pages were not sent");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            // Paging waits on a network: never hold up the next update for it.
            let (t, mailer, webhook, console_url) = (t.clone(), mailer.clone(), webhook.clone(), console_url.clone());
            tokio::spawn(async move {
                // A request is published again when its run is recovered or rehydrated: page once.
                match first_sight(&t, &request, to.as_deref().filter(|_| escalated)).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        return tracing::warn!(%request, error = %e, "paging: could not record the page; not sent");
                    }
                }
                let mail = async {
                    if let (Some(mailer), Some(to)) = (&mailer, &to) {
                        if let Err(e) = page(&t, mailer, &console_url, &run, &request, to, escalated).await {
                            tracing::warn!(%request, %to, error = %e, "paging by email failed");
                        }
                    }
                };
                let hook = async {
                    if let Some(webhook) = &webhook {
                        if let Err(e) =
                            page_webhook(&t, webhook, &console_url, &request, to.clone().filter(|_| escalated)).await
                        {
                            tracing::warn!(%request, error = format!("{e:#}"), "paging by webhook failed");
                        }
                    }
                };
                tokio::join!(mail, hook);
            });
        }
    });
    Ok(true)
}

/// How long a page is remembered as sent (a request older than this is long decided).
const PAGED_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Claim the page of `request`'s creation, or of its escalation to `paged`: true the first
/// time, across processes and recoveries (the store's first-writer-wins insert).
async fn first_sight(t: &Tollgate, request: &RequestId, paged: Option<&str>) -> anyhow::Result<bool> {
    let key = match paged {
        None => format!("paging/{request}/created"),
        Some(to) => format!("paging/{request}/paged/{}", hex::encode(to)),
    };
    Ok(t.engine.store.backend().put_if_absent(&key, b"1", Some(PAGED_TTL)).await?)
}

/// POST the page of `request` (an escalation to `paged`, or its creation).
async fn page_webhook(
    t: &Tollgate,
    webhook: &Webhook,
    console_url: &str,
    request: &RequestId,
    paged: Option<String>,
) -> anyhow::Result<()> {
    let record = t.engine.store.human_request(request).await?;
    let assignees = record.request.assignee.iter().chain(&record.escalated_to).cloned().collect();
    let page = WebhookPage {
        event: if paged.is_some() { "request.escalated" } else { "request.created" },
        request: request.to_string(),
        run: record.run.to_string(),
        workflow: record.workflow.to_string(),
        step: record.request.step.as_ref().map(ToString::to_string),
        mode: record.request.mode,
        assignees,
        paged,
        link: format!("{console_url}/requests/{request}"),
        created_at: record.created_at,
    };
    webhook.send(&page).await
}

async fn page(
    t: &Tollgate,
    mailer: &Mailer,
    console_url: &str,
    run: &RunId,
    request: &RequestId,
    to: &str,
    escalated: bool,
) -> anyhow::Result<()> {
    let record = t.engine.store.human_request(request).await?;
    for user in t.users.resolve(to).await? {
        let Some(email) = user.email.as_deref() else { continue };
        let page = Page {
            to: email,
            request,
            run,
            question: &record.request.question,
            mode: record.request.mode,
            link: format!("{console_url}/requests/{request}"),
            escalated,
        };
        mailer.send(&page).await?;
    }
    Ok(())
}
