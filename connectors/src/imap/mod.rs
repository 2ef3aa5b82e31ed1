//! The email-inbound (IMAP) source: one consumer per mailbox across a fleet (a lease in the
//! store), which hands every new message to a [`MailSink`] (the trigger's fire path) and only
//! after the sink has durably recorded it flags it or moves it away (configurable). A message
//! that cannot be parsed is handed over as such (a failed fire) and moved to a quarantine
//! folder: never lost, never retried forever.
//!
//! The connection uses IDLE when the server offers it (polling otherwise, or when told to),
//! checks liveness with NOOP whenever IDLE has been quiet for `liveness_interval` (a connection
//! that went silent fails that check within `command_timeout`), and after any error or
//! disconnect reconnects with capped exponential backoff. Nothing is marked done before the
//! sink has recorded it, so a crash at any point means the message is seen again and the
//! sink's dedup (mailbox + UIDVALIDITY + UID, and Message-ID) makes the second sight a
//! duplicate.

mod parse;
mod session;

use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_trait::async_trait;
use futures::TryStreamExt as _;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tollgate_engine::store::{Backend, Lease, LeaseGrant, StoreError};

pub use parse::{MailAttachment, MailError, ParsedMail, parse_mail};
pub use session::{ImapSession, Tls, connect, open, timed};

/// Where the consumer reads, and what it does with what it read.
#[derive(Clone, Debug, PartialEq)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    /// TLS from the first byte (IMAPS, usually port 993), the certificate verified against the
    /// public web PKI roots, or against the CA certificates of `ca_file` instead.
    pub tls: bool,
    /// A PEM file of the CA certificates to trust (a private CA) in place of the web roots.
    pub ca_file: Option<std::path::PathBuf>,
    pub user: String,
    pub password: String,
    pub mailbox: String,
    /// After a message's fire is recorded.
    pub after: AfterFire,
    /// Where unparseable messages go (created if missing).
    pub quarantine: String,
    /// Use IDLE when the server offers it; otherwise poll every `poll_interval`.
    pub idle: bool,
    pub poll_interval: Duration,
    /// How long IDLE may stay quiet before a NOOP checks the connection is alive.
    pub liveness_interval: Duration,
    /// Longest wait for any one server answer.
    pub command_timeout: Duration,
    /// Reconnect backoff: from the first to the last, doubling.
    pub backoff: (Duration, Duration),
}

impl ImapSettings {
    /// A stable id for this mailbox (server, user, folder), for store keys.
    pub fn mailbox_id(&self) -> String {
        let digest = Sha256::digest(format!("{}:{}\0{}\0{}", self.host, self.port, self.user, self.mailbox).as_bytes());
        hex::encode(&digest[..12])
    }

    /// The keyword a processed message carries (flag mode), or none (move mode).
    fn done_keyword(&self) -> Option<&str> {
        match &self.after {
            AfterFire::Flag(k) => Some(k),
            AfterFire::Move(_) => None,
        }
    }
}

/// What happens to a message once its fire is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterFire {
    /// Set this keyword (e.g. `$TollgateFired`, or `\Seen`); messages with it are skipped.
    Flag(String),
    /// Move it to this folder (created if missing).
    Move(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("IMAP: {0}")]
    Protocol(String),
    #[error("IMAP login refused: {0}")]
    Login(String),
    #[error("IMAP TLS: {0}")]
    Tls(String),
    /// The handshake failed on the server's certificate, or the port does not speak TLS.
    #[error("IMAP TLS: {0}")]
    Untrusted(String),
    #[error("IMAP connection went silent: {0}")]
    Silent(String),
    #[error("IMAP connection closed by the server")]
    Closed,
    #[error("IMAP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("IMAP settings: {0}")]
    Config(String),
    #[error("the mailbox lease was lost to another process")]
    LeaseLost,
    #[error("recording the fire failed: {0}")]
    Sink(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        match e {
            async_imap::error::Error::Io(e) => ImapError::Io(e),
            async_imap::error::Error::ConnectionLost => ImapError::Closed,
            other => ImapError::Protocol(other.to_string()),
        }
    }
}

/// One message as read from the mailbox.
#[derive(Clone, Debug)]
pub struct InboundMail {
    pub mailbox_id: String,
    pub uid_validity: u32,
    pub uid: u32,
    pub raw: Vec<u8>,
    /// The parsed message, or why it could not be parsed.
    pub parsed: Result<ParsedMail, MailError>,
}

impl InboundMail {
    /// Dedup key of this copy of the message: mailbox + UIDVALIDITY + UID (ids only).
    pub fn uid_key(&self) -> String {
        format!("imap/{}/{}/{}", self.mailbox_id, self.uid_validity, self.uid)
    }

    /// Dedup key of the message whatever its copy: a hash of its Message-ID, if it has one.
    pub fn message_id_key(&self) -> Option<String> {
        let id = self.parsed.as_ref().ok()?.message_id.as_deref()?;
        Some(format!("imap/{}/mid/{}", self.mailbox_id, hex::encode(&Sha256::digest(id.as_bytes())[..16])))
    }
}

/// What the sink did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Recorded as a fire that started a run.
    Fired,
    /// Recorded as a duplicate of a message already fired.
    Duplicate,
    /// Recorded as a failed fire (the message is unparseable): it goes to quarantine.
    Failed,
}

/// The fire path as the IMAP consumer sees it. `deliver` returns only once what it reports
/// is durably recorded; an error leaves the message in place, to be delivered again.
#[async_trait]
pub trait MailSink: Send + Sync + 'static {
    async fn deliver(&self, mail: &InboundMail) -> Result<Delivered, String>;
}

/// Claim the dedup keys of `mail` (first writer wins, kept for `ttl`): true if this is the first
/// sight of both this copy and its Message-ID.
pub async fn claim_mail(backend: &dyn Backend, mail: &InboundMail, ttl: Duration) -> Result<bool, StoreError> {
    if !backend.put_if_absent(&mail.uid_key(), b"1", Some(ttl)).await? {
        return Ok(false);
    }
    match mail.message_id_key() {
        Some(key) => backend.put_if_absent(&key, b"1", Some(ttl)).await,
        None => Ok(true),
    }
}

/// One consumer per mailbox across a fleet: a store lease (`imap/{mailbox id}/lease`).
pub struct MailboxLease {
    backend: Arc<dyn Backend>,
    key: String,
    holder: String,
    ttl: Duration,
    held: tokio::sync::Mutex<Option<Lease>>,
}

impl MailboxLease {
    pub fn new(backend: Arc<dyn Backend>, settings: &ImapSettings, holder: &str, ttl: Duration) -> Self {
        Self {
            backend,
            key: format!("imap/{}/lease", settings.mailbox_id()),
            holder: holder.to_string(),
            ttl,
            held: Default::default(),
        }
    }

    /// Take the lease, or renew it if held; false while another process holds it.
    pub async fn hold(&self) -> Result<bool, StoreError> {
        let mut held = self.held.lock().await;
        if let Some(lease) = held.as_ref() {
            match self.backend.lease_renew(lease, self.ttl).await {
                Ok(()) => return Ok(true),
                Err(StoreError::Fenced { .. }) => *held = None,
                Err(e) => return Err(e),
            }
        }
        match self.backend.lease_acquire(&self.key, &self.holder, self.ttl, None).await? {
            LeaseGrant::Granted(lease) => {
                *held = Some(lease);
                Ok(true)
            }
            LeaseGrant::Held(_) => Ok(false),
        }
    }

    pub async fn release(&self) {
        if let Some(lease) = self.held.lock().await.take() {
            let _ = self.backend.lease_release(&lease).await;
        }
    }
}

/// What the consumer reports about itself (for trigger health).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImapHealth {
    pub connected: bool,
    pub last_error: Option<String>,
    /// Messages handed to the sink.
    pub delivered: u64,
    /// Connections made (the first and every reconnect).
    pub connections: u64,
}

/// The consumer of one mailbox.
pub struct ImapConsumer {
    settings: ImapSettings,
    sink: Arc<dyn MailSink>,
    lease: MailboxLease,
    health: tokio::sync::watch::Sender<ImapHealth>,
}

impl ImapConsumer {
    pub fn new(settings: ImapSettings, sink: Arc<dyn MailSink>, lease: MailboxLease) -> Self {
        Self { settings, sink, lease, health: tokio::sync::watch::channel(ImapHealth::default()).0 }
    }

    pub fn health(&self) -> tokio::sync::watch::Receiver<ImapHealth> {
        self.health.subscribe()
    }

    /// Consume until `shutdown`: hold the lease, connect, deliver, wait (IDLE or poll), and
    /// reconnect with backoff after any failure.
    pub async fn run(&self, shutdown: CancellationToken) {
        let (first, last) = self.settings.backoff;
        let mut backoff = first;
        while !shutdown.is_cancelled() {
            let result = match self.lease.hold().await {
                Ok(true) => self.session(&shutdown).await,
                Ok(false) => Err(ImapError::LeaseLost),
                Err(e) => Err(e.into()),
            };
            self.health.send_modify(|h| h.connected = false);
            match result {
                Ok(()) => break,
                Err(ImapError::LeaseLost) => {
                    // Another process consumes this mailbox: look again within the lease's TTL.
                    backoff = first;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.lease.ttl / 3) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(mailbox = %self.settings.mailbox, "IMAP consumer: {e}; reconnecting in {backoff:?}");
                    self.health.send_modify(|h| h.last_error = Some(e.to_string()));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(last);
                }
            }
        }
        self.lease.release().await;
    }

    /// One connection's life: returns `Ok` only at shutdown.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), ImapError> {
        let s = &self.settings;
        let limit = s.command_timeout;
        let mut session = connect(s).await?;
        let mailbox = timed("select", limit, session.select(&s.mailbox)).await?;
        let uid_validity = mailbox
            .uid_validity
            .ok_or_else(|| ImapError::Protocol(format!("mailbox {} has no UIDVALIDITY", s.mailbox)))?;
        let caps = timed("capability", limit, session.capabilities()).await?;
        let idle = s.idle && caps.has_str("IDLE");
        for folder in [
            Some(s.quarantine.as_str()),
            match &s.after {
                AfterFire::Move(f) => Some(f.as_str()),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        {
            // Exists already: the server says NO, which is fine.
            let _ = timed("create", limit, session.create(folder)).await;
        }
        self.health.send_modify(|h| {
            h.connected = true;
            h.connections += 1;
            h.last_error = None;
        });
        loop {
            self.deliver_pending(&mut session, uid_validity).await?;
            if !self.lease.hold().await? {
                return Err(ImapError::LeaseLost);
            }
            if shutdown.is_cancelled() {
                let _ = timed("logout", limit, session.logout()).await;
                return Ok(());
            }
            if idle {
                let mut handle = session.idle();
                timed("idle", limit, handle.init()).await?;
                let (wait, stop) = handle.wait_with_timeout(s.liveness_interval);
                let outcome = tokio::select! {
                    r = wait => Some(r?),
                    _ = shutdown.cancelled() => None,
                };
                drop(stop);
                session = timed("idle done", limit, handle.done()).await?;
                if matches!(outcome, Some(IdleResponse::Timeout) | Some(IdleResponse::ManualInterrupt)) {
                    // Quiet for a while (or the stream ended): is anyone there?
                    timed("noop", limit, session.noop()).await?;
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(s.poll_interval) => {}
                    _ = shutdown.cancelled() => {}
                }
                timed("noop", limit, session.noop()).await?;
            }
        }
    }

    /// Hand every message not yet done to the sink, then flag/move it (or quarantine it).
    async fn deliver_pending(&self, session: &mut ImapSession, uid_validity: u32) -> Result<(), ImapError> {
        let s = &self.settings;
        let limit = s.command_timeout;
        let query = match s.done_keyword() {
            Some(k) => format!("UNKEYWORD {k}"),
            None => "ALL".to_string(),
        };
        let query = if s.done_keyword() == Some("\\Seen") { "UNSEEN".to_string() } else { query };
        let mut uids: Vec<u32> = timed("search", limit, session.uid_search(&query)).await?.into_iter().collect();
        uids.sort_unstable();
        for uid in uids {
            let raw = timed("fetch", limit, async {
                let fetches: Vec<_> = session.uid_fetch(uid.to_string(), "BODY.PEEK[]").await?.try_collect().await?;
                Ok::<_, ImapError>(fetches.into_iter().find_map(|f| f.body().map(<[u8]>::to_vec)))
            })
            .await?;
            let Some(raw) = raw else { continue }; // expunged meanwhile
            let mail = InboundMail { mailbox_id: s.mailbox_id(), uid_validity, uid, parsed: parse_mail(&raw), raw };
            let delivered = self.sink.deliver(&mail).await.map_err(ImapError::Sink)?;
            self.health.send_modify(|h| h.delivered += 1);
            // Recorded: now, and only now, mark it done at the source.
            match (delivered, &s.after) {
                (Delivered::Failed, _) => {
                    timed("move to quarantine", limit, session.uid_mv(uid.to_string(), &s.quarantine)).await?
                }
                (_, AfterFire::Move(folder)) => timed("move", limit, session.uid_mv(uid.to_string(), folder)).await?,
                (_, AfterFire::Flag(k)) => {
                    let _: Vec<_> = timed("store", limit, async {
                        Ok::<_, ImapError>(
                            session
                                .uid_store(uid.to_string(), format!("+FLAGS.SILENT ({k})"))
                                .await?
                                .try_collect()
                                .await?,
                        )
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }
}
