//! `tollgate triggers run|list|history|secret`.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use tollgate_engine::ids::{TriggerId, WorkflowId};
use tollgate_engine::trigger::{FireOutcome, FireRecord, TriggerStateRecord};

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum TriggersCommand {
    /// Run the triggers of these workflow specs (and of `[triggers] workflows`) with the
    /// engine and the HTTP endpoints (`/hooks/…`, the admin API) until interrupted.
    Run {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Every trigger that has run: type, connected, last success, last error, counters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A workflow's fires, newest first: started (with the run), failed (with the error),
    /// skipped as duplicate.
    History {
        workflow: WorkflowId,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Print a trigger's secret (a webhook's signing secret), or with `--set` replace it with
    /// the one read from stdin (e.g. the `whsec_…` Stripe gives you).
    Secret {
        workflow: WorkflowId,
        trigger: TriggerId,
        #[arg(long)]
        set: bool,
    },
}

pub async fn run(config: &Config, command: TriggersCommand) -> anyhow::Result<ExitCode> {
    match command {
        TriggersCommand::Run { files } => {
            let mut all = config.triggers.workflows.clone();
            all.extend(files);
            crate::http::serve_workflows(config, &all).await?;
            Ok(ExitCode::SUCCESS)
        }
        TriggersCommand::List { json } => {
            let engine = super::read_only_engine(config).await?;
            let mut states = Vec::new();
            for (wf, t) in engine.store.triggers().await? {
                match engine.store.trigger_state(&wf, &t).await {
                    Ok(Some(s)) => states.push(s),
                    Ok(None) => {}
                    Err(e) => eprintln!("tollgate: trigger {wf}/{t}: {e}"),
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&states)?);
            } else {
                print_list(&states);
            }
            Ok(ExitCode::SUCCESS)
        }
        TriggersCommand::History { workflow, limit, json } => {
            let engine = super::read_only_engine(config).await?;
            let fires =
                engine.store.fire_history(&workflow, limit).await.with_context(|| format!("workflow {workflow}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&fires)?);
            } else {
                print_history(&workflow, &fires);
            }
            Ok(ExitCode::SUCCESS)
        }
        TriggersCommand::Secret { workflow, trigger, set } => {
            let engine = super::read_only_engine(config).await?;
            let store = &engine.store;
            store.workflow_key(&workflow).await.with_context(|| {
                format!("workflow `{workflow}` is not known to this store yet (start its triggers once with `tollgate serve` or `tollgate triggers run`)")
            })?;
            if set {
                let mut secret = String::new();
                std::io::stdin().read_to_string(&mut secret).context("reading the secret from stdin")?;
                let secret = secret.trim();
                if secret.len() < 16 {
                    bail!("a secret of fewer than 16 characters is refused");
                }
                store.put_trigger_secret(&workflow, &trigger, secret).await?;
                eprintln!("secret of {workflow}/{trigger} replaced; running triggers pick it up when they restart");
            } else {
                match store.trigger_secret(&workflow, &trigger).await? {
                    Some(s) => println!("{s}"),
                    None => bail!(
                        "{workflow}/{trigger} has no secret yet: it is generated when the trigger first starts (or set one with --set)"
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn when(ms: Option<u64>) -> String {
    ms.and_then(|ms| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64))
        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn print_list(states: &[TriggerStateRecord]) {
    if states.is_empty() {
        println!("no triggers have run yet");
        return;
    }
    println!(
        "{:<28} {:<16} {:<8} {:<10} {:<20} {:>8} {:>7} {:>6} {:>8}",
        "WORKFLOW", "TRIGGER", "TYPE", "CONNECTED", "LAST SUCCESS", "STARTED", "FAILED", "DUPS", "REJECTED"
    );
    for s in states {
        let h = &s.health;
        println!(
            "{:<28} {:<16} {:<8} {:<10} {:<20} {:>8} {:>7} {:>6} {:>8}",
            s.workflow.as_str(),
            s.trigger.as_str(),
            s.kind,
            if h.connected { "yes" } else { "no" },
            when(h.last_success),
            h.started,
            h.failed,
            h.duplicates,
            h.rejected
        );
        if let Some((at, e)) = &h.last_error {
            println!("    last error {}: {e}", when(Some(*at)));
        }
    }
}

fn print_history(wf: &WorkflowId, fires: &[FireRecord]) {
    if fires.is_empty() {
        println!("no fires recorded for {wf} (entries expire after the history's retention)");
        return;
    }
    println!("{:<26} {:<20} {:<16} {:<18} DETAIL", "FIRE", "AT", "TRIGGER", "OUTCOME");
    for f in fires {
        let detail = match &f.outcome {
            FireOutcome::Started { run } => format!("run {run}"),
            FireOutcome::Failed { error } => error.clone(),
            FireOutcome::SkippedDuplicate { of } => format!("duplicate of {of}"),
        };
        println!(
            "{:<26} {:<20} {:<16} {:<18} {detail}  ({})",
            f.fire.as_str(),
            when(Some(f.at)),
            f.trigger.as_str(),
            f.outcome.label(),
            f.source
        );
    }
}
