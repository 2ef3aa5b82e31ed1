//! The admin HTTP API, over a real socket and through `Router::oneshot`: start a run, list pending requests, decide, see the
//! run finish; a second decision is refused with the first; a bad spec names its problem; auth is enforced
//! (401 on a wrong token, the admin token only creates users); bodies are bounded (413); a hostile spec is refused by its nesting;
//! `GET /api/runs` pages through runs from their summaries, without reading journals.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_engine::users::Role;
use tollgate_tests::harness::{embedded, wait_for};

const SPEC: &str = r#"
id: api-approval
owner: ops
parameters:
  client: { type: string, required: true }
steps:
  - { id: letter, type: approval, question: "Send the letter to ${{ params.client }}?" }
  - { id: send, type: code, needs: [letter], script: "return 'sent'" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_a_request_over_http() {
    let sys = embedded().await;
    let app = tollgate::http::router(sys.t().clone(), "s3cret".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let partner = sys.t().users.add("partner", Role::Operator, vec!["ops".into()], None).await.unwrap();
    let token = partner.token.to_string();
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(&token);

    let unauth = http.get(format!("{base}/api/runs")).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    let bootstrap = http.get(format!("{base}/api/runs")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(bootstrap.status(), 403, "the admin token only creates users");
    // Health needs no token (200 once the fresh system's step worker has registered).
    wait_for("/healthz to answer 200", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{base}/healthz"));
        async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;

    let bad = auth(http.post(format!("{base}/api/runs")))
        .json(&json!({"spec": "id: x\nowner: o\nsteps: []\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("at least one step"));

    let created = auth(http.post(format!("{base}/api/runs")))
        .json(&json!({"spec": SPEC, "params": {"client": "Acme"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let run = created.json::<Value>().await.unwrap()["run"].as_str().unwrap().to_string();

    wait_for("the approval request to be listed", Duration::from_secs(10), || {
        let r = auth(http.get(format!("{base}/api/requests")));
        async move { r.send().await.unwrap().json::<Value>().await.unwrap().as_array().is_some_and(|l| !l.is_empty()) }
    })
    .await;
    // Only waiting for the partner: the listing says so, from the run's summary record.
    let listed = |status: &'static str| {
        let (r, run) = (auth(http.get(format!("{base}/api/runs"))), run.clone());
        async move {
            let page = r.send().await.unwrap().json::<Value>().await.unwrap();
            page["runs"].as_array().is_some_and(|l| l.iter().any(|r| r["run"] == run.as_str() && r["status"] == status))
        }
    };
    wait_for("the run to be listed as waiting", Duration::from_secs(30), || listed("waiting")).await;
    let list: Value = auth(http.get(format!("{base}/api/requests"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["request"]["question"], "Send the letter to Acme?");
    let request = list[0]["request"]["id"].as_str().unwrap().to_string();

    let decided = auth(http.post(format!("{base}/api/requests/{request}/decision")))
        .json(&json!({"decision": "approve", "by": "someone-else", "comment": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);
    let again = auth(http.post(format!("{base}/api/requests/{request}/decision")))
        .json(&json!({"decision": "reject", "by": "someone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "a second decision is refused");
    let first: Value = again.json().await.unwrap();
    assert_eq!(
        (&first["decision"]["decision"], &first["decision"]["by"]),
        (&json!("approve"), &json!("partner")),
        "{first}"
    );
    let extend = auth(http.post(format!("{base}/api/requests/{request}/decision")))
        .json(&json!({"decision": "extend", "by": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(extend.status(), 422, "extend without an amount is refused");
    let negative = auth(http.post(format!("{base}/api/requests/{request}/decision")))
        .json(&json!({"decision": "extend", "amount": "-1", "by": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(negative.status(), 422, "a negative amount is refused");
    assert!(negative.text().await.unwrap().contains("must not be negative"));

    wait_for("the run to succeed", Duration::from_secs(10), || {
        let r = auth(http.get(format!("{base}/api/runs/{run}")));
        async move { r.send().await.unwrap().json::<Value>().await.unwrap()["status"] == "succeeded" }
    })
    .await;
    wait_for("the run to be listed as succeeded", Duration::from_secs(30), || listed("succeeded")).await;
    let shown: Value = auth(http.get(format!("{base}/api/runs/{run}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["steps"][0]["decision"]["by"], "partner", "the authenticated caller, not the body's `by`");
    assert_eq!(auth(http.get(format!("{base}/api/runs/nope"))).send().await.unwrap().status(), 404);
}

/// A request to `app` without a socket.
async fn send(app: &axum::Router, req: axum::http::Request<axum::body::Body>) -> (axum::http::StatusCode, Value) {
    use tower::ServiceExt;
    let resp = app.clone().oneshot(req).await.expect("the router answers");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn request(
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> axum::http::Request<axum::body::Body> {
    let mut b = axum::http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    match body {
        Some(bytes) => b.header("content-type", "application/json").body(axum::body::Body::from(bytes)).unwrap(),
        None => b.body(axum::body::Body::empty()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_tokens_get_401() {
    let sys = embedded().await;
    let app = tollgate::http::router(sys.t().clone(), "s3cret".into());
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret-and-more"), Some("")] {
        let (status, body) = send(&app, request("GET", "/api/runs", token, None)).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    let (status, _) =
        send(&app, request("POST", "/api/requests/x/decision", Some("wrong"), Some(b"{}".to_vec()))).await;
    assert_eq!(status, 401, "checked before the body is read");
    let (status, body) = send(&app, request("GET", "/api/runs", Some("s3cret"), None)).await;
    assert_eq!((status.as_u16(), &body["error"]), (403, &json!("bootstrap_token")), "{body}");
    let user = sys.t().users.add("viewer", Role::Operator, vec![], None).await.unwrap();
    assert_eq!(send(&app, request("GET", "/api/runs", Some(&user.token), None)).await.0, 200);
    // A token of the right shape that was never issued.
    let forged = format!("tg_{}_{}", "0".repeat(16), "0".repeat(48));
    assert_eq!(send(&app, request("GET", "/api/runs", Some(&forged), None)).await.0, 401);
    // Health needs no token. A system just started is healthy once its step worker has
    // registered with the queue (503 until then).
    let app = &app;
    wait_for("/healthz to answer 200 without a token", Duration::from_secs(30), || async move {
        send(app, request("GET", "/healthz", None, None)).await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_get_clear_json_errors() {
    let sys = embedded().await;
    let options = tollgate::http::ApiOptions { admin_token: String::new(), max_body_bytes: 4096 };
    let app = tollgate::http::router_with(sys.t().clone(), options);
    let big = serde_json::to_vec(&json!({"spec": "x".repeat(5000)})).unwrap();
    let (status, body) = send(&app, request("POST", "/api/runs", None, Some(big.clone()))).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "body_too_large");
    assert!(body["message"].as_str().unwrap().contains("4096 bytes (http_max_body_bytes)"), "{body}");
    // Without a Content-Length (chunked): the limit holds while the body streams in.
    let chunks =
        big.chunks(512).map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(c))).collect::<Vec<_>>();
    let streamed = axum::http::Request::builder()
        .method("POST")
        .uri("/api/runs")
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let (status, body) = send(&app, streamed).await;
    assert_eq!((status.as_u16(), &body["error"]), (413, &json!("body_too_large")), "{body}");
    let (status, body) =
        send(&app, request("POST", "/api/requests/r/decision", None, Some(b"{not json".to_vec()))).await;
    assert_eq!((status.as_u16(), &body["error"]), (400, &json!("bad_body")), "{body}");
    let (status, body) = send(&app, request("POST", "/api/runs", None, Some(b"{\"params\": {}}".to_vec()))).await;
    assert_eq!((status.as_u16(), &body["error"]), (422, &json!("bad_body")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("spec"), "names the missing field: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_spec_posted_is_refused_by_the_nesting_bound() {
    let sys = embedded().await;
    let app = tollgate::http::router(sys.t().clone(), String::new());
    let body = serde_json::to_vec(&json!({"spec": "[".repeat(100_000)})).unwrap();
    let (status, body) = send(&app, request("POST", "/api/runs", None, Some(body))).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"], "invalid_spec");
    assert!(body["message"].as_str().unwrap().contains("nesting deeper than 64 levels at line 1 column 65"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_a_page_at_a_time_without_reading_journals() {
    let sys = embedded().await;
    let app = tollgate::http::router(sys.t().clone(), String::new());
    let spec = "id: quick\nowner: ops\nsteps:\n  - { id: one, type: code, script: \"return 1\" }\n";
    let failing = "id: broken\nowner: ops\nsteps:\n  - { id: one, type: code, script: \"throw new Error('no')\" }\n";
    let mut started = Vec::new();
    for i in 0..7 {
        let run = sys.start(if i == 3 { failing } else { spec }, json!({})).await;
        sys.settle(&run).await;
        started.push(run.to_string());
    }
    // Listing reads metadata and summaries only: with every journal gone it still answers.
    let backend = sys.t().engine.store.backend().clone();
    for run in &started {
        backend
            .delete(&tollgate_engine::store::keys::run_journal(&tollgate_engine::ids::RunId::new(run.as_str())))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/runs?limit=3&after={c}"),
            None => "/api/runs?limit=3".to_string(),
        };
        let (status, page) = send(&app, request("GET", &uri, None, None)).await;
        assert_eq!(status, 200, "{page}");
        let runs = page["runs"].as_array().unwrap();
        assert!(runs.len() <= 3);
        pages += 1;
        for r in runs {
            assert!(r["started_at"].is_u64() && r["finished_at"].is_u64() && r["created_at"].is_u64(), "{r}");
            seen.push((
                r["run"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["reason"]["code"].clone(),
            ));
        }
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(next, runs.last().unwrap()["run"], "the cursor is the last run shown");
                cursor = Some(next.to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    assert_eq!(seen.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), newest_first, "every run once, newest first");
    for (run, status, code) in &seen {
        if *run == started[3] {
            assert_eq!((status.as_str(), code), ("failed", &json!("step_failed")));
        } else {
            assert_eq!(status, "succeeded");
        }
    }
    let (_, all) = send(&app, request("GET", "/api/runs", None, None)).await;
    assert_eq!(
        (all["runs"].as_array().unwrap().len(), &all["next"]),
        (7, &Value::Null),
        "the default page holds them all"
    );
    for (uri, code) in [
        ("/api/runs?limit=0", "bad_limit"),
        ("/api/runs?limit=501", "bad_limit"),
        ("/api/runs?limit=x", "bad_limit"),
        ("/api/runs?after=a/b", "bad_cursor"),
    ] {
        let (status, body) = send(&app, request("GET", uri, None, None)).await;
        assert_eq!((status.as_u16(), &body["error"]), (400, &json!(code)), "{uri}: {body}");
    }
}
