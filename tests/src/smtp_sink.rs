//! A real local SMTP server for tests: Debian's `python3-aiosmtpd` (installed by
//! `scripts/setup`) delivering every message into a maildir that tests read. [`SmtpSink::start`]
//! is a plaintext sink; [`SmtpSink::start_with`] adds STARTTLS or implicit TLS (SMTPS) with a
//! certificate the test issued ([`crate::pki`]) and AUTH PLAIN/LOGIN checked against a user and
//! password. The server (`smtp_sink.py`) is permissive on purpose — AUTH is offered on a
//! plaintext session too, mail is taken without STARTTLS — and logs every AUTH attempt and
//! message with whether its session was encrypted ([`SmtpSink::auths`]), so a test sees what
//! the client did rather than what the server let it do.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pki::ServerCert;

/// How the sink's sessions are secured.
pub enum SinkSecurity<'a> {
    None,
    /// STARTTLS offered, with this certificate.
    Starttls(&'a ServerCert),
    /// TLS from the first byte (SMTPS), with this certificate.
    Tls(&'a ServerCert),
}

/// One AUTH attempt the sink saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthAttempt {
    pub mechanism: String,
    pub user: String,
    pub ok: bool,
    /// Whether the session was encrypted when the credentials arrived.
    pub tls: bool,
}

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// A plaintext sink without AUTH on a free loopback port; fails loudly when
    /// python3-aiosmtpd is missing.
    pub fn start() -> Self {
        Self::start_with(SinkSecurity::None, None)
    }

    /// A sink secured as `security`, requiring AUTH as `login` (user, password) if given.
    pub fn start_with(security: SinkSecurity<'_>, login: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        // Debian's interpreter, where python3-aiosmtpd lives (a `python3` earlier on PATH, e.g.
        // pyenv's, does not see Debian's packages).
        let python = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let mut cmd = Command::new(python);
        cmd.args([
            "-c",
            include_str!("smtp_sink.py"),
            "--port",
            &port.to_string(),
            "--maildir",
            &path("mail"),
            "--log",
            &path("sink.log"),
        ]);
        let cert = match security {
            SinkSecurity::None => None,
            SinkSecurity::Starttls(c) => Some(("starttls", c)),
            SinkSecurity::Tls(c) => Some(("tls", c)),
        };
        if let Some((mode, c)) = cert {
            std::fs::write(dir.path().join("server.pem"), &c.cert_pem).expect("write certificate");
            std::fs::write(dir.path().join("server.key"), &c.key_pem).expect("write key");
            cmd.args(["--security", mode, "--cert", &path("server.pem"), "--key", &path("server.key")]);
        }
        if let Some((user, password)) = login {
            cmd.args(["--user", user]).env("SINK_PASSWORD", password);
        }
        // Its warnings go to a file: a pipe nobody reads could fill up and stall the server.
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("python3 runs (scripts/setup installs python3-aiosmtpd)");
        let mut sink = Self { child, port, dir };
        let end = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sink.child.try_wait() {
                let err = std::fs::read_to_string(sink.dir.path().join("stderr.log")).unwrap_or_default();
                panic!("the SMTP sink exited ({status}); is python3-aiosmtpd installed (scripts/setup)? {err}");
            }
            assert!(Instant::now() < end, "the SMTP sink did not listen on port {port} within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message delivered so far, as text (quoted-printable soft line breaks joined).
    pub fn messages(&self) -> Vec<String> {
        let dir: PathBuf = self.dir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .map(|m| m.replace("=\r\n", "").replace("=\n", "").replace("=3D", "="))
            .collect()
    }

    /// Every AUTH attempt so far, in order.
    pub fn auths(&self) -> Vec<AuthAttempt> {
        self.log()
            .into_iter()
            .filter(|e| e["event"] == "auth")
            .map(|e| AuthAttempt {
                mechanism: e["mechanism"].as_str().unwrap_or_default().to_string(),
                user: e["user"].as_str().unwrap_or_default().to_string(),
                ok: e["ok"] == true,
                tls: e["tls"] == true,
            })
            .collect()
    }

    /// What the sink logged (one JSON object per AUTH attempt or message).
    pub fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("sink.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("the sink logs JSON lines"))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
