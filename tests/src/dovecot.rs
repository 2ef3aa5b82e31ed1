//! A real IMAP server for tests: Debian's dovecot (installed by `scripts/setup`), one
//! throw-away instance per test on a free loopback port, with plaintext login for
//! `ops@example.test` / `secret` and maildir storage in a temp dir (recipe:
//! `../shared/recipes/imap-dovecot.md`). It can be stopped and started again on the same port
//! and data, and mail can be dropped straight into the maildir while it is down (as a local
//! delivery agent would).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const USER: &str = "ops@example.test";
pub const PASSWORD: &str = "secret";

pub struct Dovecot {
    dir: TempDir,
    pub port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Dovecot {
    /// Configure and start an instance. Panics (naming the log) if it does not come up.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
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
    port = 0
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
        let me = Self { dir, port };
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
        let status = Command::new("dovecot").arg("-c").arg(&conf).status().expect("dovecot runs (scripts/setup installs it)");
        assert!(status.success(), "dovecot did not start; see {}", self.dir.path().join("dovecot.log").display());
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "dovecot never listened on {}; see its log", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it (the master and every process it started); returns once it is gone.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        run("kill", &[&pid.to_string()]);
        let end = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
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
        let name = format!("{}.M{}P{}.test", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(), ulid::Ulid::generate(), std::process::id());
        let tmp: PathBuf = box_dir.join("tmp").join(&name);
        std::fs::write(&tmp, raw).expect("write mail");
        std::fs::rename(&tmp, box_dir.join("new").join(&name)).expect("deliver mail");
        run("chown", &["-R", "dovecot:dovecot", &self.dir.path().join("mail").display().to_string()]);
    }
}

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
