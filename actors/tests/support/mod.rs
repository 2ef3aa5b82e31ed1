//! What the process tests share: the `tollgate` binary on an embedded data dir, starting a run
//! in a child process, waiting on a condition with a deadline, and [`Process`] — a `tollgate`
//! child (serve, worker, triggers run) whose stderr is kept for failure messages. A test binary
//! that uses only part of this declares `#[allow(dead_code)] mod support;`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `tollgate` binary on the embedded backend in `data`, with a fast reconcile tick.
pub fn tollgate(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.arg("--data-dir").arg(data).env_remove("TOLLGATE_BACKEND").env("TOLLGATE_RECONCILE_INTERVAL", "100ms");
    c
}

/// Start `tollgate run FILE --json` and read its run id from stderr.
#[allow(dead_code)]
pub fn start_run(data: &Path, file: &Path) -> (Child, String) {
    start_run_with(data, file, |c| c)
}

/// [`start_run`] with the command changed first (environment, flags).
pub fn start_run_with(data: &Path, file: &Path, change: impl FnOnce(Command) -> Command) -> (Child, String) {
    let mut child = change(tollgate(data))
        .arg("run")
        .arg(file)
        .arg("--json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("tollgate: run ").and_then(|l| l.strip_suffix(" started")) {
                let _ = tx.send(id.to_string());
            }
        }
    });
    let run = rx.recv_timeout(Duration::from_secs(60)).expect("the run prints its id");
    (child, run)
}

/// Poll `cond` until it holds; panic naming `what` after `deadline`.
#[allow(dead_code)]
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `tollgate` child process; its stderr is kept for the failure message. Killed on drop.
pub struct Process {
    pub name: String,
    pub child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// `tollgate ARGS…` in `dir`, with none of the test's own `TOLLGATE_*` variables but `env`.
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, String)], dir: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TOLLGATE_")) {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tollgate");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self { name: name.to_string(), child, stderr }
    }

    /// Whether a stderr line so far starts with `prefix`.
    pub fn has_line(&self, prefix: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.starts_with(prefix))
    }

    /// Waits (up to `deadline`) for a stderr line starting with `prefix` and returns the rest of it.
    pub fn wait_line(&self, prefix: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            if let Some(rest) = self.stderr.lock().unwrap().iter().find_map(|l| l.strip_prefix(prefix)) {
                return rest.to_string();
            }
            self.assert_alive();
            assert!(Instant::now() < end, "{}: no line `{prefix}…`:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Not exited (nor a zombie waiting to be reaped).
    pub fn assert_alive(&self) {
        let alive = std::path::Path::new(&format!("/proc/{}", self.child.id())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).is_ok_and(|s| s.contains(") Z "));
        assert!(alive, "{} exited:\n{}", self.name, self.log());
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
