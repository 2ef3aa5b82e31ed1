//! A real IMAP server for tests: Debian's dovecot (installed by `scripts/setup`), one
//! throw-away instance per test on a free loopback port, with plaintext login for
//! `ops@example.test` / `secret` and maildir storage in a temp dir (recipe:
//! `../shared/recipes/imap-dovecot.md`). [`Dovecot::start_tls`] adds an implicit-TLS listener
//! (993-style, on another free port) serving a certificate the test issued ([`crate::pki`]).
//! It can be stopped and started again on the same ports and data, and mail can be dropped
//! straight into the maildir while it is down (as a local delivery agent would). The helpers
//! below (settings, append, search, folder sizes, test messages) are what the IMAP tests share.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tollgate_connectors::imap::{AfterFire, ImapSettings, connect};

use crate::pki::ServerCert;

pub const USER: &str = "ops@example.test";
pub const PASSWORD: &str = "secret";

pub struct Dovecot {
    dir: TempDir,
    /// The plaintext IMAP port.
    pub port: u16,
    /// The implicit-TLS port (IMAPS), with [`Dovecot::start_tls`].
    pub tls_port: Option<u16>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Dovecot {
    /// Configure and start an instance. Panics (naming the log) if it does not come up.
    pub fn start() -> Self {
        Self::configure(None)
    }

    /// An instance that also serves IMAP over TLS from the first byte on `tls_port`, with
    /// `cert` (and still plaintext IMAP on `port`, for the tests' own helpers).
    pub fn start_tls(cert: &ServerCert) -> Self {
        Self::configure(Some(cert))
    }

    fn configure(cert: Option<&ServerCert>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let tls_port = cert.map(|_| free_port());
        let d = dir.path().display().to_string();
        let (ssl, imaps) = match (cert, tls_port) {
            (Some(cert), Some(tls_port)) => {
                std::fs::write(dir.path().join("server.pem"), &cert.cert_pem).expect("write certificate");
                std::fs::write(dir.path().join("server.key"), &cert.key_pem).expect("write key");
                (
                    format!(
                        "ssl = yes\nssl_cert = <{d}/server.pem\nssl_key = <{d}/server.key\nssl_min_protocol = TLSv1.2"
                    ),
                    format!("address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes"),
                )
            }
            _ => ("ssl = no".to_string(), "port = 0".to_string()),
        };
        let conf = format!(
            r#"protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
first_valid_gid = 1
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
"#
        );
        std::fs::write(dir.path().join("dovecot.conf"), conf).expect("write conf");
        std::fs::write(dir.path().join("users"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).expect("write users");
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        run("chmod", &["755", &d]);
        run("chown", &["-R", "dovecot:dovecot", &format!("{d}/mail")]);
        let me = Self { dir, port, tls_port };
        me.start_again();
        me
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("run/master.pid")).ok()?.trim().parse().ok()
    }

    /// Start (again) on the same port and data; returns once it accepts connections.
    pub fn start_again(&self) {
        let conf = self.dir.path().join("dovecot.conf");
        let status =
            Command::new("dovecot").arg("-c").arg(&conf).status().expect("dovecot runs (scripts/setup installs it)");
        assert!(status.success(), "dovecot did not start; see {}", self.dir.path().join("dovecot.log").display());
        let end = Instant::now() + Duration::from_secs(20);
        for port in std::iter::once(self.port).chain(self.tls_port) {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < end, "dovecot never listened on {port}; see its log");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The dovecot log (logins say whether they came over TLS).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Consumer settings for the plaintext port: the INBOX, flagged `$TollgateFired` once
    /// recorded, IDLE with a 2 s liveness check and short timeouts and backoff.
    pub fn settings(&self) -> ImapSettings {
        ImapSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            tls: false,
            ca_file: None,
            user: USER.into(),
            password: PASSWORD.into(),
            mailbox: "INBOX".into(),
            after: AfterFire::Flag("$TollgateFired".into()),
            quarantine: "Quarantine".into(),
            idle: true,
            poll_interval: Duration::from_millis(500),
            liveness_interval: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            backoff: (Duration::from_millis(100), Duration::from_secs(1)),
        }
    }

    /// Append a message to `folder` (over the plaintext port).
    pub async fn append(&self, folder: &str, raw: &[u8]) {
        let mut s = connect(&self.settings()).await.expect("connect to append");
        s.append(folder, None, None, raw).await.expect("append");
        s.logout().await.ok();
    }

    /// UIDs in `folder` matching an IMAP search, ascending.
    pub async fn search(&self, folder: &str, query: &str) -> Vec<u32> {
        let mut s = connect(&self.settings()).await.expect("connect to search");
        s.select(folder).await.expect("select");
        let mut uids: Vec<u32> = s.uid_search(query).await.expect("search").into_iter().collect();
        uids.sort_unstable();
        s.logout().await.ok();
        uids
    }

    /// How many messages `folder` holds (0 if it does not exist).
    pub async fn folder_len(&self, folder: &str) -> usize {
        let mut s = connect(&self.settings()).await.expect("connect");
        let n = s.select(folder).await.map(|m| m.exists as usize).unwrap_or(0);
        s.logout().await.ok();
        n
    }

    /// Stop it (the master and every process it started); returns once it is gone.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        run("kill", &[&pid.to_string()]);
        let end = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists()
            || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        {
            assert!(Instant::now() < end, "dovecot {pid} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drop a message into the user's INBOX maildir directly (the server may be down).
    pub fn deliver_to_maildir(&self, raw: &[u8]) {
        let box_dir = self.dir.path().join("mail").join(USER);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(box_dir.join(sub)).expect("maildir");
        }
        let name = format!(
            "{}.M{}P{}.test",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            ulid::Ulid::generate(),
            std::process::id()
        );
        let tmp: PathBuf = box_dir.join("tmp").join(&name);
        std::fs::write(&tmp, raw).expect("write mail");
        std::fs::rename(&tmp, box_dir.join("new").join(&name)).expect("deliver mail");
        run("chown", &["-R", "dovecot:dovecot", &self.dir.path().join("mail").display().to_string()]);
    }
}

/// A message to `USER` with `message_id` and `subject`, a text part and one PDF attachment.
pub fn mail(message_id: &str, subject: &str) -> Vec<u8> {
    format!("From: Lead <lead@example.test>\r\nTo: {USER}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nPlease call.\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"brief.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n").into_bytes()
}

/// A message that cannot be parsed: multipart without a boundary.
pub const BROKEN: &[u8] = b"From: x@example.test\r\nSubject: broken\r\nMessage-ID: <broken-1@example.test>\r\nContent-Type: multipart/mixed\r\n\r\nno boundary anywhere\r\n";

/// Set the password variable the test specs' IMAP triggers name (`TOLLGATE_TEST_IMAP_PASSWORD`).
pub fn set_password_env() {
    // SAFETY: every test sets the same value, before any trigger reads it.
    unsafe { std::env::set_var(PASSWORD_ENV, PASSWORD) };
}

/// The variable [`set_password_env`] sets.
pub const PASSWORD_ENV: &str = "TOLLGATE_TEST_IMAP_PASSWORD";

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}
