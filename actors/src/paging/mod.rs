//! Paging: telling people a request waits for them. Consoles learn of it live from
//! `GET /api/stream` (`http/stream.rs`); where `[paging] smtp_url` is set, the [`Pager`] here
//! also mails every user a new request is assigned to (a user, or each member of a group)
//! and everyone an escalation pages, with a link to the request's card in the console.
//!
//! The pager follows the process's update bus, so it pages for the runs this process drives
//! (`tollgate serve` drives them all). A page lost to a crash between the journal and the mail
//! is not sent again on recovery (a mail per recovery would be worse); the request stays in
//! every assignee's inbox.

mod smtp;

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_engine::ids::{RequestId, RunId};

use crate::config::PagingConfig;
use crate::service::Tollgate;
use crate::system::RunUpdate;

pub use smtp::{Mailer, Page};

/// Start the pager when SMTP is configured; returns whether it was started.
pub fn start(t: &Tollgate, config: &PagingConfig, shutdown: CancellationToken, tasks: &TaskTracker) -> anyhow::Result<bool> {
    if config.smtp_url.is_empty() {
        return Ok(false);
    }
    let mailer = Arc::new(Mailer::new(config)?);
    let t = t.clone();
    let console_url = config.console_url.trim_end_matches('/').to_string();
    let mut updates = t.engine.updates.subscribe();
    tasks.spawn(async move {
        loop {
            let update = tokio::select! {
                _ = shutdown.cancelled() => return,
                u = updates.recv() => u,
            };
            let (run, request, to, escalated) = match update {
                Ok(RunUpdate::HumanRequested { run, request }) => match request.assignee.clone() {
                    Some(a) => (run, request.id, a, false),
                    None => continue,
                },
                Ok(RunUpdate::HumanPaged { run, request, to }) => (run, request, to, true),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "pager fell behind the update bus; some pages were not mailed");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            // Mailing waits on a network: never hold up the next update for it.
            let (t, mailer, console_url) = (t.clone(), mailer.clone(), console_url.clone());
            tokio::spawn(async move {
                if let Err(e) = page(&t, &mailer, &console_url, &run, &request, &to, escalated).await {
                    tracing::warn!(%request, %to, error = %e, "paging by email failed");
                }
            });
        }
    });
    Ok(true)
}

async fn page(t: &Tollgate, mailer: &Mailer, console_url: &str, run: &RunId, request: &RequestId, to: &str, escalated: bool) -> anyhow::Result<()> {
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
