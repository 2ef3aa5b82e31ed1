//! `tollgate memory list|show`: an owner's memory notes (what `memory.write` steps wrote),
//! read from the store and opened with the owner's key. `list` is newest first, filtered by
//! age and tag; `show KEY` prints one note.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::steps::MAX_MEMORY_LIST;
use tollgate_engine::store::{NoteFilter, Store};

use crate::bootstrap;
use crate::config::Config;
use crate::system::now_ms;

#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// The owner's notes, newest first.
    List {
        #[arg(long, default_value = "default")]
        owner: String,
        /// How far back (`7d`, `24h`).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Only notes with this tag.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One note, by its key.
    Show {
        key: String,
        #[arg(long, default_value = "default")]
        owner: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: MemoryCommand) -> anyhow::Result<ExitCode> {
    let owner_of = |o: &str| -> anyhow::Result<OwnerId> {
        if !tollgate_engine::ids::is_valid_id(o) {
            bail!("`{o}` is not a valid owner id");
        }
        Ok(OwnerId::from(o))
    };
    let store = Store::new(bootstrap::open_backend(config).await?, bootstrap::master_key(config)?);
    match command {
        MemoryCommand::List { owner, since, tag, limit, json } => {
            let owner = owner_of(&owner)?;
            let filter = NoteFilter {
                since: now_ms().saturating_sub(since.as_millis() as u64),
                tag: tag.as_deref(),
                limit: limit.clamp(1, MAX_MEMORY_LIST) as usize,
            };
            let notes = store.notes(&owner, &filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&notes)?);
            } else if notes.is_empty() {
                println!("no notes of `{owner}` in that window");
            } else {
                for n in notes {
                    let first = n.text.lines().next().unwrap_or_default();
                    println!("{}  {:<28} [{}]  {first}", when(n.at), n.key, n.tags.join(", "));
                }
            }
        }
        MemoryCommand::Show { key, owner, json } => {
            let owner = owner_of(&owner)?;
            let Some(n) = store.note(&owner, &key).await? else { bail!("`{owner}` has no note under key `{key}`") };
            if json {
                println!("{}", serde_json::to_string_pretty(&n)?);
            } else {
                println!(
                    "key:  {}\nat:   {}\ntags: {}\nfrom: {} (run {})\n\n{}",
                    n.key,
                    when(n.at),
                    n.tags.join(", "),
                    n.workflow.as_deref().unwrap_or("-"),
                    n.run.as_deref().unwrap_or("-"),
                    n.text
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn when(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}
