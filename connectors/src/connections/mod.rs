//! Runtime clients of an owner's named connections (`tollgate_engine::connections`): one file
//! per kind — [`smtp`] (send one email; [`Connections::send_email`] is what the `connector`
//! step's `email.send` and the `platform` step's `notify` call), [`imap`] (search and fetch
//! messages), [`http`] (a request with the connection's authentication, OAuth2 tokens cached) —
//! and [`Connections::test`], what `tollgate connections test` runs.
//!
//! A connection and its credential are read from the store for each use (a rotated password
//! applies at once); the credential is held in memory only as long as the exchange needs it
//! and never enters an error message: errors name the connection, the server and what it said.

pub mod http;
pub mod imap;
pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use tollgate_engine::connections::{Connection, ConnectionKind};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::step::StepError;
use tollgate_engine::store::{DEFAULT_ATTACHMENT_TTL, Store, StoreError};
use zeroize::Zeroizing;

pub use http::{HttpRequest, TokenCache};
pub use imap::FetchedMail;
pub use smtp::{Attachment, Email, SendOnce, Sent};

/// Why a connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("owner `{owner}` has no connection `{name}` (`tollgate connections add {name} --owner {owner} --kind …`)")]
    NotFound { owner: OwnerId, name: String },
    #[error("connection `{name}` is an {actual} connection; this needs an {wanted} connection")]
    WrongKind { name: String, actual: ConnectionKind, wanted: ConnectionKind },
    #[error("connection `{name}` has no {what} stored (`tollgate connections add {name} …` reads it from stdin)")]
    NoCredential { name: String, what: &'static str },
    /// What was asked of the connection does not fit it (a bad address, path, attachment).
    #[error("{0}")]
    Input(String),
    /// The server refused the connection's credentials.
    #[error("{0}")]
    Refused(String),
    /// The server could not be reached, or answered with a temporary failure.
    #[error("{0}")]
    Failed(String),
    /// The server's TLS certificate was refused (not issued by a trusted CA, not for the host
    /// name, expired), or the server does not speak TLS where it must; nothing was sent.
    #[error("{0}")]
    Untrusted(String),
    /// The server refused the message or a recipient for good.
    #[error("{0}")]
    Rejected(String),
    #[error("reading the connection: {0}")]
    Store(#[from] StoreError),
    /// An HTTP exchange failed the way an `api_call` does (its codes: `http_status`, `egress_denied`…).
    #[error("{0}")]
    Http(StepError),
}

impl ConnectionError {
    /// The step error a `connector` step fails with.
    pub fn into_step_error(self) -> StepError {
        let message = self.to_string();
        match self {
            ConnectionError::NotFound { .. }
            | ConnectionError::WrongKind { .. }
            | ConnectionError::NoCredential { .. } => StepError::permanent("connection_not_found", message),
            ConnectionError::Input(_) => StepError::permanent("connector_input", message),
            ConnectionError::Refused(_) => StepError::permanent("connection_refused", message),
            ConnectionError::Failed(_) => StepError::retryable("connection_failed", message),
            ConnectionError::Untrusted(_) => StepError::permanent("connection_untrusted", message),
            ConnectionError::Rejected(_) => StepError::permanent("email_rejected", message),
            ConnectionError::Store(_) => StepError::retryable("connection_failed", message),
            ConnectionError::Http(e) => e,
        }
    }
}

/// The runtime side of connections: the store they are read from, the egress policy HTTP
/// connections obey, and the OAuth2 token cache of this process.
pub struct Connections {
    store: Arc<Store>,
    http: http::HttpClient,
    attachment_ttl: Duration,
}

/// A connection with its credential, as read for one use.
pub(crate) struct Resolved {
    pub connection: Connection,
    pub credential: Option<Zeroizing<String>>,
}

impl Connections {
    /// Clients for connections stored in `store`; HTTP connections reach, beyond public
    /// addresses, what `egress` (the service's `[egress] allow`) and each workflow's
    /// `egress.allow` open — the same guard and redirect handling as `api_call`.
    pub fn new(store: Arc<Store>, egress: EgressAllow) -> Self {
        Self { store, http: http::HttpClient::new(egress), attachment_ttl: DEFAULT_ATTACHMENT_TTL }
    }

    /// How long the attachments an `email.fetch` stores are kept (`attachment_ttl`; default
    /// [`DEFAULT_ATTACHMENT_TTL`]).
    pub fn with_attachment_ttl(mut self, ttl: Duration) -> Self {
        self.attachment_ttl = ttl;
        self
    }

    pub fn attachment_ttl(&self) -> Duration {
        self.attachment_ttl
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// `owner`'s connection `name`, which must be of `kind`, with its credential (required when
    /// the connection has one).
    pub(crate) async fn resolve(
        &self,
        owner: &OwnerId,
        name: &str,
        kind: ConnectionKind,
    ) -> Result<Resolved, ConnectionError> {
        let connection = self
            .store
            .connection(owner, name)
            .await?
            .ok_or_else(|| ConnectionError::NotFound { owner: owner.clone(), name: name.to_string() })?;
        if connection.kind() != kind {
            return Err(ConnectionError::WrongKind { name: name.to_string(), actual: connection.kind(), wanted: kind });
        }
        let credential = match connection.credential() {
            None => None,
            Some(what) => Some(
                self.store
                    .connection_credential(owner, name)
                    .await?
                    .ok_or(ConnectionError::NoCredential { name: name.to_string(), what })?,
            ),
        };
        Ok(Resolved { connection, credential })
    }

    /// Try `owner`'s connection `name` as `tollgate connections test` does — smtp: connect,
    /// EHLO, (STARTTLS,) AUTH; imap: log in, select INBOX; http: fetch an OAuth2 token (a fresh
    /// one) and request the base URL. Returns what was checked, in a sentence.
    pub async fn test(&self, owner: &OwnerId, name: &str) -> Result<String, ConnectionError> {
        let connection = self
            .store
            .connection(owner, name)
            .await?
            .ok_or_else(|| ConnectionError::NotFound { owner: owner.clone(), name: name.to_string() })?;
        match connection.kind() {
            ConnectionKind::Smtp => smtp::test(self, owner, name).await,
            ConnectionKind::Imap => imap::test(self, owner, name).await,
            ConnectionKind::Http => http::test(self, owner, name).await,
        }
    }
}
