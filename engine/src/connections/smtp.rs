//! `smtp` connections: the server mail is sent through, how the connection is secured
//! (`starttls`, implicit `tls`, or `none` for a local sink) and which CA it trusts then, the
//! user to authenticate as (the password is the connection's credential) and the `from` address
//! every message carries.
//!
//! A password never crosses the network in the clear: `security=none` with a `user` is refused
//! unless the server is on this machine (`localhost`, `127.0.0.0/8`, `::1`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Settings, check_host, valid_address};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    /// Default: 587 (`starttls`), 465 (`tls`), 25 (`none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    /// A PEM file of CA certificates trusted instead of the public roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Authenticate as this user (with the connection's password); without it, no AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The sender of every message (`ops@example.com` or `Ops <ops@example.com>`).
    pub from: String,
}

/// How an SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connect, then `STARTTLS` (required: a server without it is refused).
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only for a local relay or sink.
    None,
}

impl SmtpSecurity {
    pub fn name(self) -> &'static str {
        match self {
            SmtpSecurity::Starttls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::None => "none",
        }
    }
}

impl SmtpSettings {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }

    pub(crate) fn read(s: &mut Settings<'_>) -> Option<Self> {
        let host = s.required("host", "the server's host name");
        if let Some(h) = &host {
            check_host(s, "host", h);
        }
        let port = s.port("port");
        let security = s.choice("security", &["starttls", "tls", "none"]).map(|c| match c {
            "starttls" => SmtpSecurity::Starttls,
            "tls" => SmtpSecurity::Tls,
            _ => SmtpSecurity::None,
        });
        let ca_file = s.optional("ca_file");
        if ca_file.is_some() && security == Some(SmtpSecurity::None) {
            s.problem("ca_file", "only applies with security=starttls or tls");
        }
        let user = s.optional("user");
        let from = s.required("from", "the sender address");
        if let Some(f) = from.as_deref().filter(|f| !valid_address(f)) {
            s.problem("from", format!("`{f}` is not an email address (`ops@example.com` or `Ops <ops@example.com>`)"));
        }
        let settings = Self { host: host?, port: port?, security: security?, ca_file, user, from: from? };
        if let Some(why) = settings.cleartext_login() {
            s.problem("security", why);
        }
        Some(settings)
    }

    /// Why these settings would send the user's password in the clear to another machine, if
    /// they would: `security=none` with a `user`, and a server that is not this machine.
    pub fn cleartext_login(&self) -> Option<String> {
        let user = self.user.as_ref()?;
        (self.security == SmtpSecurity::None && !is_loopback(&self.host)).then(|| {
            format!(
                "`none` would send the password of `{user}` in the clear to `{}`: use starttls or tls (none with a user only for a relay on this machine: localhost, 127.0.0.1, ::1)",
                self.host
            )
        })
    }

    pub(crate) fn describe(&self) -> BTreeMap<&'static str, String> {
        let mut d = BTreeMap::from([
            ("host", self.host.clone()),
            ("port", self.port().to_string()),
            ("security", self.security.name().to_string()),
            ("from", self.from.clone()),
        ]);
        if let Some(u) = &self.user {
            d.insert("user", u.clone());
        }
        if let Some(f) = &self.ca_file {
            d.insert("ca_file", f.clone());
        }
        d
    }
}

/// `localhost` or a loopback address: the only hosts a password may be sent to in the clear.
/// A name that merely resolves to one does not count (resolution can change).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
