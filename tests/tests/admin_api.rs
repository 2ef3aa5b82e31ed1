//! The admin HTTP API over a real socket: start a run, list pending requests, decide, see the
//! run finish; a second decision is refused; a bad spec names its problem; auth is enforced.

use std::time::Duration;

use serde_json::{json, Value};
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
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth("s3cret");

    let unauth = http.get(format!("{base}/api/runs")).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);

    let bad = auth(http.post(format!("{base}/api/runs"))).json(&json!({"spec": "id: x\nowner: o\nsteps: []\n"})).send().await.unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("at least one step"));

    let created = auth(http.post(format!("{base}/api/runs"))).json(&json!({"spec": SPEC, "params": {"client": "Acme"}})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let run = created.json::<Value>().await.unwrap()["run"].as_str().unwrap().to_string();

    wait_for("the approval request to be listed", Duration::from_secs(10), || {
        let r = auth(http.get(format!("{base}/api/requests")));
        async move { r.send().await.unwrap().json::<Value>().await.unwrap().as_array().is_some_and(|l| !l.is_empty()) }
    })
    .await;
    let list: Value = auth(http.get(format!("{base}/api/requests"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["request"]["question"], "Send the letter to Acme?");
    let request = list[0]["request"]["id"].as_str().unwrap().to_string();

    let decided = auth(http.post(format!("{base}/api/requests/{request}/decision")))
        .json(&json!({"decision": "approve", "by": "partner", "comment": "ok"}))
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
    let extend = auth(http.post(format!("{base}/api/requests/{request}/decision"))).json(&json!({"decision": "extend", "by": "x"})).send().await.unwrap();
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
    let shown: Value = auth(http.get(format!("{base}/api/runs/{run}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["steps"][0]["decision"]["by"], "partner");
    assert_eq!(auth(http.get(format!("{base}/api/runs/nope"))).send().await.unwrap().status(), 404);
}
