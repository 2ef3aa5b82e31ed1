//! `platform` steps that run as jobs, end to end: memory notes written by one run and listed
//! (by time and tag) and read by another, on both backends, invisible to another owner; and a
//! `notify` step's notification arriving on the live stream of a user signed in to the console (and in
//! `GET /api/notifications`), not on another user's.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_tests::harness::{TestSystem, each_backend, embedded};

const WRITER: &str = r#"
id: jot
owner: ops
parameters:
  client: { type: string }
steps:
  - { id: first, type: platform, action: memory.write, with: { key: "client-${{ params.client }}", text: "${{ params.client }} renews in May", tags: [client, renewal] } }
  - { id: second, type: platform, needs: [first], action: memory.write, with: { text: "weekly call moved to Friday", tags: [ops] } }
"#;

const READER: &str = r#"
id: recall
owner: ops
steps:
  - { id: week, type: platform, action: memory.list, with: { since: 7d } }
  - { id: clients, type: platform, action: memory.list, with: { since: 7d, tag: client } }
  - { id: acme, type: platform, action: memory.read, with: { key: client-Acme } }
"#;

fn output(v: &tollgate::service::RunView, step: &str) -> Value {
    TestSystem::step(v, step)
        .output
        .clone()
        .unwrap_or_else(|| panic!("step {step} has no output: {:?}", TestSystem::step(v, step).error))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_notes_are_listed_by_time_and_tag_and_kept_from_other_owners() {
    each_backend(|sys| async move {
        let run = sys.start(WRITER, json!({"client": "Acme"})).await;
        assert_eq!(sys.settle(&run).await.state.status.label(), "succeeded");
        let run = sys.start(READER, json!({})).await;
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let week = output(&v, "week");
        let texts: Vec<&str> = week["notes"].as_array().unwrap().iter().map(|n| n["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["weekly call moved to Friday", "Acme renews in May"], "newest first");
        let clients = output(&v, "clients");
        assert_eq!(clients["count"], 1);
        assert_eq!(clients["notes"][0]["tags"], json!(["client", "renewal"]));
        assert_eq!(clients["notes"][0]["workflow"], "jot");
        assert_eq!(output(&v, "acme")["text"], "Acme renews in May");

        // Another owner's workflow sees none of them.
        let run = sys
            .start(&READER.replace("owner: ops", "owner: legal").replace("id: recall", "id: recall-legal"), json!({}))
            .await;
        let v = sys.settle(&run).await;
        assert_eq!(output(&v, "week")["count"], 0);
        let e = TestSystem::step(&v, "acme").error.clone().expect("reading another owner's note fails");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("memory_not_found", "no note under key `client-Acme`"));
    })
    .await;
}

async fn listen(sys: &TestSystem) -> String {
    let app = tollgate::http::router(sys.t().clone(), "s3cret".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// Read the event stream until an event named `name`; every other event's name is collected.
async fn next_event(res: &mut reqwest::Response, buf: &mut String, name: &str, seen: &mut Vec<String>) -> Value {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("message").to_string();
                let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
                if event == name {
                    return serde_json::from_str(data).unwrap_or(Value::Null);
                }
                seen.push(event);
            }
            let chunk = res.chunk().await.unwrap().expect("the stream stays open");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{name}` event arrived"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_the_signed_in_users_stream() {
    let sys = embedded().await;
    let base = listen(&sys).await;
    let http = reqwest::Client::new();
    let add = |name: &'static str, group: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let res = http
                .post(format!("{base}/api/users"))
                .bearer_auth("s3cret")
                .json(&json!({"name": name, "groups": [group]}))
                .send()
                .await
                .unwrap();
            res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
        }
    };
    let (ann, bob) = (add("ann", "finance").await, add("bob", "legal").await);
    // Ann is signed in to the console (a session cookie, as the browser holds it).
    let signed = http.post(format!("{base}/console/session")).json(&json!({"token": ann})).send().await.unwrap();
    assert_eq!(signed.status(), 200);
    let cookie = signed.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    let mut ann_live =
        http.get(format!("{base}/api/stream")).header(reqwest::header::COOKIE, &cookie).send().await.unwrap();
    let mut bob_live = http.get(format!("{base}/api/stream")).bearer_auth(&bob).send().await.unwrap();
    let (mut ann_buf, mut bob_buf, mut seen) = (String::new(), String::new(), Vec::new());
    next_event(&mut ann_live, &mut ann_buf, "hello", &mut seen).await;
    next_event(&mut bob_live, &mut bob_buf, "hello", &mut seen).await;

    let spec = r#"
id: announce
owner: ops
steps:
  - { id: tell, type: platform, action: notify, with: { to: finance, subject: "Invoices ready", message: "April invoices are ready for review" } }
  - { id: later, type: code, needs: [tell], script: "return 1" }
"#;
    let run = sys.start(spec, json!({})).await;
    let got = next_event(&mut ann_live, &mut ann_buf, "notification", &mut seen).await;
    assert_eq!(got["run"], json!(run));
    let list: Value = http
        .get(format!("{base}/api/notifications"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = &list["notifications"][0];
    assert_eq!(
        (n["id"].clone(), n["subject"].as_str(), n["message"].as_str(), n["to"].as_str()),
        (
            got["notification"].clone(),
            Some("Invoices ready"),
            Some("April invoices are ready for review"),
            Some("finance")
        )
    );
    assert!(!ann_buf.contains("April"), "stream events carry ids only");
    let v = sys.settle(&run).await;
    assert_eq!(output(&v, "tell")["recipients"], json!(["ann"]));

    // Bob is in no group it was sent to: nothing in his list, no event on his stream by the
    // time a later event (the run finishing is not his either, so use another run of his own) arrives.
    let list: Value =
        http.get(format!("{base}/api/notifications")).bearer_auth(&bob).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["notifications"], json!([]));
    let mine = sys
        .start(
            &spec
                .replace("owner: ops", "owner: legal")
                .replace("to: finance", "to: bob")
                .replace("id: announce", "id: announce-bob"),
            json!({}),
        )
        .await;
    let got = next_event(&mut bob_live, &mut bob_buf, "notification", &mut seen).await;
    assert_eq!(got["run"], json!(mine), "the first notification on bob's stream is his own");
}

/// With `connection:`, the notification is also emailed — through the owner's smtp
/// connection, to the users it reaches that have an address — once, into a real SMTP server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_is_emailed_through_the_owners_smtp_connection() {
    use tollgate_engine::connections::{Connection, ConnectionKind};
    use tollgate_engine::ids::OwnerId;
    use tollgate_engine::users::Role;
    let sink = tollgate_tests::smtp_sink::SmtpSink::start();
    let sys = embedded().await;
    let t = sys.t();
    t.users.add("ann", Role::Operator, vec!["finance".into()], Some("ann@example.com".into())).await.unwrap();
    t.users.add("cid", Role::Operator, vec!["finance".into()], None).await.unwrap();
    let settings = [
        ("host", "127.0.0.1".to_string()),
        ("port", sink.port.to_string()),
        ("security", "none".into()),
        ("from", "tollgate@example.com".into()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let c = Connection::from_settings("office_mail", ConnectionKind::Smtp, &settings).expect("smtp settings");
    t.engine.store.put_connection(&OwnerId::from("ops"), &c, None).await.unwrap();

    let spec = r#"
id: announce-mail
owner: ops
steps:
  - { id: tell, type: platform, action: notify, with: { to: finance, subject: "Invoices ready", message: "April invoices are ready for review", connection: office_mail } }
"#;
    let run = sys.start(spec, json!({})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", TestSystem::step(&v, "tell").error);
    let out = output(&v, "tell");
    assert_eq!(out["recipients"], json!(["ann", "cid"]));
    assert_eq!(out["emailed"], json!(["ann"]), "cid has no address");
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        mails[0].contains("Subject: Invoices ready")
            && mails[0].contains("April invoices are ready for review")
            && mails[0].contains("ann@example.com"),
        "{}",
        mails[0]
    );
    assert_eq!(
        t.engine.store.notifications("cid", 5).await.unwrap()[0].subject,
        "Invoices ready",
        "the console half reaches everyone"
    );

    // A connection the owner does not have fails the step, naming it.
    let run =
        sys.start(&spec.replace("office_mail", "nope").replace("announce-mail", "announce-nope"), json!({})).await;
    let v = sys.settle(&run).await;
    let e = TestSystem::step(&v, "tell").error.clone().unwrap();
    assert_eq!(e.code, "connection_not_found", "{e}");
}
