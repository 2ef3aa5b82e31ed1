//! `tollgate runs export RUN --receipt` (the run's signed receipt, to standard output),
//! `tollgate receipt key` (the public key receipts are signed with) and
//! `tollgate receipt verify FILE [--key KEY]` (chain and signatures; names the first entry
//! that was altered).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use tollgate_engine::ids::RunId;
use tollgate_engine::receipt::{ReceiptKey, verify};

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ReceiptCommand {
    /// Print the public key receipts are signed with (created on first use).
    Key,
    /// Check a receipt: its hash chain, every entry's signature and the header's, against the
    /// service key. Names the first entry that was altered, removed or moved.
    Verify {
        file: PathBuf,
        /// The service's public key (`tollgate receipt key`); default: this service's own.
        #[arg(long)]
        key: Option<ReceiptKey>,
    },
}

pub async fn run(config: &Config, cmd: ReceiptCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReceiptCommand::Key => {
            let engine = super::read_only_engine(config).await?;
            println!("{}", engine.store.receipt_signer().await?.public());
            Ok(ExitCode::SUCCESS)
        }
        ReceiptCommand::Verify { file, key } => verify_cmd(config, &file, key).await,
    }
}

/// `runs export RUN --receipt`.
pub async fn export(engine: &crate::system::Engine, run: &RunId) -> anyhow::Result<()> {
    let receipt = crate::receipt::build(engine, run).await.with_context(|| format!("run {run}"))?;
    println!("{}", serde_json::to_string_pretty(&receipt)?);
    Ok(())
}

async fn verify_cmd(config: &Config, file: &Path, key: Option<ReceiptKey>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let key = match key {
        Some(k) => k,
        None => {
            // Only a service that exists here: verifying must not create a data directory.
            let here = !config.master_key.is_empty() || config.data_dir.join("master.key").exists();
            if !here {
                bail!(
                    "no Tollgate service is configured here to take the key from: pass --key (what `tollgate receipt key` prints on the service)"
                );
            }
            super::read_only_engine(config).await?.store.receipt_signer().await?.public()
        }
    };
    match verify(&doc, Some(&key)) {
        Ok(v) => {
            println!(
                "{}: valid — run {}, {} entries, hash chain intact (head {}), signed by {}",
                file.display(),
                v.run,
                v.entries,
                v.head,
                v.key
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: NOT VALID — {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
