//! The web console in a real browser: Debian's `chromium`, driven by `playwright-core` (both
//! installed by `scripts/setup`), against a real `tollgate serve`. The browser side is
//! `tests/browser/console.mjs`; it asks this test to act on the server (`@@ start approval`,
//! `@@ restart`…) and this test answers on its stdin. Users: alice (group `ops`, which owns the
//! workflows; she starts the runs and decides in the browser) and bob (group `legal`, who must
//! see none of it). Screenshots are written to `tests/browser/screenshots/` (or
//! `TOLLGATE_SCREENSHOT_DIR`).

#[allow(dead_code)] // the helpers other process tests use
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "console-test-token-7f3a";

/// A `notify` step telling the group alice is in.
const NOTIFY: &str = r#"
id: console-notify
owner: ops
steps:
  - { id: tell, type: platform, action: notify, with: { to: ops, subject: "Invoices ready", message: "April invoices are ready for review" } }
"#;

const APPROVAL: &str = r#"
id: console-approval
owner: ops
steps:
  - { id: draft, type: code, script: "return { letter: 'Dear client, please find our terms.' }" }
  - { id: approve_letter, type: approval, needs: [draft], question: "Send the engagement letter to Acme Ltd?", inputs: { letter: "${{ steps.draft.output.letter }}" } }
  - { id: send, type: code, needs: [approve_letter], script: "return { sent: true }" }
"#;

const BUDGET: &str = r#"
id: console-budget
owner: ops
budget: { max_cost: 1.0, currency: USD }
steps:
  - { id: research, type: code, script: "return 1", cost: 0.7 }
  - { id: draft, type: code, script: "return 2", cost: 0.7, needs: [research] }
"#;

/// The codename is assembled in the script, so the spec never holds it whole.
const GUIDANCE: &str = r#"
id: console-guidance
owner: ops
gates:
  rules:
    - { id: codename, category: codename, action: block, pattern: "\\bPROJECT-[A-Z]{4}\\b", positive: ["launch PROJECT-ABCD"], negative: ["project abcd"] }
  on_block: guidance
steps:
  - id: fetch
    type: code
    script: "return { memo: 'Board pack: the launch of PROJECT-' + 'LYNX moves to May; questions to the office.' }"
  - { id: file, type: code, needs: [fetch], inputs: { memo: "${{ steps.fetch.output.memo }}" }, script: "return { filed: input.memo.length }" }
"#;

/// A workflow of the server's catalogue (a configured file), started from the console's form.
const TALLY: &str = r#"
id: console-tally
owner: ops
description: Count a client's invoices above a threshold.
parameters:
  client: { type: string, required: true, description: The client's name }
  threshold: { type: integer, default: 100, description: Smallest amount counted }
  amounts: { type: array, default: [50, 150, 300], description: Invoice amounts }
  urgent: { type: boolean, default: false, description: Flag the report as urgent }
steps:
  - id: count
    type: code
    inputs: { client: "${{ params.client }}", threshold: "${{ params.threshold }}", amounts: "${{ params.amounts }}", urgent: "${{ params.urgent }}" }
    script: "return { client: input.client, over: input.amounts.filter(a => a > input.threshold).length, urgent: input.urgent }"
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `tollgate serve` on `port` with the admin token; returns once it listens.
async fn serve(data: &Path, port: u16) -> Child {
    let std_cmd = support::tollgate(data);
    let mut cmd = Command::from(std_cmd);
    cmd.arg("serve")
        .env("TOLLGATE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("TOLLGATE_CATALOGUE_FILES", data.join("console-tally.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("tollgate serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("serve: {line}");
            if line.starts_with("tollgate serve: console on") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(listening, Ok(true), "tollgate serve did not start listening on {port}");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("serve: {line}");
        }
    });
    child
}

/// Stop the server as an operator would (SIGTERM) and wait: live streams must not hold it up.
async fn stop(mut child: Child) {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    assert!(matches!(exited, Ok(Ok(s)) if s.success()), "serve did not shut down cleanly on SIGTERM: {exited:?}");
}

/// Create a user with the bootstrap admin token; returns their API token.
async fn add_user(base: &str, name: &str, group: &str) -> String {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/users"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": name, "role": "operator", "groups": [group]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

async fn start_run(base: &str, token: &str, spec: &str) -> String {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/runs"))
        .bearer_auth(token)
        .json(&json!({"spec": spec, "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let body: Value = res.json().await.unwrap();
    body["run"].as_str().unwrap().to_string()
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_shows_cards_live_across_a_restart_and_answers_every_mode() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: run scripts/setup (it installs Debian's chromium)");
    assert!(browser_dir().join("node_modules/playwright-core").exists(), "playwright-core is missing: run scripts/setup (npm ci in tests/browser)");
    let shots = std::env::var("TOLLGATE_SCREENSHOT_DIR").map(PathBuf::from).unwrap_or_else(|_| browser_dir().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("console-tally.yaml"), TALLY).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Some(serve(dir.path(), port).await);
    let alice = add_user(&base, "alice", "ops").await;
    let bob = add_user(&base, "bob", "legal").await;

    let mut script = Command::new("node")
        .arg(browser_dir().join("console.mjs"))
        .env("TOLLGATE_URL", &base)
        .env("TOLLGATE_TOKEN", &alice)
        .env("TOLLGATE_OTHER_TOKEN", &bob)
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the browser script");
    let mut answers = script.stdin.take().unwrap();
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let mut done = false;
    let session = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("browser: {line}");
            let Some(command) = line.strip_prefix("@@ ") else { continue };
            let answer = match command {
                "start approval" => start_run(&base, &alice, APPROVAL).await,
                "start budget" => start_run(&base, &alice, BUDGET).await,
                "start guidance" => start_run(&base, &alice, GUIDANCE).await,
                "start notify" => start_run(&base, &alice, NOTIFY).await,
                "restart" => {
                    stop(server.take().unwrap()).await;
                    server = Some(serve(dir.path(), port).await);
                    "ok".into()
                }
                "done" => {
                    done = true;
                    continue;
                }
                other => format!("error: unknown command {other}"),
            };
            answers.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
        }
    })
    .await;
    assert!(session.is_ok(), "the browser session did not finish in time");
    let status = script.wait().await.unwrap();
    assert!(status.success() && done, "the browser script failed ({status}); see its output above");
    for name in ["inbox.png", "card-approval.png", "card-budget.png", "card-guidance.png", "timeline.png", "timeline-guidance.png", "timeline-phone.png", "other-user-404.png", "start-run-form.png", "start-run-timeline.png"] {
        let size = std::fs::metadata(shots.join(name)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {name} was not written to {}", shots.display());
    }
    stop(server.take().unwrap()).await;
}
