//! `tollgate secrets set NAME [--owner OWNER]`: store a secret (a provider's API key) for an
//! owner, the value read from stdin (never from an argument, which would land in shell history
//! and `ps`). Sealed with the owner's key; the value is never printed.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::store::{Store, valid_secret_name};

use crate::bootstrap;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Set secret NAME to the value on stdin (one trailing newline is dropped).
    Set {
        name: String,
        /// Whose secret it is: the `owner` of the workflows that use it.
        #[arg(long, default_value = "default")]
        owner: String,
    },
}

pub async fn secrets_cmd(config: &Config, command: SecretsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretsCommand::Set { name, owner } => {
            if !valid_secret_name(&name) {
                bail!("`{name}` is not a valid secret name (letters, digits, `_`, `-`, `.`; at most 128)");
            }
            if !tollgate_engine::ids::is_valid_id(&owner) {
                bail!("`{owner}` is not a valid owner id");
            }
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value).context("reading the secret from stdin")?;
            let value = zeroize::Zeroizing::new(value);
            let trimmed = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            if trimmed.is_empty() {
                bail!("no value on stdin (e.g. `printf %s \"$KEY\" | tollgate secrets set {name}`)");
            }
            let backend = bootstrap::open_backend(config).await?;
            let store = Store::new(backend, bootstrap::master_key(config)?);
            store.put_secret(&OwnerId::from(owner.as_str()), &name, trimmed).await?;
            eprintln!("tollgate: secret `{name}` of owner `{owner}` set ({} bytes, sealed)", trimmed.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
