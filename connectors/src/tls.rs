//! TLS as the mail clients (IMAP sessions, SMTP connections) use it: the CA certificates of a
//! `ca_file` (a private CA trusted instead of the public roots), and a failed handshake said
//! plainly — why the server's certificate was refused, or that the port does not speak TLS.

use std::path::Path;

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::{CertificateError, Error as Rustls};

/// The CA certificates of `path` (PEM, at least one), or why they cannot be used.
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("ca_file `{shown}` cannot be read as PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("ca_file `{shown}` holds no PEM certificate"));
    }
    Ok(certs)
}

/// Why a handshake with `host` failed, when it is the server's certificate or the server not
/// speaking TLS (`implicit`: TLS from the first byte was expected on the port): a sentence
/// starting with `the server…`. `None` for other failures (a reset, a timeout).
pub fn refusal(
    error: &(dyn std::error::Error + 'static),
    host: &str,
    ca_file: Option<&Path>,
    implicit: bool,
) -> Option<String> {
    let found = rustls_error(error)?;
    Some(match found {
        Rustls::InvalidCertificate(CertificateError::UnknownIssuer) => match ca_file {
            Some(f) => format!("the server's certificate is not issued by a CA of ca_file `{}`", f.display()),
            None => {
                "the server's certificate is not issued by a public CA (set `ca_file` to trust a private CA)".into()
            }
        },
        Rustls::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            format!("the server's certificate is not issued for the host name `{host}`")
        }
        Rustls::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        Rustls::InvalidCertificate(other) => format!("the server's certificate was refused ({other:?})"),
        Rustls::InvalidMessage(_) if implicit => {
            "the server does not speak TLS on this port (TLS from the first byte is expected)".into()
        }
        Rustls::InvalidMessage(_) => "the server does not speak TLS after agreeing to".into(),
        _ => return None,
    })
}

/// The rustls error somewhere in `error`'s chain (inside `io::Error`s too, whose `source` skips
/// the error they wrap).
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Rustls> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Rustls>() {
            return Some(r);
        }
        if let Some(r) =
            e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|inner| rustls_error(inner))
        {
            return Some(r);
        }
        next = e.source();
    }
    None
}
