//! The trigger commands with real processes: `tollgate triggers run` serves a webhook; its
//! secret comes from `tollgate triggers secret`; after the process stops, `triggers list`,
//! `triggers history` and `runs show` tell what happened from the store.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_engine::trigger::signature::sign_hex;

const SPEC: &str = r#"
id: cli-flow
owner: ops
parameters:
  who: { type: string, required: true }
steps:
  - { id: greet, type: code, script: "return 'hi ' + input.w", inputs: { w: "${{ params.who }}" } }
triggers:
  - { id: hook, webhook: {}, params: { who: "${{ payload.body.who }}" } }
"#;

const DEADLINE: Duration = Duration::from_secs(60);

fn tollgate(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TOLLGATE_")) {
        c.env_remove(k);
    }
    c.arg("--data-dir").arg(data).env("TOLLGATE_HTTP_ADDR", "127.0.0.1:0");
    c
}

fn output(data: &Path, args: &[&str]) -> (bool, String) {
    let out = tollgate(data).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_run_then_list_history_and_runs_show_tell_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spec = dir.path().join("cli.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let mut child = tollgate(&data)
        .arg("triggers")
        .arg("run")
        .arg(&spec)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let addr = until("the serve line", || {
        lines.lock().unwrap().iter().find_map(|l| {
            l.strip_prefix("tollgate serve: admin API on http://").map(|r| r.split(' ').next().unwrap().to_string())
        })
    });
    assert!(lines.lock().unwrap().iter().any(|l| l.contains("1 triggers")), "{:?}", lines.lock().unwrap());
    let secret = until("the trigger's secret", || {
        let (ok, out) = output(&data, &["triggers", "secret", "cli-flow", "hook"]);
        ok.then(|| out.lines().next().unwrap().trim().to_string())
    });
    assert!(secret.starts_with("whsec_"), "{secret}");
    let body = br#"{"who":"Ada"}"#;
    let client = reqwest::Client::new();
    let mut run = String::new();
    for expected in [202, 200] {
        let resp = client
            .post(format!("http://{addr}/hooks/cli-flow/hook"))
            .header("X-Signature-256", sign_hex(secret.as_bytes(), body))
            .header("Idempotency-Key", "cli-1")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), expected);
        let v: serde_json::Value = resp.json().await.unwrap();
        if expected == 202 {
            run = v["run"].as_str().unwrap().to_string();
        }
    }
    until("the run succeeds", || {
        let (_, out) = output(&data, &["runs", "show", &run, "--json"]);
        out.contains("\"status\": \"succeeded\"").then_some(())
    });
    // Stop the engine the way a service manager does; the triggers' state is saved on the way out.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status:?}\n{}", lines.lock().unwrap().join("\n"));

    let (ok, show) = output(&data, &["runs", "show", &run]);
    assert!(ok && show.contains("started by webhook trigger `hook` (fire "), "{show}");
    let (ok, list) = output(&data, &["triggers", "list", "--json"]);
    assert!(ok, "{list}");
    let states: serde_json::Value = serde_json::from_str(&list).unwrap();
    let hook = &states.as_array().unwrap()[0];
    assert_eq!(
        (hook["workflow"].as_str(), hook["trigger"].as_str(), hook["kind"].as_str()),
        (Some("cli-flow"), Some("hook"), Some("webhook"))
    );
    assert_eq!(
        (
            hook["health"]["started"].as_u64(),
            hook["health"]["duplicates"].as_u64(),
            hook["health"]["connected"].as_bool()
        ),
        (Some(1), Some(1), Some(false)),
        "{hook}"
    );
    let (ok, history) = output(&data, &["triggers", "history", "cli-flow"]);
    assert!(
        ok && history.contains("started")
            && history.contains(&format!("run {run}"))
            && history.contains("skipped_duplicate"),
        "{history}"
    );
    let (ok, text) = output(&data, &["triggers", "list"]);
    assert!(ok && text.contains("cli-flow") && text.contains("webhook"), "{text}");
}
