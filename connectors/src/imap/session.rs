//! Connecting to an IMAP server: TCP, optional TLS from the first byte (rustls; the server's
//! certificate is verified against the public web PKI roots, or against the CA certificates of
//! a `ca_file` instead), login, and every network step under a timeout so a silent server is an
//! error, not a hang. With TLS on, a handshake that fails — an untrusted issuer, a certificate
//! for another host name, a server that does not speak TLS — is an error naming why; there is
//! never a fallback to plaintext.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_imap::Session;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::{ImapError, ImapSettings};

/// The byte stream under a session: plain TCP or TLS.
pub trait ImapIo: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> ImapIo for T {}

pub type ImapSession = Session<Box<dyn ImapIo>>;

/// How a session is secured: `None` is plaintext (a local server only); `Some` is TLS from the
/// first byte, trusting the CA certificates of `ca_file` or, without one, the public web roots.
#[derive(Clone, Copy, Debug)]
pub struct Tls<'a> {
    pub ca_file: Option<&'a Path>,
}

/// Run `f` under the settings' command timeout.
pub async fn timed<T, E: Into<ImapError>>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Silent(format!("{what}: no answer within {}", humantime::format_duration(limit)))),
    }
}

/// The roots a certificate must chain to: the CA certificates of `ca_file`, or the web's.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, ImapError> {
    let Some(path) = ca_file else {
        return Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
    };
    let mut store = RootCertStore::empty();
    for (i, cert) in crate::tls::ca_certificates(path).map_err(ImapError::Config)?.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            ImapError::Config(format!(
                "ca_file `{}`: certificate {} is not a usable CA certificate: {e}",
                path.display(),
                i + 1
            ))
        })?;
    }
    Ok(store)
}

fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, ImapError> {
    let config = ClientConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A failed handshake, said plainly: why the certificate was refused, or that the other side
/// does not speak TLS (then the server is not trusted: [`ImapError::Untrusted`]).
fn handshake_error(host: &str, port: u16, tls: Tls<'_>, e: std::io::Error) -> ImapError {
    match crate::tls::refusal(&e, host, tls.ca_file, true) {
        Some(why) => ImapError::Untrusted(format!("handshake with {host}:{port} failed: {e}: {why}")),
        None => ImapError::Tls(format!("handshake with {host}:{port} failed: {e}")),
    }
}

/// Connect, (TLS,) log in.
pub async fn connect(s: &ImapSettings) -> Result<ImapSession, ImapError> {
    let tls = s.tls.then_some(Tls { ca_file: s.ca_file.as_deref() });
    open(&s.host, s.port, tls, &s.user, &s.password, s.command_timeout).await
}

/// Connect to `host:port` (TLS from the first byte with `tls`), read the greeting and log in,
/// each step under `limit`: what the IMAP trigger and an `imap` connection both do.
pub async fn open(
    host: &str,
    port: u16,
    tls: Option<Tls<'_>>,
    user: &str,
    password: &str,
    limit: Duration,
) -> Result<ImapSession, ImapError> {
    // A bad ca_file is the settings' fault: say so before touching the network.
    let connector = tls.map(|t| tls_connector(t.ca_file)).transpose()?;
    let tcp = timed("connect", limit, TcpStream::connect((host, port))).await?;
    tcp.set_nodelay(true).ok();
    let stream: Box<dyn ImapIo> = match (tls, connector) {
        (Some(t), Some(connector)) => {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| ImapError::Config(format!("`{host}` is not a TLS server name: {e}")))?;
            let handshake = async { connector.connect(name, tcp).await.map_err(|e| handshake_error(host, port, t, e)) };
            Box::new(timed("TLS handshake", limit, handshake).await?)
        }
        _ => Box::new(tcp),
    };
    let mut client = async_imap::Client::new(stream);
    // The server speaks first.
    timed("greeting", limit, async { client.read_response().await.map_err(ImapError::from)?.ok_or(ImapError::Closed) })
        .await?;
    timed("login", limit, async {
        client.login(user, password).await.map_err(|(e, _)| ImapError::Login(e.to_string()))
    })
    .await
}
