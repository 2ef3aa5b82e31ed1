//! The OpenAPI document at `/api/openapi.json` against the running server: every operation it
//! documents is called over a real socket, and every answer must be one the document lists
//! for that operation, with a body valid against its schema (JSON Schema 2020-12, by boon).
//! Every operation the document lists is exercised (the test fails on one it does not know),
//! and every route the API router serves (read from `actors/src/http/mod.rs`) must be in the
//! document (the test fails on a route added without its `#[utoipa::path]`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_engine::users::Role;
use tollgate_tests::harness::{embedded, wait_for};

const SPEC: &str = r#"
id: documented
owner: ops
steps:
  - { id: draft, type: code, script: "return 'text'" }
  - { id: ask, type: approval, needs: [draft], question: "Send it?", assignee: ops, context: [draft] }
"#;

const DOC_URL: &str = "http://tollgate.test/openapi.json";

struct Checker {
    doc: Value,
    compiler: boon::Compiler,
    schemas: boon::Schemas,
    seen: BTreeSet<(String, String)>,
}

impl Checker {
    fn new(doc: Value) -> Self {
        let mut compiler = boon::Compiler::new();
        compiler.add_resource(DOC_URL, doc.clone()).unwrap();
        Self { doc, compiler, schemas: boon::Schemas::new(), seen: BTreeSet::new() }
    }

    /// `status` must be documented for `method template`; a JSON body must match its schema.
    fn check(&mut self, method: &str, template: &str, status: u16, body: &Value) {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not in the document");
        self.seen.insert((method.to_string(), template.to_string()));
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which the document does not list: {body}"
        );
        if response["content"]["application/json"]["schema"].is_null() {
            return;
        }
        let escape = |s: &str| s.replace('~', "~0").replace('/', "~1");
        let pointer = format!(
            "{DOC_URL}#/paths/{}/{method}/responses/{status}/content/application~1json/schema",
            escape(template)
        );
        let index = self.compiler.compile(&pointer, &mut self.schemas).unwrap_or_else(|e| panic!("{pointer}: {e:#}"));
        if let Err(e) = self.schemas.validate(body, index) {
            panic!("{method} {template} {status}: the body does not match the document:\n{e:#}\nbody: {body:#}");
        }
    }

    /// Whether the document refuses `body` as the answer (the checker must not be vacuous).
    fn refuses(&mut self, method: &str, template: &str, status: u16, body: &Value) -> bool {
        let escape = |s: &str| s.replace('~', "~0").replace('/', "~1");
        let pointer = format!(
            "{DOC_URL}#/paths/{}/{method}/responses/{status}/content/application~1json/schema",
            escape(template)
        );
        let index = self.compiler.compile(&pointer, &mut self.schemas).unwrap();
        self.schemas.validate(body, index).is_err()
    }

    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.clone(), path.clone()));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let sys = embedded().await;
    let root = sys.t().users.add("root", Role::Admin, vec![], None).await.unwrap().token.to_string();
    let app = tollgate::http::router(sys.t().clone(), "boot".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();

    let doc_resp = http.get(format!("{base}/api/openapi.json")).send().await.unwrap();
    assert_eq!(doc_resp.status(), 200, "the document needs no token");
    let doc: Value = doc_resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let mut c = Checker::new(doc);

    async fn call(
        http: &reqwest::Client,
        method: &str,
        url: String,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = match method {
            "get" => http.get(url),
            "post" => http.post(url),
            other => panic!("{other}"),
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    macro_rules! step {
        ($method:literal, $template:literal, $url:expr, $token:expr, $body:expr, $expect:literal) => {{
            let (status, body) = call(&http, $method, format!("{base}{}", $url), $token, $body).await;
            assert_eq!(status, $expect, "{} {}: {body}", $method, $url);
            c.check($method, $template, status, &body);
            body
        }};
    }

    let created = step!(
        "post",
        "/api/users",
        "/api/users",
        Some("boot"),
        Some(json!({"name": "alice", "groups": ["ops"], "email": "alice@example.com"})),
        201
    );
    let alice = created["token"].as_str().unwrap().to_string();
    let created_bob = step!(
        "post",
        "/api/users",
        "/api/users",
        Some("boot"),
        Some(json!({"name": "bob", "groups": ["finance"]})),
        201
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    step!("post", "/api/users", "/api/users", Some(&alice), Some(json!({"name": "eve"})), 403);
    step!("get", "/api/me", "/api/me", Some(&alice), None, 200);
    step!("get", "/api/users", "/api/users", Some(&alice), None, 403);
    step!("get", "/api/users", "/api/users", Some(&root), None, 200);
    step!("get", "/api/runs", "/api/runs", None, None, 401);
    step!("post", "/api/runs", "/api/runs", Some(&alice), Some(json!({"spec": "id: x\nowner: ops\nsteps: []\n"})), 422);
    let run = step!("post", "/api/runs", "/api/runs", Some(&alice), Some(json!({"spec": SPEC})), 201)["run"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the request to be pending", Duration::from_secs(30), || {
        let r = http.get(format!("{base}/api/requests")).bearer_auth(&alice).send();
        async move { r.await.unwrap().json::<Value>().await.unwrap().as_array().is_some_and(|a| !a.is_empty()) }
    })
    .await;
    step!("get", "/api/runs", "/api/runs?limit=10", Some(&alice), None, 200);
    step!("get", "/api/runs", "/api/runs?limit=0", Some(&alice), None, 400);
    step!("get", "/api/runs/{run}", format!("/api/runs/{run}"), Some(&alice), None, 200);
    step!("get", "/api/runs/{run}", "/api/runs/01NOSUCHRUN", Some(&alice), None, 404);
    let pending = step!("get", "/api/requests", "/api/requests", Some(&alice), None, 200);
    let request = pending[0]["request"]["id"].as_str().unwrap().to_string();
    step!("get", "/api/requests/{request}", format!("/api/requests/{request}"), Some(&alice), None, 200);
    step!("get", "/api/requests/{request}", "/api/requests/nope.x.1", Some(&alice), None, 404);
    let decide = format!("/api/requests/{request}/decision");
    step!(
        "post",
        "/api/requests/{request}/decision",
        decide.clone(),
        Some(&alice),
        Some(json!({"decision": "extend"})),
        422
    );
    step!(
        "post",
        "/api/requests/{request}/decision",
        decide.clone(),
        Some(&root),
        Some(json!({"decision": "approve", "comment": "fine"})),
        200
    );
    step!(
        "post",
        "/api/requests/{request}/decision",
        decide.clone(),
        Some(&alice),
        Some(json!({"decision": "reject"})),
        409
    );
    step!("get", "/api/requests/{request}", format!("/api/requests/{request}"), Some(&alice), None, 200);
    step!("get", "/api/runs/{run}/audit", format!("/api/runs/{run}/audit"), Some(&alice), None, 200);
    step!("get", "/api/runs/{run}/receipt", format!("/api/runs/{run}/receipt"), Some(&alice), None, 200);
    step!("get", "/api/runs/{run}/receipt", "/api/runs/01NOSUCHRUN/receipt", Some(&alice), None, 404);
    step!("get", "/api/receipt/key", "/api/receipt/key", Some(&alice), None, 200);
    step!("get", "/api/runs/{run}/timeline", format!("/api/runs/{run}/timeline"), Some(&alice), None, 200);
    step!("get", "/api/runs/{run}/timeline", "/api/runs/01NOSUCHRUN/timeline", Some(&alice), None, 404);
    step!(
        "post",
        "/api/events",
        "/api/events",
        Some(&alice),
        Some(json!({"name": "lead.created", "payload": {"score": 9}, "dedup": "d-1"})),
        202
    );
    step!("post", "/api/events", "/api/events", Some(&alice), Some(json!({"name": "bad name!"})), 422);
    step!(
        "post",
        "/api/events",
        "/api/events",
        Some(&alice),
        Some(json!({"name": "lead.created", "owner": "finance"})),
        403
    );
    step!("get", "/api/triggers", "/api/triggers", Some(&alice), None, 200);
    step!("get", "/api/notifications", "/api/notifications?limit=5", Some(&alice), None, 200);
    step!(
        "get",
        "/api/triggers/{workflow}/history",
        "/api/triggers/documented/history?limit=5",
        Some(&alice),
        None,
        200
    );
    step!("get", "/api/triggers/{workflow}/history", "/api/triggers/nosuchflow/history", Some(&alice), None, 404);
    step!("get", "/api/triggers/{workflow}/history", "/api/triggers/bad%20id/history", Some(&alice), None, 400);
    step!(
        "post",
        "/api/runs/{run}/cancel",
        format!("/api/runs/{run}/cancel"),
        Some(&alice),
        Some(json!({"reason": "done"})),
        200
    );
    step!("post", "/api/runs/{run}/cancel", "/api/runs/01NOSUCHRUN/cancel", Some(&alice), None, 404);

    // The workflow catalogue: list, show, start one by id with parameters.
    let listed = step!("get", "/api/templates", "/api/templates", Some(&alice), None, 200);
    assert!(listed["templates"].as_array().unwrap().iter().any(|t| t["id"] == "client-intake"), "{listed}");
    step!("get", "/api/templates/{name}", "/api/templates/client-intake", Some(&alice), None, 200);
    step!("get", "/api/templates/{name}", "/api/templates/no-such-template", Some(&alice), None, 404);
    step!(
        "post",
        "/api/templates/{name}/runs",
        "/api/templates/no-such-template/runs",
        Some(&alice),
        Some(json!({})),
        404
    );
    step!(
        "post",
        "/api/templates/{name}/runs",
        "/api/templates/client-intake/runs",
        Some(&alice),
        Some(json!({"params": {"matter": "x"}})),
        422
    );
    step!(
        "post",
        "/api/templates/{name}/runs",
        "/api/templates/client-intake/runs",
        Some(&created_bob),
        Some(json!({"params": {"client_name": "Acme"}})),
        403
    );
    let from_template = step!(
        "post",
        "/api/templates/{name}/runs",
        "/api/templates/client-intake/runs",
        Some(&alice),
        Some(json!({"params": {"client_name": "Acme", "scheduler_url": ""}})),
        201
    );
    step!(
        "post",
        "/api/runs/{run}/cancel",
        format!("/api/runs/{}/cancel", from_template["run"].as_str().unwrap()),
        Some(&alice),
        None,
        200
    );

    // The stream: an event stream, as documented.
    let stream = http.get(format!("{base}/api/stream")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    c.check("get", "/api/stream", 200, &Value::Null);
    drop(stream);

    wait_for("/healthz to answer 200", Duration::from_secs(30), || {
        let r = http.get(format!("{base}/healthz")).send();
        async move { r.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    step!("get", "/healthz", "/healthz", None, None, 200);

    // The checker is not vacuous: wrong shapes are refused.
    assert!(c.refuses("get", "/api/me", 200, &json!({"name": "alice"})), "a user without role and groups");
    assert!(c.refuses("get", "/api/runs", 200, &json!({"runs": [{"run": 1}], "next": null})));
    assert!(c.refuses(
        "post",
        "/api/requests/{request}/decision",
        409,
        &json!({"error": "already_decided", "message": "m", "request": "r", "decision": {"decision": "approve"}})
    ));

    let missing: Vec<_> = c.operations().difference(&c.seen).cloned().collect();
    assert!(missing.is_empty(), "documented operations this test does not exercise: {missing:?}");
    let undocumented: Vec<_> = served_routes().difference(&c.operations()).cloned().collect();
    assert!(undocumented.is_empty(), "routes the server serves that the document does not list: {undocumented:?}");
}

/// Every `/api` route (but the document itself) and `/healthz` the router serves, as
/// `(method, path)`: read from the router's source, where each is one `.route("PATH", get(…).post(…))`.
fn served_routes() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../actors/src/http/mod.rs");
    let source: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        let Some((route, rest)) = call.trim_start().strip_prefix('"').and_then(|c| c.split_once('"')) else { continue };
        if !(route.starts_with("/api/") || route == "/healthz") || route == "/api/openapi.json" {
            continue;
        }
        // The handlers: `get(x)`, `post(y)`, chained, up to the closing parenthesis of `.route(`.
        let mut depth = 1;
        let end = rest.char_indices().find(|&(_, ch)| {
            depth += match ch {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            depth == 0
        });
        let handlers = &rest[..end.map_or(rest.len(), |(i, _)| i)];
        for method in ["get", "post", "put", "patch", "delete"] {
            if handlers.contains(&format!("{method}(")) {
                out.insert((method.to_string(), route.to_string()));
            }
        }
    }
    assert!(
        out.len() >= 10 && out.contains(&("get".into(), "/api/runs".into())),
        "the router's routes were not found in {path}: {out:?}"
    );
    out
}
