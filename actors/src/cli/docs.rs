//! `tollgate docs ingest PATH… [--collection C]`, `docs search`, `docs list`, `docs delete`: the
//! owners' document collections that `research` steps search (see `tollgate_connectors::docs`).
//! Works on the store alone: no queue, no workers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use tollgate_connectors::docs::{DocStore, Format, KNOWN_EXTENSIONS, SourceDoc};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::DEFAULT_COLLECTION;
use tollgate_engine::store::Store;

use crate::bootstrap;
use crate::config::Config;

/// The owner collections belong to until users exist: the `owner:` of the workflows that search them.
const DEFAULT_OWNER: &str = "default";

#[derive(Subcommand, Debug)]
pub enum DocsCommand {
    /// Read, chunk and index documents (text, Markdown, HTML, PDF; directories are walked).
    Ingest {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, default_value = DEFAULT_COLLECTION)]
        collection: String,
        /// The owner of the collection (a workflow's `owner:`).
        #[arg(long, default_value = DEFAULT_OWNER)]
        owner: String,
        #[arg(long)]
        json: bool,
    },
    /// Search a collection as a `research` step would.
    Search {
        query: String,
        #[arg(long, default_value = DEFAULT_COLLECTION)]
        collection: String,
        #[arg(long, default_value = DEFAULT_OWNER)]
        owner: String,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        #[arg(long)]
        json: bool,
    },
    /// List an owner's collections and their documents.
    List {
        #[arg(long, default_value = DEFAULT_OWNER)]
        owner: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a collection and its whole index.
    Delete {
        collection: String,
        #[arg(long, default_value = DEFAULT_OWNER)]
        owner: String,
    },
}

pub async fn run(config: &Config, cmd: DocsCommand) -> anyhow::Result<ExitCode> {
    let backend = bootstrap::open_backend(config).await?;
    let docs = DocStore::new(Arc::new(Store::new(backend, bootstrap::master_key(config)?)));
    match cmd {
        DocsCommand::Ingest { paths, collection, owner, json } => {
            let files = read_documents(&paths)?;
            let started = Instant::now();
            let report = docs.ingest(&OwnerId::from(owner.as_str()), &collection, files).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for d in &report.documents {
                    let what = if d.unchanged { "unchanged".to_string() } else { format!("{} chunks", d.chunks) };
                    println!("{:<9} {} ({what})", d.format.name(), d.source);
                }
                println!(
                    "collection `{}` of `{owner}`: {} documents, {} chunks ({} ingested in {:.2?})",
                    report.collection,
                    report.total_documents,
                    report.total_chunks,
                    report.documents.len(),
                    started.elapsed()
                );
            }
        }
        DocsCommand::Search { query, collection, owner, top_k, json } => {
            let hits = docs.search(&OwnerId::from(owner.as_str()), &collection, &query, top_k).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else if hits.is_empty() {
                println!("no hits");
            } else {
                for h in &hits {
                    println!(
                        "{} {:.3} {} #{}: {}",
                        h.id,
                        h.hit.score,
                        h.hit.source,
                        h.hit.chunk,
                        h.hit.snippet.replace('\n', " ")
                    );
                }
            }
        }
        DocsCommand::List { owner, json } => {
            let list = docs.list(&OwnerId::from(owner.as_str())).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no collections for `{owner}`");
            } else {
                for c in &list {
                    println!("{} ({} documents)", c.name, c.documents.len());
                    for d in &c.documents {
                        println!("  {:<9} {:>6} chunks {:>10} bytes  {}", d.format.name(), d.chunks, d.bytes, d.source);
                    }
                }
            }
        }
        DocsCommand::Delete { collection, owner } => {
            if docs.delete(&OwnerId::from(owner.as_str()), &collection).await? {
                println!("collection `{collection}` of `{owner}` deleted");
            } else {
                eprintln!("tollgate: no collection `{collection}` for `{owner}`");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The documents under `paths`: files as given (their format from the extension), directories
/// walked for files of known formats. Every file is read before anything is indexed.
fn read_documents(paths: &[PathBuf]) -> anyhow::Result<Vec<SourceDoc>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            let before = out.len();
            walk(p, &mut out)?;
            if out.len() == before {
                bail!("{}: no documents of a known format ({KNOWN_EXTENSIONS})", p.display());
            }
        } else {
            let Some(format) = Format::from_path(p) else {
                bail!("{}: unknown document format (known extensions: {KNOWN_EXTENSIONS})", p.display());
            };
            out.push(read_one(p, format)?);
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<SourceDoc>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if let Some(format) = Format::from_path(&p) {
            out.push(read_one(&p, format)?);
        }
    }
    Ok(())
}

fn read_one(path: &Path, format: Format) -> anyhow::Result<SourceDoc> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(SourceDoc { source: path.display().to_string(), format, bytes })
}
