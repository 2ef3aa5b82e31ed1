//! Live progress of one run: a line per step transition, with a spinner on a terminal.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tollgate_engine::ids::{RequestId, RunId};

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
            let mut lines = Lines::new(run.clone());
            loop {
                match updates.recv().await {
                    Ok(u) => {
                        let finished = matches!(&u, RunUpdate::Finished { run: r, .. } if *r == run);
                        if let (Some(b), RunUpdate::Step { run: r, step, status, .. }) = (&b, &u)
                            && *r == run
                        {
                            b.set_message(format!("run {run}: {step} {status}"));
                        }
                        if let Some(s) = lines.line(u) {
                            line(s);
                        }
                        if finished {
                            break;
                        }
                    }
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

/// What one run's updates print, a line per update of that run. A request is published again
/// when its run is rehydrated (the pager claims each page once for the same reason): it is
/// shown once.
struct Lines {
    run: RunId,
    asked: HashSet<RequestId>,
}

impl Lines {
    fn new(run: RunId) -> Self {
        Self { run, asked: HashSet::new() }
    }

    fn line(&mut self, update: RunUpdate) -> Option<String> {
        if *update.run() != self.run {
            return None;
        }
        Some(match update {
            RunUpdate::Step { step, status, attempt, .. } => {
                let att = if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                format!("  {step:<24} {status}{att}")
            }
            RunUpdate::HumanRequested { request, .. } => {
                if !self.asked.insert(request.id.clone()) {
                    return None;
                }
                format!("  ? {:?}: {}", request.mode, request.question)
            }
            RunUpdate::HumanPaged { request, to, .. } => format!("  ! {request}: escalated, paging {to}"),
            RunUpdate::Decided { request, by, .. } => format!("  ✓ {request} decided by {by}"),
            RunUpdate::Notified { recipients, .. } => format!("  ✉ notified {}", recipients.join(", ")),
            RunUpdate::Finished { status, .. } => format!("run {} {}", self.run, status.label()),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tollgate_engine::run::{HumanMode, HumanRequestSpec};

    use super::*;

    fn asked(run: &str, id: &str) -> RunUpdate {
        RunUpdate::HumanRequested {
            run: RunId::new(run),
            request: HumanRequestSpec {
                id: RequestId::new(id),
                mode: HumanMode::Approval,
                step: None,
                question: format!("{id}?"),
                context: json!({}),
                assignee: None,
                forbid_self_approval: false,
            },
        }
    }

    #[test]
    fn a_request_published_again_on_rehydration_is_shown_once() {
        let mut lines = Lines::new(RunId::new("r1"));
        assert_eq!(lines.line(asked("r1", "r1.a.1")).as_deref(), Some("  ? Approval: r1.a.1?"));
        assert_eq!(lines.line(asked("r1", "r1.a.1")), None, "the same request again");
        assert_eq!(lines.line(asked("r1", "r1.b.1")).as_deref(), Some("  ? Approval: r1.b.1?"));
        assert_eq!(lines.line(asked("r2", "r2.a.1")), None, "another run's request");
        let step = RunUpdate::Step {
            run: RunId::new("r1"),
            step: tollgate_engine::ids::StepId::new("a"),
            status: "running",
            attempt: 2,
        };
        assert_eq!(lines.line(step).as_deref(), Some(&*format!("  {:<24} running (attempt 2)", "a")));
    }
}
