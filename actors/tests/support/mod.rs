//! What the process tests share: the `tollgate` binary on an embedded data dir, starting a run
//! in a child process, and waiting on a condition with a deadline.

use std::path::Path;
use std::process::{Child, Command, Stdio};
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
    let mut child = change(tollgate(data)).arg("run").arg(file).arg("--json").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
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
