//! `imap` connections: the mailbox server `email.fetch` reads, whether it speaks TLS from the
//! first byte (IMAPS), and the user to log in as (the password is the connection's credential).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Settings, check_host};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImapSettings {
    pub host: String,
    /// Default: 993 with TLS, 143 without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// TLS from the first byte (default true); false only for a local server.
    pub tls: bool,
    pub user: String,
}

impl ImapSettings {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 993 } else { 143 })
    }

    pub(crate) fn read(s: &mut Settings<'_>) -> Option<Self> {
        let host = s.required("host", "the server's host name");
        if let Some(h) = &host {
            check_host(s, "host", h);
        }
        let port = s.port("port");
        let tls = s.boolean("tls", true);
        let user = s.required("user", "the user to log in as");
        Some(Self { host: host?, port: port?, tls: tls?, user: user? })
    }

    pub(crate) fn describe(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("host", self.host.clone()),
            ("port", self.port().to_string()),
            ("tls", self.tls.to_string()),
            ("user", self.user.clone()),
        ])
    }
}
