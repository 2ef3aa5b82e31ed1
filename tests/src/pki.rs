//! Throw-away certificates for TLS tests (rcgen): a private CA, and server certificates it
//! issues for given host names. Nothing here is trusted by anything but the test that made it.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A private certificate authority.
pub struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A server certificate and its private key, both PEM.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// The CA's certificate (what a client that trusts this CA loads).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Write the CA's certificate to `path` (a client's `ca_file`).
    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.pem).expect("write CA certificate");
    }

    /// A server certificate for `names` (host names or IP addresses), issued by this CA.
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("server params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("server"));
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        ServerCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}
