//! Connections: an owner's named outside systems — an SMTP server to send mail through, an IMAP
//! mailbox to read, an HTTP API with its authentication — configured once
//! (`tollgate connections add NAME --kind smtp --set host=…`) and referenced by name from
//! `connector` steps (`connection: office_mail`) and the `platform` step's `notify`.
//!
//! A [`Connection`] holds only settings that may be shown (`connections list`): host, port,
//! user, from address, base URL. Its credential — a password, a bearer token, an OAuth2 client
//! secret — lives in the owner's encrypted secret store under [`Connection::credential_secret`]
//! and never in the record, a spec, a journal, an output, an error or a log. Records are sealed
//! per owner (`store::connections`). One module per kind: [`smtp`], [`imap`], [`http`].

pub mod http;
pub mod imap;
pub mod smtp;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use http::{ClientAuth, HttpAuth, HttpSettings};
pub use imap::ImapSettings;
pub use smtp::{SmtpSecurity, SmtpSettings};

/// A named connection of an owner: its name and its kind's settings (no credential).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub name: String,
    pub settings: ConnectionSettings,
}

/// What a connection connects to, per kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConnectionSettings {
    Smtp(SmtpSettings),
    Imap(ImapSettings),
    Http(HttpSettings),
}

/// The kinds of connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    Smtp,
    Imap,
    Http,
}

impl ConnectionKind {
    pub const ALL: [ConnectionKind; 3] = [ConnectionKind::Smtp, ConnectionKind::Imap, ConnectionKind::Http];

    pub fn name(self) -> &'static str {
        match self {
            ConnectionKind::Smtp => "smtp",
            ConnectionKind::Imap => "imap",
            ConnectionKind::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing wrong with a connection's settings: which setting, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingProblem {
    pub setting: String,
    pub message: String,
}

impl fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

/// Everything wrong with a connection's settings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SettingsError {
    pub problems: Vec<SettingProblem>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

/// Connection names: letters, digits, `_`, `-`, `.`; 1 to 64 characters (they are part of store
/// keys and of secret names).
pub fn valid_connection_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The prefix of the secret names that hold connections' credentials.
pub const CREDENTIAL_PREFIX: &str = "connection.";

impl Connection {
    /// A connection of `kind` from `key=value` settings, every problem reported with its setting.
    pub fn from_settings(
        name: &str,
        kind: ConnectionKind,
        settings: &[(String, String)],
    ) -> Result<Connection, SettingsError> {
        let mut s = Settings::new(kind, settings);
        if !valid_connection_name(name) {
            s.problem("name", format!("`{name}` is not a valid connection name (1–64 letters, digits, `_`, `-`, `.`)"));
        }
        let parsed = match kind {
            ConnectionKind::Smtp => SmtpSettings::read(&mut s).map(ConnectionSettings::Smtp),
            ConnectionKind::Imap => ImapSettings::read(&mut s).map(ConnectionSettings::Imap),
            ConnectionKind::Http => HttpSettings::read(&mut s).map(ConnectionSettings::Http),
        };
        s.finish()?;
        Ok(Connection { name: name.to_string(), settings: parsed.expect("no problems means every setting was read") })
    }

    pub fn kind(&self) -> ConnectionKind {
        match self.settings {
            ConnectionSettings::Smtp(_) => ConnectionKind::Smtp,
            ConnectionSettings::Imap(_) => ConnectionKind::Imap,
            ConnectionSettings::Http(_) => ConnectionKind::Http,
        }
    }

    /// The name of the owner's secret that holds this connection's credential.
    pub fn credential_secret(&self) -> String {
        credential_secret(&self.name)
    }

    /// What the credential is ("password", "bearer token", "client secret"), when the
    /// connection needs one.
    pub fn credential(&self) -> Option<&'static str> {
        match &self.settings {
            ConnectionSettings::Smtp(s) => s.user.as_ref().map(|_| "password"),
            ConnectionSettings::Imap(_) => Some("password"),
            ConnectionSettings::Http(h) => h.auth.credential(),
        }
    }

    /// The settings as `key=value` pairs, for listings: never a credential (there is none here).
    pub fn describe(&self) -> BTreeMap<&'static str, String> {
        match &self.settings {
            ConnectionSettings::Smtp(s) => s.describe(),
            ConnectionSettings::Imap(s) => s.describe(),
            ConnectionSettings::Http(s) => s.describe(),
        }
    }
}

/// The name of the owner's secret that holds connection `name`'s credential.
pub fn credential_secret(name: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{name}")
}

/// `key=value` settings being read for one kind: each read marks its key used; what is left
/// at the end is an unknown setting, reported with the settings the kind has.
pub(crate) struct Settings<'a> {
    kind: ConnectionKind,
    given: BTreeMap<&'a str, &'a str>,
    known: Vec<&'static str>,
    problems: Vec<SettingProblem>,
}

impl<'a> Settings<'a> {
    fn new(kind: ConnectionKind, settings: &'a [(String, String)]) -> Self {
        let mut given = BTreeMap::new();
        let mut problems = Vec::new();
        for (k, v) in settings {
            if given.insert(k.as_str(), v.as_str()).is_some() {
                problems.push(SettingProblem { setting: k.clone(), message: "is set twice".into() });
            }
        }
        Self { kind, given, known: Vec::new(), problems }
    }

    pub(crate) fn problem(&mut self, setting: &str, message: impl Into<String>) {
        self.problems.push(SettingProblem { setting: setting.to_string(), message: message.into() });
    }

    /// An optional setting's value (empty counts as unset).
    pub(crate) fn optional(&mut self, key: &'static str) -> Option<String> {
        self.known.push(key);
        self.given.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// A required setting's value; missing, it is a problem and `None`.
    pub(crate) fn required(&mut self, key: &'static str, what: &str) -> Option<String> {
        let v = self.optional(key);
        if v.is_none() {
            let kind = self.kind;
            self.problem(key, format!("an {kind} connection needs {what} (`--set {key}=…`)"));
        }
        v
    }

    /// An optional port number.
    pub(crate) fn port(&mut self, key: &'static str) -> Option<Option<u16>> {
        match self.optional(key) {
            None => Some(None),
            Some(v) => match v.parse::<u16>() {
                Ok(p) if p > 0 => Some(Some(p)),
                _ => {
                    self.problem(key, format!("`{v}` is not a port number (1–65535)"));
                    None
                }
            },
        }
    }

    /// An optional `true`/`false`.
    pub(crate) fn boolean(&mut self, key: &'static str, default: bool) -> Option<bool> {
        match self.optional(key).as_deref() {
            None => Some(default),
            Some("true" | "yes" | "on") => Some(true),
            Some("false" | "no" | "off") => Some(false),
            Some(v) => {
                self.problem(key, format!("`{v}` is not true or false"));
                None
            }
        }
    }

    /// One of `choices` (the first is the default).
    pub(crate) fn choice(&mut self, key: &'static str, choices: &[&'static str]) -> Option<&'static str> {
        match self.optional(key) {
            None => Some(choices[0]),
            Some(v) => match choices.iter().find(|c| **c == v) {
                Some(c) => Some(c),
                None => {
                    self.problem(key, format!("`{v}` is not one of {}", choices.join(", ")));
                    None
                }
            },
        }
    }

    fn finish(mut self) -> Result<(), SettingsError> {
        let unknown: Vec<&str> = self.given.keys().copied().filter(|k| !self.known.contains(k)).collect();
        let known = self.known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        for key in unknown {
            let kind = self.kind;
            self.problem(key, format!("is not a setting of an {kind} connection (settings: {known})"));
        }
        if self.problems.is_empty() { Ok(()) } else { Err(SettingsError { problems: self.problems }) }
    }
}

/// A host name or address: no scheme, no path, no spaces.
pub(crate) fn check_host(s: &mut Settings<'_>, key: &'static str, host: &str) {
    if host.contains("://") || host.contains('/') || host.chars().any(char::is_whitespace) {
        s.problem(key, format!("`{host}` is not a host name or address (no scheme, no path)"));
    }
}

/// Whether `s` is an email address (`local@domain`) or a mailbox (`Name <local@domain>`): the
/// shape only; the SMTP library checks the rest when a message is built.
pub fn valid_address(s: &str) -> bool {
    let s = s.trim();
    let addr = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => &s[i + 1..s.len() - 1],
        (None, false) => s,
        _ => return false,
    };
    match addr.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !addr.chars().any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn each_kind_reads_its_settings_with_defaults() {
        let c = Connection::from_settings(
            "office_mail",
            ConnectionKind::Smtp,
            &pairs(&[("host", "smtp.example.com"), ("user", "ops"), ("from", "Ops <ops@example.com>")]),
        )
        .unwrap();
        let ConnectionSettings::Smtp(s) = &c.settings else { panic!() };
        assert_eq!((s.security, s.port()), (SmtpSecurity::Starttls, 587));
        assert_eq!(c.credential(), Some("password"));
        assert_eq!(c.credential_secret(), "connection.office_mail");

        let c = Connection::from_settings(
            "sink",
            ConnectionKind::Smtp,
            &pairs(&[("host", "127.0.0.1"), ("port", "2525"), ("security", "none"), ("from", "a@b.test")]),
        )
        .unwrap();
        assert_eq!(c.credential(), None, "no user, no password");

        let c = Connection::from_settings(
            "inbox",
            ConnectionKind::Imap,
            &pairs(&[("host", "imap.example.com"), ("user", "ops@example.com")]),
        )
        .unwrap();
        let ConnectionSettings::Imap(s) = &c.settings else { panic!() };
        assert_eq!((s.tls, s.port()), (true, 993));
        let c = Connection::from_settings(
            "inbox",
            ConnectionKind::Imap,
            &pairs(&[("host", "imap.example.com"), ("user", "ops"), ("ca_file", "/etc/mail-ca.pem")]),
        )
        .unwrap();
        let ConnectionSettings::Imap(s) = &c.settings else { panic!() };
        assert_eq!(
            (s.ca_file.as_deref(), c.describe()["ca_file"].as_str()),
            (Some("/etc/mail-ca.pem"), "/etc/mail-ca.pem")
        );
        let err = Connection::from_settings(
            "inbox",
            ConnectionKind::Imap,
            &pairs(&[("host", "h"), ("user", "u"), ("tls", "false"), ("ca_file", "/x.pem")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "ca_file: only applies with tls=true");

        let c = Connection::from_settings(
            "crm",
            ConnectionKind::Http,
            &pairs(&[
                ("base_url", "https://api.example.com/v1"),
                ("auth", "oauth2"),
                ("token_url", "https://auth.example.com/token"),
                ("client_id", "tollgate"),
                ("scope", "orders"),
            ]),
        )
        .unwrap();
        assert_eq!(c.credential(), Some("client secret"));
        assert_eq!(c.describe()["auth"], "oauth2");
        assert_eq!(c.describe()["client_auth"], "client_secret_basic", "HTTP Basic unless told otherwise");

        let oauth = |client_auth: &str| {
            let given = [
                ("base_url", "https://api.example.com"),
                ("auth", "oauth2"),
                ("token_url", "https://auth.example.com/token"),
                ("client_id", "c"),
                ("client_auth", client_auth),
            ];
            Connection::from_settings("crm", ConnectionKind::Http, &pairs(&given))
        };
        let c = oauth("client_secret_post").unwrap();
        let ConnectionSettings::Http(HttpSettings { auth: HttpAuth::Oauth2 { client_auth, .. }, .. }) = &c.settings
        else {
            panic!()
        };
        assert_eq!(*client_auth, ClientAuth::ClientSecretPost);
        assert_eq!(c.describe()["client_auth"], "client_secret_post");
        assert_eq!(
            oauth("post").unwrap_err().to_string(),
            "client_auth: `post` is not one of client_secret_basic, client_secret_post"
        );
        let err = Connection::from_settings(
            "api",
            ConnectionKind::Http,
            &pairs(&[("base_url", "https://x"), ("auth", "bearer"), ("client_auth", "client_secret_post")]),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "client_auth: is only a setting of oauth2 auth");
        // A record saved before the setting existed reads as HTTP Basic.
        let old: HttpAuth =
            serde_json::from_value(serde_json::json!({"type": "oauth2", "token_url": "https://t", "client_id": "c"}))
                .unwrap();
        assert!(matches!(old, HttpAuth::Oauth2 { client_auth: ClientAuth::ClientSecretBasic, .. }));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Connection::from_settings(
            "bad name",
            ConnectionKind::Smtp,
            &pairs(&[("hots", "x"), ("port", "99999"), ("security", "ssl"), ("from", "not an address")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("name: `bad name` is not a valid connection name"), "{err}");
        assert!(err.contains("host: an smtp connection needs the server's host name"), "{err}");
        assert!(err.contains("port: `99999` is not a port number"), "{err}");
        assert!(err.contains("security: `ssl` is not one of starttls, tls, none"), "{err}");
        assert!(err.contains("from: `not an address` is not an email address"), "{err}");
        assert!(err.contains("hots: is not a setting of an smtp connection (settings: `host`"), "{err}");

        let err = Connection::from_settings(
            "api",
            ConnectionKind::Http,
            &pairs(&[("base_url", "ftp://x"), ("auth", "basic")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("base_url: `ftp://x` is not an http(s) URL"), "{err}");
        assert!(err.contains("user: basic auth needs the user name"), "{err}");
        let err = Connection::from_settings(
            "api",
            ConnectionKind::Http,
            &pairs(&[("base_url", "https://x"), ("auth", "oauth2")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("token_url: oauth2 auth needs the token endpoint"), "{err}");
        assert!(err.contains("client_id: oauth2 auth needs the client id"), "{err}");
        let err =
            Connection::from_settings("api", ConnectionKind::Http, &pairs(&[("base_url", "https://x"), ("user", "u")]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("user: is only a setting of basic auth"), "{err}");
    }

    #[test]
    fn an_smtp_password_never_goes_in_the_clear_to_another_machine() {
        let smtp = |s: &[(&str, &str)]| Connection::from_settings("mail", ConnectionKind::Smtp, &pairs(s));
        let err =
            smtp(&[("host", "smtp.example.com"), ("security", "none"), ("user", "ops"), ("from", "ops@example.com")])
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "security: `none` would send the password of `ops` in the clear to `smtp.example.com`: use starttls or tls (none with a user only for a relay on this machine: localhost, 127.0.0.1, ::1)"
        );
        // A name that resolves to a loopback address is not trusted to stay one.
        assert!(
            smtp(&[("host", "relay.internal"), ("security", "none"), ("user", "ops"), ("from", "a@b.test")]).is_err()
        );
        for host in ["localhost", "127.0.0.1", "127.0.0.53", "::1", "[::1]"] {
            smtp(&[("host", host), ("security", "none"), ("user", "ops"), ("from", "a@b.test")])
                .unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        // Without a user nothing secret is sent; with TLS the password is encrypted.
        smtp(&[("host", "smtp.example.com"), ("security", "none"), ("from", "a@b.test")]).unwrap();
        for security in ["starttls", "tls"] {
            let c = smtp(&[
                ("host", "smtp.example.com"),
                ("security", security),
                ("user", "ops"),
                ("ca_file", "/etc/ca.pem"),
                ("from", "a@b.test"),
            ])
            .unwrap();
            let ConnectionSettings::Smtp(s) = &c.settings else { panic!() };
            assert_eq!((s.ca_file.as_deref(), c.describe()["ca_file"].as_str()), (Some("/etc/ca.pem"), "/etc/ca.pem"));
        }
        let err =
            smtp(&[("host", "127.0.0.1"), ("security", "none"), ("ca_file", "/etc/ca.pem"), ("from", "a@b.test")])
                .unwrap_err()
                .to_string();
        assert_eq!(err, "ca_file: only applies with security=starttls or tls");
    }

    #[test]
    fn addresses() {
        for ok in ["a@b.test", "Ops Team <ops@example.com>", "<x@y>"] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in ["", "a", "@b", "a@", "a b@c", "Name <a@b", "a@b@c", "a@b, c@d"] {
            assert!(!valid_address(bad), "{bad}");
        }
    }
}
