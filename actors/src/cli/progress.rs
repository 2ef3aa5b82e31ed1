//! Live progress of one run: a line per step transition, with a spinner on a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tollgate_engine::ids::RunId;

use crate::system::RunUpdate;

pub struct Progress {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn start(mut updates: broadcast::Receiver<RunUpdate>, run: RunId) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("valid template"));
            b.enable_steady_tick(Duration::from_millis(100));
            b.set_message(format!("run {run}"));
            b
        });
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let line = |s: String| match &b {
                Some(b) => b.println(s),
                None => eprintln!("{s}"),
            };
            loop {
                match updates.recv().await {
                    Ok(u) if *u.run() == run => match u {
                        RunUpdate::Step { step, status, attempt, .. } => {
                            let att = if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                            line(format!("  {step:<24} {status}{att}"));
                            if let Some(b) = &b {
                                b.set_message(format!("run {run}: {step} {status}"));
                            }
                        }
                        RunUpdate::HumanRequested { request, .. } => {
                            line(format!("  ? {:?}: {}", request.mode, request.question))
                        }
                        RunUpdate::HumanPaged { request, to, .. } => {
                            line(format!("  ! {request}: escalated, paging {to}"))
                        }
                        RunUpdate::Decided { request, by, .. } => line(format!("  ✓ {request} decided by {by}")),
                        RunUpdate::Notified { recipients, .. } => {
                            line(format!("  ✉ notified {}", recipients.join(", ")))
                        }
                        RunUpdate::Finished { status, .. } => {
                            line(format!("run {run} {}", status.label()));
                            break;
                        }
                    },
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => line(format!("  … {n} updates skipped")),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Self { task, bar }
    }

    pub async fn finish(self) {
        // Let the display catch up with what was already published, then stop it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.task.abort();
        let _ = self.task.await;
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
