//! What the web console needs from the server, over a real socket: its page and assets (with a
//! strict content security policy), sessions signed in with a user's token (HttpOnly,
//! SameSite=Strict, CSRF token required to change state, the decider is the session's user; the
//! bootstrap admin token does not sign in), the live event stream (`hello` first, new and
//! decided requests, step changes), runs filtered by workflow, status and time (only the
//! caller's), and the run timeline (DAG, outputs as gated, the gate trail located on the
//! redacted text; 404 to another user).

use std::time::Duration;

use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use tollgate_tests::harness::{TestSystem, embedded, wait_for};

const TOKEN: &str = "s3cret";

const APPROVAL: &str = r#"
id: console-approval
owner: ops
steps:
  - { id: letter, type: approval, question: "Send the letter?" }
  - { id: send, type: code, needs: [letter], script: "return 'sent'" }
"#;

const REDACTED: &str = r#"
id: console-redacted
owner: ops
steps:
  - { id: contact, type: code, script: "return { note: 'Call back ' + 'jane.doe' + '@acme-corp.com today' }" }
  - { id: file, type: code, needs: [contact], inputs: { note: "${{ steps.contact.output.note }}" }, script: "return input.note" }
"#;

/// Create a user with the bootstrap admin token; returns their API token.
async fn add_user(base: &str, name: &str, group: &str) -> String {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/users"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": name, "groups": [group]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

async fn listen(sys: &TestSystem) -> String {
    let app = tollgate::http::router(sys.t().clone(), TOKEN.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn pending(http: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let list: Value =
        http.get(format!("{base}/api/requests")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    list.as_array().cloned().unwrap_or_default()
}

async fn wait_request(http: &reqwest::Client, base: &str, token: &str, run: &str) -> String {
    wait_for("the run's request to be listed", Duration::from_secs(30), || {
        let (http, base, token, run) = (http.clone(), base.to_string(), token.to_string(), run.to_string());
        async move { pending(&http, &base, &token).await.iter().any(|r| r["run"] == run) }
    })
    .await;
    let list = pending(http, base, token).await;
    list.iter().find(|r| r["run"] == run).unwrap()["request"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_sign_in_with_the_token_and_need_csrf_to_change_state() {
    let sys = embedded().await;
    let base = listen(&sys).await;
    let http = reqwest::Client::new();

    let page = http.get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page.text().await.unwrap().contains("/console/assets/app.js"));
    let js = http.get(format!("{base}/console/assets/app.js")).send().await.unwrap();
    assert_eq!(
        (js.status().as_u16(), js.headers()["content-type"].to_str().unwrap()),
        (200, "text/javascript; charset=utf-8")
    );
    assert_eq!(http.get(format!("{base}/console/assets/nope.js")).send().await.unwrap().status(), 404);

    let ann = add_user(&base, "ann", "ops").await;
    let sign_in = |body: Value| http.post(format!("{base}/console/session")).json(&body);
    assert_eq!(sign_in(json!({"token": "wrong"})).send().await.unwrap().status(), 401);
    let bootstrap = sign_in(json!({"token": TOKEN})).send().await.unwrap();
    assert_eq!(bootstrap.status(), 403, "the admin token only creates users");
    assert_eq!(bootstrap.json::<Value>().await.unwrap()["error"], "bootstrap_token");
    let foreign = sign_in(json!({"token": ann})).header("Origin", "http://evil.example").send().await.unwrap();
    assert_eq!(foreign.status(), 403, "a sign-in from another site is refused");
    let signed = sign_in(json!({"token": ann})).send().await.unwrap();
    assert_eq!(signed.status(), 200);
    let set_cookie = signed.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict") && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let csrf = signed.json::<Value>().await.unwrap()["csrf"].as_str().unwrap().to_string();

    let me: Value =
        http.get(format!("{base}/console/session")).header(COOKIE, &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!((me["user"].as_str(), me["csrf"].as_str()), (Some("ann"), Some(csrf.as_str())));
    assert_eq!(
        http.get(format!("{base}/api/runs")).header(COOKIE, &cookie).send().await.unwrap().status(),
        200,
        "the session reads the API"
    );
    let tampered = format!("{}0", cookie);
    assert_eq!(http.get(format!("{base}/api/runs")).header(COOKIE, &tampered).send().await.unwrap().status(), 401);

    let run = sys.start(APPROVAL, json!({})).await.to_string();
    let request = wait_request(&http, &base, &ann, &run).await;
    let decide = || {
        http.post(format!("{base}/api/requests/{request}/decision"))
            .header(COOKIE, &cookie)
            .json(&json!({"decision": "approve", "by": "mallory"}))
    };
    let refused = decide().send().await.unwrap();
    assert_eq!(refused.status(), 403, "no CSRF token");
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "csrf");
    assert_eq!(
        decide().header("X-CSRF-Token", "0".repeat(64)).send().await.unwrap().status(),
        403,
        "a wrong CSRF token"
    );
    assert_eq!(decide().header("X-CSRF-Token", &csrf).send().await.unwrap().status(), 200);
    let v = sys.settle(&tollgate_engine::ids::RunId(run.clone())).await;
    let decision = TestSystem::step(&v, "letter").decision.clone().unwrap();
    assert_eq!(decision.by, "ann", "the decider is the session's user, never the body's `by`");

    // The link a paging mail carries opens the card in the console.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for link in [format!("{base}/requests/{request}"), format!("{base}/console/requests/{request}")] {
        let res = no_redirects.get(&link).send().await.unwrap();
        assert_eq!(
            (res.status().as_u16(), res.headers()["location"].to_str().unwrap()),
            (303, format!("/console/#/requests/{request}").as_str()),
            "{link}"
        );
    }
    assert_eq!(no_redirects.get(format!("{base}/requests/not%0Aan-id")).send().await.unwrap().status(), 404);

    let out = http
        .delete(format!("{base}/console/session"))
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
}

/// Read the event stream until an event named `name` whose data satisfies `matches`.
async fn next_event(
    res: &mut reqwest::Response,
    buf: &mut String,
    name: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("message");
                let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
                let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if event == name && matches(&data) {
                    return data;
                }
            }
            let chunk = res.chunk().await.unwrap().expect("the stream stays open");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{name}` event arrived"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_announces_new_and_decided_requests() {
    let sys = embedded().await;
    let base = listen(&sys).await;
    let http = reqwest::Client::new();
    let ann = add_user(&base, "ann", "ops").await;
    assert_eq!(
        http.get(format!("{base}/api/stream")).send().await.unwrap().status(),
        401,
        "the stream needs a token or a session"
    );
    let mut live = http.get(format!("{base}/api/stream")).bearer_auth(&ann).send().await.unwrap();
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    next_event(&mut live, &mut buf, "hello", |_| true).await;

    let run = sys.start(APPROVAL, json!({})).await.to_string();
    let asked = next_event(&mut live, &mut buf, "request", |d| d["run"] == run).await;
    assert_eq!(
        (asked["request"]["mode"].as_str(), asked["request"]["step"].as_str()),
        (Some("approval"), Some("letter"))
    );
    let request = asked["request"]["id"].as_str().unwrap().to_string();
    let decided = http
        .post(format!("{base}/api/requests/{request}/decision"))
        .bearer_auth(&ann)
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);
    let d = next_event(&mut live, &mut buf, "decided", |d| d["request"] == request.as_str()).await;
    assert_eq!(d["by"], "ann");
    let step = next_event(&mut live, &mut buf, "step", |d| d["run"] == run && d["step"] == "send").await;
    assert!(step["status"].is_string());
    let finished = next_event(&mut live, &mut buf, "run", |d| d["run"] == run).await;
    assert_eq!(finished["status"], "succeeded");
    assert!(!buf.contains("sent"), "events never carry outputs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_filtered_and_the_timeline_locates_the_gate_trail_on_the_redacted_text() {
    let sys = embedded().await;
    let base = listen(&sys).await;
    let http = reqwest::Client::new();
    let ann = add_user(&base, "ann", "ops").await;
    let bob = add_user(&base, "bob", "legal").await;
    let get_as = |token: &str, path: String| {
        let r = http.get(format!("{base}{path}")).bearer_auth(token);
        async move {
            let res = r.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let get = |path: String| get_as(&ann, path);
    let waiting = sys.start(APPROVAL, json!({})).await;
    let done = sys.start(REDACTED, json!({})).await;
    sys.settle(&waiting).await;
    assert_eq!(sys.settle(&done).await.state.status.label(), "succeeded");
    // Passivated, the waiting run's summary says so (listings read summaries, not journals).
    wait_for("the approval run to be listed as waiting", std::time::Duration::from_secs(30), || {
        let r = get("/api/runs?status=waiting".into());
        let waiting = waiting.to_string();
        async move { r.await.1["runs"].as_array().is_some_and(|l| l.iter().any(|r| r["run"] == waiting.as_str())) }
    })
    .await;

    let ids = |v: &Value| -> Vec<String> {
        v["runs"].as_array().unwrap().iter().map(|r| r["run"].as_str().unwrap().to_string()).collect()
    };
    let (_, all) = get("/api/runs".into()).await;
    assert_eq!(ids(&all), vec![done.to_string(), waiting.to_string()]);
    let (_, by_workflow) = get("/api/runs?workflow=console-approval".into()).await;
    assert_eq!(ids(&by_workflow), vec![waiting.to_string()]);
    let (_, by_status) = get("/api/runs?status=succeeded".into()).await;
    assert_eq!(ids(&by_status), vec![done.to_string()]);
    let (_, both) = get("/api/runs?workflow=console-approval&status=succeeded".into()).await;
    assert_eq!(ids(&both), Vec::<String>::new());
    let created = all["runs"][0]["created_at"].as_u64().unwrap();
    let (_, later) = get(format!("/api/runs?since={}", created + 3_600_000)).await;
    assert_eq!(ids(&later), Vec::<String>::new());
    let (_, earlier) = get(format!("/api/runs?until={}", created + 3_600_000)).await;
    assert_eq!(ids(&earlier).len(), 2);
    let (_, one) = get("/api/runs?status=waiting&limit=1".into()).await;
    assert_eq!(ids(&one), vec![waiting.to_string()]);
    let (_, running) = get("/api/runs?status=running".into()).await;
    assert_eq!(ids(&running), Vec::<String>::new(), "a run only waiting for a human is listed as waiting, not running");
    let (status, bad) = get("/api/runs?status=finished".into()).await;
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_status")));
    let (status, bad) = get("/api/runs?since=yesterday".into()).await;
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_time")));

    let (status, t) = get(format!("/api/runs/{done}/timeline")).await;
    assert_eq!(status, 200);
    assert_eq!(t["status"], "succeeded");
    assert_eq!(t["steps"][1]["needs"], json!(["contact"]));
    let contact = &t["steps"][0];
    let note = contact["output"]["note"].as_str().unwrap();
    assert!(note.contains("[EMAIL_1]") && !note.contains("acme-corp"), "the output as gated: {note}");
    assert_eq!(contact["gate"]["action"], "redact");
    assert!(contact["gate"]["ruleset"]["version"].as_str().is_some_and(|v| !v.is_empty()));
    let finding = &contact["gate"]["findings"][0];
    assert_eq!((finding["rule_id"].as_str(), finding["path"].as_str()), (Some("pii.email"), Some("/note")));
    assert_eq!(finding["redacted"]["marked"], "[EMAIL_1]");
    assert_eq!(finding["redacted"]["before"], "Call back ");
    assert_eq!(finding["redacted"]["after"], " today");
    let span = &finding["redacted"]["span"];
    assert_eq!(&note[span["start"].as_u64().unwrap() as usize..span["end"].as_u64().unwrap() as usize], "[EMAIL_1]");
    assert!(!t.to_string().contains("acme-corp"), "the timeline never holds the redacted value");

    let (_, w) = get(format!("/api/runs/{waiting}/timeline")).await;
    assert_eq!(w["status"], "waiting");
    assert!(w["steps"][0]["waiting_request"].is_string());
    let (status, _) = get("/api/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/timeline".into()).await;
    assert_eq!(status, 404);
    let (status, _) = get_as(&bob, format!("/api/runs/{done}/timeline")).await;
    assert_eq!(status, 404, "another group's run does not exist for bob");
    let (_, theirs) = get_as(&bob, "/api/runs?workflow=console-redacted".into()).await;
    assert_eq!(ids(&theirs), Vec::<String>::new(), "filters list only the caller's runs");
}
