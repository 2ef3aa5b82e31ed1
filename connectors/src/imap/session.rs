//! Connecting to an IMAP server: TCP, optional TLS (rustls with the webpki roots), login, and
//! every network step under a timeout so a silent server is an error, not a hang.

use std::sync::Arc;
use std::time::Duration;

use async_imap::Session;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{ImapError, ImapSettings};

/// The byte stream under a session: plain TCP or TLS.
pub trait ImapIo: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> ImapIo for T {}

pub type ImapSession = Session<Box<dyn ImapIo>>;

/// Run `f` under the settings' command timeout.
pub async fn timed<T, E: Into<ImapError>>(what: &str, limit: Duration, f: impl std::future::Future<Output = Result<T, E>>) -> Result<T, ImapError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Silent(format!("{what}: no answer within {}", humantime::format_duration(limit)))),
    }
}

fn tls_connector() -> TlsConnector {
    let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let config = ClientConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Connect, (TLS,) log in.
pub async fn connect(s: &ImapSettings) -> Result<ImapSession, ImapError> {
    open(&s.host, s.port, s.tls, &s.user, &s.password, s.command_timeout).await
}

/// Connect to `host:port` (TLS from the first byte if `tls`), read the greeting and log in, each
/// step under `limit`: what the IMAP trigger and an `imap` connection both do.
pub async fn open(host: &str, port: u16, tls: bool, user: &str, password: &str, limit: Duration) -> Result<ImapSession, ImapError> {
    let tcp = timed("connect", limit, TcpStream::connect((host, port))).await?;
    tcp.set_nodelay(true).ok();
    let stream: Box<dyn ImapIo> = if tls {
        let name = ServerName::try_from(host.to_string()).map_err(|e| ImapError::Config(format!("`{host}` is not a TLS server name: {e}")))?;
        Box::new(timed("TLS handshake", limit, tls_connector().connect(name, tcp)).await?)
    } else {
        Box::new(tcp)
    };
    let mut client = async_imap::Client::new(stream);
    // The server speaks first.
    timed("greeting", limit, async { client.read_response().await.map_err(ImapError::from)?.ok_or(ImapError::Closed) }).await?;
    timed("login", limit, async { client.login(user, password).await.map_err(|(e, _)| ImapError::Login(e.to_string())) }).await
}
