//! A `redis-server` of a test's own: a free port, a temp dir, AOF with `appendfsync always`, so
//! a test can shut it down (`SHUTDOWN`) and start it again on the same port and data.
//!
//! Shared with the end-to-end tests (`actors/tests/fleet.rs` includes this file), so it uses
//! the standard library only: it speaks just enough RESP for `PING` and `SHUTDOWN`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start (including an AOF load) or a shutdown may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A running `redis-server` child; killed when dropped.
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port in a fresh temp dir; panics (failing the test) if
    /// `redis-server` is missing or does not answer.
    pub fn start() -> Self {
        // A port found free can be taken by someone else before the server binds it; then the
        // server exits at once and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self { dir: tempfile::tempdir().expect("temp dir for redis-server"), port, child: None };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `SHUTDOWN` (the AOF is already fsynced), then waits for the process to exit.
    pub fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The server closes the connection without a reply when it shuts down.
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.write_all(b"*1\r\n$8\r\nSHUTDOWN\r\n");
            let _ = s.read(&mut [0; 64]);
        }
        let end = Instant::now() + DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("redis-server on port {} did not shut down", self.port);
                }
            }
        }
    }

    /// Starts the server again on the same port and data directory; waits until it answers
    /// (its AOF loaded).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "shut the server down first");
        assert!(self.spawn(), "redis-server did not restart on port {}", self.port);
    }

    /// Starts the child and waits for `PONG`; false if it exited (port taken).
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test (scripts/setup installs it)");
        self.child = Some(child);
        let end = Instant::now() + DEADLINE;
        loop {
            if ping(self.port) {
                return true;
            }
            let child = self.child.as_mut().expect("just spawned");
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            assert!(Instant::now() < end, "redis-server on port {} did not answer", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free local port").port()
}

/// Whether the server answers `PING` with `PONG` (not `-LOADING` while it reads its AOF).
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0; 16];
    matches!(s.read(&mut reply), Ok(n) if reply[..n].starts_with(b"+PONG"))
}
