//! `tollgate connections add|list|test|remove`: an owner's named connections (smtp, imap,
//! http). `add` takes the settings as `--set key=value` and the credential (password, bearer
//! token, OAuth2 client secret) from stdin, never from an argument (shell history, `ps`); it is
//! kept in the owner's secret store. `list` shows settings and whether a credential is
//! stored, never the credential; `test` tries the connection for real.

use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;
use tollgate_engine::connections::{Connection, ConnectionKind, valid_connection_name};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::store::Store;
use zeroize::Zeroizing;

use crate::bootstrap;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ConnectionsCommand {
    /// Add (or replace) connection NAME; its credential, if it has one, is read from stdin.
    Add {
        name: String,
        #[arg(long, value_parser = ["smtp", "imap", "http"])]
        kind: String,
        /// A setting, `key=value` (repeatable). smtp: host, port, security (starttls|tls|none),
        /// ca_file, user, from; imap: host, port, tls, ca_file, user; http: base_url, auth
        /// (none|bearer|basic|oauth2), user (basic), token_url, client_id, scope, client_auth
        /// (client_secret_basic|client_secret_post) (oauth2).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Whose connection it is: the `owner` of the workflows that use it.
        #[arg(long, default_value = "default")]
        owner: String,
    },
    /// List an owner's connections (settings only; credentials are never shown).
    List {
        #[arg(long, default_value = "default")]
        owner: String,
        #[arg(long)]
        json: bool,
    },
    /// Try a connection: smtp connect + EHLO + AUTH; imap login + select INBOX; http a token
    /// (OAuth2) and a request to the base URL.
    Test {
        name: String,
        #[arg(long, default_value = "default")]
        owner: String,
    },
    /// Remove a connection and its credential.
    Remove {
        name: String,
        #[arg(long, default_value = "default")]
        owner: String,
    },
}

fn owner_id(owner: &str) -> anyhow::Result<OwnerId> {
    if !tollgate_engine::ids::is_valid_id(owner) {
        bail!("`{owner}` is not a valid owner id");
    }
    Ok(OwnerId::from(owner))
}

/// `key=value` pairs from `--set`.
fn settings(sets: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    sets.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.to_string())),
            None => bail!("--set {s}: expected KEY=VALUE"),
        })
        .collect()
}

/// The credential on stdin (one trailing newline dropped).
fn read_credential(name: &str, what: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut value = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut value).context("reading the credential from stdin")?;
    let trimmed = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
    if trimmed.is_empty() {
        bail!(
            "connection `{name}` needs its {what} on stdin (e.g. `printf %s \"$SECRET\" | tollgate connections add {name} …`)"
        );
    }
    Ok(Zeroizing::new(trimmed.to_string()))
}

pub async fn run(config: &Config, command: ConnectionsCommand) -> anyhow::Result<ExitCode> {
    let store = || async {
        anyhow::Ok(Arc::new(Store::new(bootstrap::open_backend(config).await?, bootstrap::master_key(config)?)))
    };
    match command {
        ConnectionsCommand::Add { name, kind, set, owner } => {
            let owner = owner_id(&owner)?;
            let kind = ConnectionKind::parse(&kind).expect("clap checked the kind");
            let connection = match Connection::from_settings(&name, kind, &settings(&set)?) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tollgate: connection `{name}` ({kind}) is not valid:");
                    for p in &e.problems {
                        eprintln!("  - {p}");
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            let credential = match connection.credential() {
                Some(what) => Some((what, read_credential(&name, what)?)),
                None => None,
            };
            let store = store().await?;
            store.put_connection(&owner, &connection, credential.as_ref().map(|(_, c)| c.as_str())).await?;
            let with =
                credential.map(|(what, _)| format!(", its {what} sealed in the secret store")).unwrap_or_default();
            eprintln!("tollgate: connection `{name}` ({kind}) of owner `{owner}` saved{with}");
        }
        ConnectionsCommand::List { owner, json } => {
            let owner = owner_id(&owner)?;
            let store = store().await?;
            let mut rows = Vec::new();
            for c in store.connections(&owner).await? {
                let credential = match c.credential() {
                    None => "none",
                    Some(_) if store.connection_credential(&owner, &c.name).await?.is_some() => "stored",
                    Some(_) => "missing",
                };
                rows.push((c, credential));
            }
            if json {
                let list: Vec<_> = rows.iter().map(|(c, cred)| json!({ "name": c.name, "kind": c.kind().name(), "settings": c.describe(), "credential": cred })).collect();
                println!("{}", serde_json::to_string_pretty(&json!({ "owner": owner, "connections": list }))?);
            } else {
                println!("{:<20} {:<5} {:<10} SETTINGS", "NAME", "KIND", "CREDENTIAL");
                for (c, cred) in rows {
                    let settings: Vec<String> = c.describe().iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("{:<20} {:<5} {:<10} {}", c.name, c.kind().name(), cred, settings.join(" "));
                }
            }
        }
        ConnectionsCommand::Test { name, owner } => {
            let owner = owner_id(&owner)?;
            if !valid_connection_name(&name) {
                bail!("`{name}` is not a valid connection name");
            }
            let store = store().await?;
            let connections = bootstrap::connections(config, &store)?;
            match connections.test(&owner, &name).await {
                Ok(what) => println!("connection `{name}`: ok — {what}"),
                Err(e) => {
                    eprintln!("tollgate: connection `{name}` failed its test: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        ConnectionsCommand::Remove { name, owner } => {
            let owner = owner_id(&owner)?;
            let store = store().await?;
            if !store.remove_connection(&owner, &name).await? {
                bail!("owner `{owner}` has no connection `{name}`");
            }
            eprintln!("tollgate: connection `{name}` of owner `{owner}` and its credential removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
