//! `imap:` — email-inbound: each new message in a mailbox starts the run. The password comes
//! from an environment variable (`password_env`), never from the spec. After a message's fire
//! is recorded it is flagged (`after: flag`, the keyword `flag`) or moved (`after: move`, to
//! `move_to`); an unparseable message is a failed fire and is moved to `quarantine`. The
//! dedup key is the hash of the message's Message-ID (mailbox + UIDVALIDITY + UID when it has
//! none).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::SpecProblem;
use crate::spec::validate::problem;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImapTrigger {
    pub host: String,
    /// Default 993 with `tls`, 143 without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// TLS from the first byte (IMAPS), the server's certificate verified against the public
    /// web PKI roots (or `ca_file`); a failed check is an error, never a plaintext fallback.
    /// Default true; false only for a local server.
    #[serde(default = "yes")]
    pub tls: bool,
    /// A PEM file of CA certificates to trust instead of the public web roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    pub user: String,
    /// The environment variable holding the password.
    pub password_env: String,
    #[serde(default = "inbox")]
    pub mailbox: String,
    /// `flag` (default) or `move`.
    #[serde(default)]
    pub after: ImapAfter,
    /// The keyword set on a fired message (`after: flag`), default `$TollgateFired`.
    #[serde(default = "fired_flag")]
    pub flag: String,
    /// The folder fired messages move to (`after: move`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to: Option<String>,
    /// Where unparseable messages go (default `Quarantine`).
    #[serde(default = "quarantine")]
    pub quarantine: String,
    /// Use IDLE when the server offers it (default true); otherwise poll.
    #[serde(default = "yes")]
    pub idle: bool,
    /// Polling interval without IDLE (default 30s).
    #[serde(default = "poll", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll: Duration,
    /// How long IDLE may stay quiet before a NOOP checks the connection (default 60s).
    #[serde(default = "liveness", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub liveness: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImapAfter {
    #[default]
    Flag,
    Move,
}

fn yes() -> bool {
    true
}
fn inbox() -> String {
    "INBOX".into()
}
fn fired_flag() -> String {
    "$TollgateFired".into()
}
fn quarantine() -> String {
    "Quarantine".into()
}
fn poll() -> Duration {
    Duration::from_secs(30)
}
fn liveness() -> Duration {
    Duration::from_secs(60)
}

impl ImapTrigger {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 993 } else { 143 })
    }

    pub(crate) fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if self.host.trim().is_empty() {
            p.push(problem(format!("{at}.imap.host"), "must not be empty"));
        }
        if self.password_env.is_empty() || !self.password_env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            p.push(problem(
                format!("{at}.imap.password_env"),
                "must name an environment variable (letters, digits, `_`)",
            ));
        }
        match &self.ca_file {
            Some(f) if f.trim().is_empty() => {
                p.push(problem(format!("{at}.imap.ca_file"), "must name a PEM file of CA certificates"))
            }
            Some(_) if !self.tls => p.push(problem(format!("{at}.imap.ca_file"), "only applies with `tls: true`")),
            _ => {}
        }
        if self.after == ImapAfter::Move && self.move_to.as_deref().is_none_or(str::is_empty) {
            p.push(problem(format!("{at}.imap.move_to"), "`after: move` needs the folder to move to"));
        }
        if !self.flag.starts_with('$') && !self.flag.starts_with('\\')
            || self.flag.len() < 2
            || self.flag.contains([' ', '(', ')'])
        {
            p.push(problem(format!("{at}.imap.flag"), "must be an IMAP keyword (`$Name`) or system flag (`\\Seen`)"));
        }
        if self.poll.is_zero() || self.liveness.is_zero() {
            p.push(problem(format!("{at}.imap"), "`poll` and `liveness` must be longer than zero"));
        }
    }
}
