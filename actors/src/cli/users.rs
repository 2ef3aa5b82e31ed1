//! `tollgate users add|list`, and how the other commands learn who is at the keyboard
//! ([`caller`]): a user's token (`--token` / `TOLLGATE_TOKEN`) once users exist; before the
//! first user, the local operator under the name given (`--by`, default `$USER`).
//!
//! `users add` writes to the store directly (whoever can open the store holds the master key
//! anyway); over HTTP, `POST /api/users` takes the shared admin token or an admin's token.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use tollgate_engine::store::Store;
use tollgate_engine::users::Role;

use crate::access::Caller;
use crate::bootstrap;
use crate::config::Config;
use crate::users::UserDirectory;

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user and print their API token (shown once; only its hash is stored).
    Add {
        name: String,
        #[arg(long, default_value = "operator", value_parser = ["admin", "operator"])]
        role: String,
        /// A group the user belongs to (repeatable): workflows owned by the group are theirs too.
        #[arg(long = "group", value_name = "G")]
        groups: Vec<String>,
        /// Where pages (new and escalated requests) are mailed.
        #[arg(long)]
        email: Option<String>,
    },
    /// List users (name, role, groups, email).
    List,
}

pub async fn run(config: &Config, command: UsersCommand) -> anyhow::Result<ExitCode> {
    let store = Arc::new(Store::new(bootstrap::open_backend(config).await?, bootstrap::master_key(config)?));
    let users = UserDirectory::new(store);
    match command {
        UsersCommand::Add { name, role, groups, email } => {
            let role = Role::parse(&role).expect("clap checked the role");
            let new = users.add(&name, role, groups, email).await?;
            eprintln!(
                "tollgate: user `{}` ({}) created. Their API token, shown this once:",
                new.user.name,
                role.label()
            );
            println!("{}", new.token.as_str());
        }
        UsersCommand::List => {
            println!("{:<24} {:<9} {:<30} EMAIL", "NAME", "ROLE", "GROUPS");
            for u in users.list().await? {
                println!(
                    "{:<24} {:<9} {:<30} {}",
                    u.name,
                    u.role.label(),
                    u.groups.join(","),
                    u.email.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who a command acts as: the token's user; without a token, the local operator `fallback`
/// — allowed only while no user exists, so that once there are users every decision names an
/// authenticated one.
pub async fn caller(users: &UserDirectory, token: Option<&str>, fallback: &str) -> anyhow::Result<Caller> {
    match token.filter(|t| !t.is_empty()) {
        Some(t) => match users.authenticate(t).await.context("checking the token")? {
            Some(u) => Ok(Caller::User(u)),
            None => bail!("unknown or wrong token (--token / TOLLGATE_TOKEN)"),
        },
        None if users.any().await? => {
            bail!("users exist: pass your token with --token or TOLLGATE_TOKEN (from `tollgate users add`)")
        }
        None => Ok(Caller::Local(fallback.to_string())),
    }
}
