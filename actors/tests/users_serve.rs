//! Users and ownership through real HTTP against `tollgate serve`: users created by
//! `tollgate users add` (and by the admin token over HTTP, its only use); a user never sees
//! another's runs or requests (404); the decider is the authenticated user; the run's starter
//! cannot approve a step that forbids self-approval, over HTTP or with `tollgate decide`; a
//! second decision is refused with the first; the live stream tells an assignee of a new
//! request.

#[allow(dead_code)] // the helpers other process tests use
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use support::tollgate;

const SPEC: &str = r#"
id: payments
owner: finance
steps:
  - { id: draft, type: code, script: "return { payee: 'Acme', amount: 120 }" }
  - id: ask
    type: approval
    needs: [draft]
    question: "Pay ${{ steps.draft.output.payee }}?"
    assignee: finance
    forbid_self_approval: true
    context: [draft]
  - { id: pay, type: code, needs: [ask], script: "return 'paid'" }
"#;

fn add_user(data: &Path, name: &str, groups: &[&str]) -> String {
    let mut c = tollgate(data);
    c.args(["users", "add", name]);
    for g in groups {
        c.args(["--group", g]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tollgate serve` on a free loopback port with admin token `boot`; its base URL.
fn serve(data: &Path) -> (Serve, String) {
    let mut child = tollgate(data)
        .arg("serve")
        .env("TOLLGATE_HTTP_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_ADMIN_TOKEN", "boot")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("tollgate serve: admin API on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(60)).expect("serve prints its address");
    (Serve(child), base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_own_runs_and_decide_as_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let alice = add_user(data, "alice", &["finance"]);
    let carol = add_user(data, "carol", &["finance"]);
    let bob = add_user(data, "bob", &["sales"]);
    assert!(alice.starts_with("tg_") && alice != carol);
    let (_serve, base) = serve(data);
    let http = reqwest::Client::new();
    let get = |token: &str, path: &str| http.get(format!("{base}{path}")).bearer_auth(token).send();

    // The admin token creates users, and does nothing else; an operator cannot create users.
    let created = http
        .post(format!("{base}/api/users"))
        .bearer_auth("boot")
        .json(&json!({"name": "dave", "groups": ["finance"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let dave = created.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    assert_eq!(get("boot", "/api/runs").await.unwrap().status(), 403);
    let refused =
        http.post(format!("{base}/api/users")).bearer_auth(&bob).json(&json!({"name": "eve"})).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(http.get(format!("{base}/api/runs")).send().await.unwrap().status(), 401);
    let me: Value = get(&carol, "/api/me").await.unwrap().json().await.unwrap();
    assert_eq!((&me["name"], &me["groups"]), (&json!("carol"), &json!(["finance"])));

    // Carol (finance) listens for new requests before the run starts.
    let mut stream = get(&carol, "/api/stream").await.unwrap();
    assert_eq!(stream.status(), 200);

    // Bob (sales) may not start finance's workflow; alice (finance) may.
    let denied =
        http.post(format!("{base}/api/runs")).bearer_auth(&bob).json(&json!({"spec": SPEC})).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    let started =
        http.post(format!("{base}/api/runs")).bearer_auth(&alice).json(&json!({"spec": SPEC})).send().await.unwrap();
    assert_eq!(started.status(), 201);
    let run = started.json::<Value>().await.unwrap()["run"].as_str().unwrap().to_string();

    // The request arrives on carol's stream.
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        let mut text = String::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(i) = text.find("event: request\ndata: ") {
                let data = &text[i + "event: request\ndata: ".len()..];
                if let Some(end) = data.find('\n') {
                    return serde_json::from_str::<Value>(&data[..end]).unwrap();
                }
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("a `request` event within 30 s");
    assert_eq!(event["run"], json!(run));
    let request = event["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(event["request"]["question"], "Pay Acme?");

    // The request as a first-class record: question, context, assignee, times.
    let pending: Value = get(&carol, "/api/requests").await.unwrap().json().await.unwrap();
    let r = &pending[0];
    assert_eq!(
        (&r["request"]["id"], &r["request"]["assignee"], &r["request"]["mode"]),
        (&json!(request), &json!("finance"), &json!("approval"))
    );
    assert_eq!(r["request"]["context"]["upstream"]["draft"], json!({"payee": "Acme", "amount": 120}));
    assert!(r["created_at"].is_u64(), "{r}");

    // Bob sees none of it: every read and the decision answer 404.
    assert_eq!(get(&bob, &format!("/api/runs/{run}")).await.unwrap().status(), 404);
    assert_eq!(get(&bob, &format!("/api/requests/{request}")).await.unwrap().status(), 404);
    let listed: Value = get(&bob, "/api/runs").await.unwrap().json().await.unwrap();
    assert_eq!(listed["runs"], json!([]), "{listed}");
    assert_eq!(get(&bob, "/api/requests").await.unwrap().json::<Value>().await.unwrap(), json!([]));
    let decide = |token: &str, body: Value| {
        http.post(format!("{base}/api/requests/{request}/decision")).bearer_auth(token.to_string()).json(&body).send()
    };
    assert_eq!(decide(&bob, json!({"decision": "approve"})).await.unwrap().status(), 404);
    let cancel = http.post(format!("{base}/api/runs/{run}/cancel")).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(cancel.status(), 404);

    // Alice started the run: she may not approve it, over HTTP or from the command line.
    let own = decide(&alice, json!({"decision": "approve"})).await.unwrap();
    assert_eq!(own.status(), 403);
    assert_eq!(own.json::<Value>().await.unwrap()["error"], "self_approval_forbidden");
    let cli = tollgate(data).args(["decide", &run, "ask", "approve", "--token", &alice]).output().unwrap();
    assert!(!cli.status.success());
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("alice started this run") && stderr.contains("forbids"), "{stderr}");
    // Without a token, once users exist, the command line names no one.
    let anon = tollgate(data)
        .args(["decide", &run, "ask", "approve", "--by", "carol"])
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap();
    assert!(!anon.status.success());
    assert!(String::from_utf8_lossy(&anon.stderr).contains("--token"), "{}", String::from_utf8_lossy(&anon.stderr));

    // Carol approves (a `by` in the body changes nothing); a second decision is refused with the first.
    let ok = decide(&carol, json!({"decision": "approve", "by": "the-ceo", "comment": "checked"})).await.unwrap();
    assert_eq!(ok.status(), 200);
    let again = decide(&dave, json!({"decision": "reject"})).await.unwrap();
    assert_eq!(again.status(), 409);
    let first: Value = again.json().await.unwrap();
    assert_eq!(
        (&first["decision"]["decision"], &first["decision"]["by"]),
        (&json!("approve"), &json!("carol")),
        "{first}"
    );

    let end = std::time::Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let v: Value = get(&alice, &format!("/api/runs/{run}")).await.unwrap().json().await.unwrap();
        if v["status"] == "succeeded" {
            break v;
        }
        assert!(std::time::Instant::now() < end, "the run did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&shown["steps"][1]["decision"]["by"], &shown["steps"][1]["decision"]["comment"]),
        (&json!("carol"), &json!("checked"))
    );
    let decided: Value = get(&carol, &format!("/api/requests/{request}")).await.unwrap().json().await.unwrap();
    assert_eq!(decided["decision"]["by"], "carol", "{decided}");

    // The audit trail names the approval as its own event, with who made it.
    let audit: Value = get(&alice, &format!("/api/runs/{run}/audit")).await.unwrap().json().await.unwrap();
    let kinds: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["run.started", "step.succeeded", "request.approved", "step.succeeded"], "{audit}");
    assert_eq!((&audit["events"][2]["by"], &audit["events"][2]["by_policy"]), (&json!("carol"), &json!(false)));
    assert_eq!(get(&bob, &format!("/api/runs/{run}/audit")).await.unwrap().status(), 404);

    // `runs show --outputs` prints what the run holds (gated) for each step.
    let shown = tollgate(data).args(["runs", "show", &run, "--outputs"]).output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    assert!(text.contains("\"payee\": \"Acme\"") && text.contains("\"paid\""), "{text}");
}
