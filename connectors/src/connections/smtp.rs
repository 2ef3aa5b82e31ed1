//! Sending email through an owner's `smtp` connection (lettre over tokio + rustls): connect,
//! EHLO, STARTTLS when the connection says so (a server without it is refused), AUTH PLAIN or
//! LOGIN when it has a user, then one message — plain-text body, attachments as a
//! `multipart/mixed` — and QUIT.
//!
//! With TLS (`starttls`, `tls`) the server's certificate is verified — against the system's
//! roots, or only the CAs of the connection's `ca_file` — and a handshake that fails is an
//! error naming why (`connection_untrusted`), never a fallback to plaintext: nothing, the
//! password least of all, is sent before TLS is up. A password goes over a plaintext session
//! only to a server on this machine (`SmtpSettings::cleartext_login`, checked again here for
//! records saved before that rule).
//!
//! Two entry points: [`Connections::send_email`] sends one message (the `platform` step's
//! `notify` reuses it), and [`Connections::send_email_once`] does so at most once per
//! idempotency key (the `connector` step's `email.send`), recording the send in the store
//! before and after the SMTP transaction (see `tollgate_engine::store::connections`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_engine::connections::{ConnectionKind, ConnectionSettings, SmtpSecurity, SmtpSettings};
use tollgate_engine::ids::{OwnerId, WorkflowId};
use tollgate_engine::store::EmailSendRecord;

use super::{ConnectionError, Connections, Resolved};

/// Longest wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a whole SMTP exchange may take (connect to QUIT).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// One email to send. `from` is the connection's.
#[derive(Clone, Debug, Default)]
pub struct Email {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// Recipients that are not written in the message's headers.
    pub bcc: Vec<String>,
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    pub attachments: Vec<Attachment>,
    /// `<…@…>`; `None`: a random one.
    pub message_id: Option<String>,
}

/// One attachment.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A message the server accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub message_id: String,
    /// Every recipient of the envelope (to, cc, bcc).
    pub recipients: Vec<String>,
    /// The server's answer to the message (`250 …`).
    pub response: String,
    /// When it was accepted (ms since the epoch).
    pub at_ms: u64,
}

/// The outcome of [`Connections::send_email_once`].
#[derive(Clone, Debug, PartialEq)]
pub struct SendOnce {
    pub sent: Sent,
    /// The message had been sent by an earlier attempt: nothing was sent now.
    pub already_sent: bool,
    /// An earlier attempt died while sending (it may or may not have gone out): it was sent
    /// again now, with the same `Message-ID`.
    pub resent: bool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The `Message-ID` of the email a step with idempotency key `key` sends: the same for every
/// attempt, so a resend is recognisably the same message.
pub fn message_id_for(workflow: &WorkflowId, key: &str, from: &str) -> String {
    let digest = Sha256::digest(format!("{workflow}\0{key}").as_bytes());
    let domain = from.rsplit('@').next().unwrap_or("tollgate").trim_end_matches('>').trim();
    let domain = if domain.is_empty() { "tollgate" } else { domain };
    format!("<tg.{}@{domain}>", hex::encode(&digest[..16]))
}

impl Connections {
    /// Send `email` through `owner`'s smtp connection `name`: one SMTP transaction.
    pub async fn send_email(&self, owner: &OwnerId, name: &str, email: &Email) -> Result<Sent, ConnectionError> {
        let resolved = self.resolve(owner, name, ConnectionKind::Smtp).await?;
        let settings = smtp_settings(&resolved);
        let message = build(settings, email)?;
        match tokio::time::timeout(EXCHANGE_TIMEOUT, transact(settings, &resolved, Some(&message))).await {
            Ok(result) => result.map(|r| r.expect("a message was sent")),
            Err(_) => Err(ConnectionError::Failed(format!(
                "smtp {}:{}: no end to the exchange within {EXCHANGE_TIMEOUT:?}",
                settings.host,
                settings.port()
            ))),
        }
    }

    /// Send `email` through `owner`'s smtp connection `name` at most once per
    /// (`workflow`, `idempotency_key`) — save for the window described in
    /// `tollgate_engine::store::connections`, where it is sent again with the same `Message-ID`.
    /// The `Message-ID` is derived from the key (any given one is replaced).
    pub async fn send_email_once(
        &self,
        workflow: &WorkflowId,
        idempotency_key: &str,
        attempt: u32,
        owner: &OwnerId,
        name: &str,
        email: &Email,
    ) -> Result<SendOnce, ConnectionError> {
        let resolved = self.resolve(owner, name, ConnectionKind::Smtp).await?;
        let settings = smtp_settings(&resolved);
        let message_id = message_id_for(workflow, idempotency_key, &settings.from);
        let email = Email { message_id: Some(message_id.clone()), ..email.clone() };
        let message = build(settings, &email)?;
        let sending = EmailSendRecord::Sending { attempt, message_id: message_id.clone(), at_ms: now_ms() };
        let resent = match self.store.begin_email_send(workflow, idempotency_key, &sending).await? {
            None => false,
            Some(EmailSendRecord::Sent { output, .. }) => {
                let sent: Sent = serde_json::from_value(output)
                    .map_err(|e| ConnectionError::Failed(format!("the recorded send cannot be read: {e}")))?;
                return Ok(SendOnce { sent, already_sent: true, resent: false });
            }
            Some(EmailSendRecord::Sending { attempt: earlier, .. }) => {
                tracing::warn!(%workflow, attempt, earlier, "an earlier attempt died while sending this email; sending it again with the same Message-ID");
                self.store.record_email_send(workflow, idempotency_key, &sending).await?;
                true
            }
        };
        let sent = match tokio::time::timeout(EXCHANGE_TIMEOUT, transact(settings, &resolved, Some(&message))).await {
            Ok(result) => result?.expect("a message was sent"),
            Err(_) => {
                return Err(ConnectionError::Failed(format!(
                    "smtp {}:{}: no end to the exchange within {EXCHANGE_TIMEOUT:?}",
                    settings.host,
                    settings.port()
                )));
            }
        };
        let output = serde_json::to_value(&sent).expect("Sent serialises");
        let record = EmailSendRecord::Sent { attempt, message_id, at_ms: sent.at_ms, output };
        self.store.record_email_send(workflow, idempotency_key, &record).await?;
        Ok(SendOnce { sent, already_sent: false, resent })
    }
}

/// `connections test` for smtp: connect, EHLO, (STARTTLS,) AUTH, QUIT.
pub(super) async fn test(c: &Connections, owner: &OwnerId, name: &str) -> Result<String, ConnectionError> {
    let resolved = c.resolve(owner, name, ConnectionKind::Smtp).await?;
    let s = smtp_settings(&resolved);
    match tokio::time::timeout(EXCHANGE_TIMEOUT, transact(s, &resolved, None)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ConnectionError::Failed(format!(
                "smtp {}:{}: no answer within {EXCHANGE_TIMEOUT:?}",
                s.host,
                s.port()
            )));
        }
    };
    let auth = match &s.user {
        Some(u) => format!(", authenticated as {u}"),
        None => ", no authentication".into(),
    };
    Ok(format!("smtp {}:{} ({}) answered EHLO{auth}", s.host, s.port(), s.security.name()))
}

fn smtp_settings(r: &Resolved) -> &SmtpSettings {
    match &r.connection.settings {
        ConnectionSettings::Smtp(s) => s,
        _ => unreachable!("resolved as an smtp connection"),
    }
}

fn mailbox(field: &str, address: &str) -> Result<Mailbox, ConnectionError> {
    address
        .trim()
        .parse()
        .map_err(|e| ConnectionError::Input(format!("{field}: `{address}` is not an email address ({e})")))
}

/// The message, as lettre builds it (the `Bcc` header is left out).
fn build(s: &SmtpSettings, email: &Email) -> Result<Message, ConnectionError> {
    if email.to.is_empty() && email.cc.is_empty() && email.bcc.is_empty() {
        return Err(ConnectionError::Input("the email has no recipient".into()));
    }
    let from = s.from.parse::<Mailbox>().map_err(|e| {
        ConnectionError::Input(format!("the connection's from `{}` is not an email address ({e})", s.from))
    })?;
    let mut b = Message::builder().from(from).subject(email.subject.clone()).message_id(email.message_id.clone());
    for a in &email.to {
        b = b.to(mailbox("to", a)?);
    }
    for a in &email.cc {
        b = b.cc(mailbox("cc", a)?);
    }
    for a in &email.bcc {
        b = b.bcc(mailbox("bcc", a)?);
    }
    let text = SinglePart::plain(email.body.clone());
    let built = if email.attachments.is_empty() {
        b.singlepart(text)
    } else {
        let mut parts = MultiPart::mixed().singlepart(text);
        for a in &email.attachments {
            let ct = ContentType::parse(&a.content_type).map_err(|e| {
                ConnectionError::Input(format!(
                    "attachment `{}`: `{}` is not a content type ({e})",
                    a.filename, a.content_type
                ))
            })?;
            parts = parts.singlepart(lettre::message::Attachment::new(a.filename.clone()).body(a.bytes.clone(), ct));
        }
        b.multipart(parts)
    };
    built.map_err(|e| ConnectionError::Input(format!("the email cannot be built: {e}")))
}

/// How a session with `s` is secured: TLS parameters for the server's host name, trusting the
/// connection's `ca_file` alone when it has one (the system's roots otherwise).
fn tls_parameters(s: &SmtpSettings, r: &Resolved, at: &str) -> Result<TlsParameters, ConnectionError> {
    let mut builder = TlsParameters::builder(s.host.clone());
    if let Some(file) = &s.ca_file {
        let certs = crate::tls::ca_certificates(Path::new(file))
            .map_err(|why| ConnectionError::Input(format!("connection `{}`: {why}", r.connection.name)))?;
        builder = builder.certificate_store(CertificateStore::None);
        for cert in certs {
            let cert = Certificate::from_der(cert.to_vec()).map_err(|e| {
                ConnectionError::Input(format!("connection `{}`: ca_file `{file}`: {e}", r.connection.name))
            })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build_rustls().map_err(|e| {
        ConnectionError::Input(format!("{at}: TLS setup for connection `{}`: {}", r.connection.name, describe(&e)))
    })
}

/// One SMTP session: connect, EHLO, (STARTTLS,) (AUTH,) and `message` if given, QUIT.
async fn transact(s: &SmtpSettings, r: &Resolved, message: Option<&Message>) -> Result<Option<Sent>, ConnectionError> {
    let at = format!("smtp {}:{}", s.host, s.port());
    if let Some(why) = s.cleartext_login() {
        return Err(ConnectionError::Input(format!("connection `{}`: security: {why}", r.connection.name)));
    }
    let hello = ClientId::default();
    // Read before connecting: a bad ca_file is the settings' fault, said before any network.
    let tls = match s.security {
        SmtpSecurity::None => None,
        SmtpSecurity::Starttls | SmtpSecurity::Tls => Some(tls_parameters(s, r, &at)?),
    };
    let implicit = if s.security == SmtpSecurity::Tls { tls.clone() } else { None };
    let mut conn =
        AsyncSmtpConnection::connect_tokio1((s.host.as_str(), s.port()), Some(CONNECT_TIMEOUT), &hello, implicit, None)
            .await
            .map_err(|e| failure(s, &at, "connecting", e))?;
    if s.security == SmtpSecurity::Starttls {
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(ConnectionError::Untrusted(format!(
                "{at}: the server does not offer STARTTLS (use security=tls, or none only for a relay on this machine)"
            )));
        }
        let params = tls.expect("TLS parameters for starttls");
        conn.starttls(params, &hello).await.map_err(|e| failure(s, &at, "STARTTLS", e))?;
    }
    if s.security != SmtpSecurity::None && !conn.is_encrypted() {
        // Not reachable with lettre as it is; the guarantee must not rest on that.
        conn.abort().await;
        return Err(ConnectionError::Untrusted(format!("{at}: the session is not encrypted")));
    }
    if let Some(user) = &s.user {
        let mechanisms = [Mechanism::Plain, Mechanism::Login];
        if conn.server_info().get_auth_mechanism(&mechanisms).is_none() {
            conn.abort().await;
            let session = if conn.is_encrypted() { "" } else { " on this unencrypted session" };
            return Err(ConnectionError::Refused(format!(
                "{at} offers no authentication Tollgate speaks (PLAIN or LOGIN){session}, so `{user}` of connection `{}` cannot log in",
                r.connection.name
            )));
        }
        let password = r.credential.as_ref().map(|c| c.to_string()).unwrap_or_default();
        let credentials = Credentials::new(user.clone(), password);
        if let Err(e) = conn.auth(&mechanisms, &credentials).await {
            conn.abort().await;
            return Err(if e.is_permanent() || e.is_client() {
                ConnectionError::Refused(format!(
                    "{at} refused the login of `{user}` for connection `{}`: {}",
                    r.connection.name,
                    describe(&e)
                ))
            } else {
                classify(&at, "AUTH", e)
            });
        }
    }
    let sent = match message {
        None => None,
        Some(m) => {
            let envelope = m.envelope();
            let response = conn.send(envelope, &m.formatted()).await.map_err(|e| classify(&at, "sending", e))?;
            let message_id = m.headers().get_raw("Message-ID").map(str::to_string).unwrap_or_default();
            Some(Sent {
                message_id,
                recipients: envelope.to().iter().map(ToString::to_string).collect(),
                response: format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" ")),
                at_ms: now_ms(),
            })
        }
    };
    let _ = conn.quit().await;
    Ok(sent)
}

/// lettre's error with its causes (the useful part: "connection refused", the server's text),
/// each said once: lettre's own message already ends with its direct cause.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

/// A failed connect or STARTTLS: the server's certificate refused (or no TLS where it must be)
/// is [`ConnectionError::Untrusted`]; anything else as [`classify`] says.
fn failure(s: &SmtpSettings, at: &str, stage: &str, e: lettre::transport::smtp::Error) -> ConnectionError {
    let ca_file = s.ca_file.as_deref().map(Path::new);
    match crate::tls::refusal(&e, &s.host, ca_file, s.security == SmtpSecurity::Tls) {
        Some(why) => ConnectionError::Untrusted(format!("{at}: {stage}: the TLS handshake failed: {why}")),
        None => classify(at, stage, e),
    }
}

/// A permanent (5xx) answer is a rejection; anything else may pass on another attempt.
fn classify(at: &str, stage: &str, e: lettre::transport::smtp::Error) -> ConnectionError {
    if e.is_permanent() {
        ConnectionError::Rejected(format!("{at} refused ({stage}): {}", describe(&e)))
    } else {
        ConnectionError::Failed(format!("{at}: {stage} failed: {}", describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_stable_per_key_and_uses_the_senders_domain() {
        let wf = WorkflowId::new("wf");
        let a = message_id_for(&wf, "run1.send", "Ops <ops@example.com>");
        assert_eq!(a, message_id_for(&wf, "run1.send", "Ops <ops@example.com>"));
        assert_ne!(a, message_id_for(&wf, "run2.send", "Ops <ops@example.com>"));
        assert!(a.starts_with("<tg.") && a.ends_with("@example.com>"), "{a}");
    }
}
