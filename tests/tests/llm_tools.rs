//! Tools on the `llm` step, end to end: a local server speaking OpenAI Chat Completions (and
//! one speaking Anthropic Messages) scripts the model's tool calls from the conversation it
//! receives; Tollgate carries the calls out against a real local HTTP service (through the
//! egress guard) and in the code sandbox, and feeds the results back. A tool marked
//! `authorize: true` makes the run ask a human, decided here through the admin API by real
//! users: allow once, allow for the rest of the run, deny with a reason the model receives.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate::config::Config;
use tollgate_engine::ids::RunId;
use tollgate_engine::llm::{ModelPrice, ProviderConfig, ProviderKind};
use tollgate_engine::money::Money;
use tollgate_tests::harness::{Hit, Script, TestServer, TestSystem, embedded_with, redis_with, wait_for};

const ADMIN: &str = "admin-s3cret";

fn body(hit: &Hit) -> Value {
    serde_json::from_slice(&hit.body).unwrap_or(Value::Null)
}

/// How many tool results the conversation a model server received holds (OpenAI `tool`
/// messages, or Anthropic `tool_result` blocks): which turn the model is at.
fn tool_results(request: &Value) -> usize {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            if m["role"] == "tool" {
                1
            } else {
                m["content"].as_array().map_or(0, |blocks| blocks.iter().filter(|b| b["type"] == "tool_result").count())
            }
        })
        .sum()
}

/// A Chat Completions answer calling `calls` (`(id, name, arguments)`) after saying `text`.
fn openai_tools(text: &str, calls: &[(&str, &str, Value)]) -> String {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}))
        .collect();
    json!({
        "id": "chatcmpl-t", "object": "chat.completion", "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": calls}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
    .to_string()
}

fn openai_text(text: &str) -> String {
    json!({
        "id": "chatcmpl-f", "object": "chat.completion", "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 200, "completion_tokens": 10, "total_tokens": 210}
    })
    .to_string()
}

/// A model server whose answer depends on how many tool results it was sent.
fn model(answer: impl Fn(usize, &Value) -> String + Send + Sync + 'static) -> Script {
    Arc::new(move |_, hit| {
        let request = body(hit);
        (StatusCode::OK, vec![], answer(tool_results(&request), &request), Duration::ZERO)
    })
}

/// A service the tools call: answers every request with what it was asked.
fn service() -> Script {
    Arc::new(|_, hit| {
        let answer = json!({"path": hit.path, "received": body(hit), "status": "shipped"});
        (StatusCode::OK, vec![("content-type", "application/json".into())], answer.to_string(), Duration::ZERO)
    })
}

fn provider(kind: ProviderKind, server: &TestServer) -> ProviderConfig {
    serde_json::from_value(json!({"kind": kind, "base_url": server.url("/v1"), "model": "gpt-test", "max_tokens": 200}))
        .unwrap()
}

fn priced(c: &mut Config, p: ProviderConfig) {
    c.llm.providers.insert("local".into(), p);
    c.llm.prices.0.insert(
        "gpt-test".into(),
        ModelPrice { input_per_million: Money::parse("2").unwrap(), output_per_million: Money::parse("10").unwrap() },
    );
}

fn orders_spec(service: &TestServer) -> String {
    format!(
        r#"
id: orders-assistant
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - id: answer
    type: llm
    system: "You answer questions about orders."
    prompt: "Where is order 7, and what is the fee on 200?"
    max_turns: 4
    tools:
      - name: lookup
        description: Look an order up by its id
        parameters: {{ type: object, properties: {{ id: {{ type: string }} }}, required: [id] }}
        api_call: {{ method: GET, url: "{base}/orders/${{{{ args.id }}}}" }}
      - name: fee
        description: The fee on an amount
        parameters: {{ type: object, properties: {{ amount: {{ type: number }} }}, required: [amount] }}
        code: {{ script: "return {{ fee: input.amount * 0.1 }}" }}
"#,
        base = service.url("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_run_by_tollgate_and_their_results_fed_back_on_the_openai_protocol() {
    let tools = TestServer::start(service()).await;
    let llm = TestServer::start(model(|turn, _| match turn {
        0 => openai_tools(
            "Let me check.",
            &[("call_1", "lookup", json!({"id": "7"})), ("call_2", "fee", json!({"amount": 200}))],
        ),
        _ => openai_text("Order 7 has shipped; the fee is 20."),
    }))
    .await;
    let spec = orders_spec(&tools);
    for sys in [
        embedded_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await,
        redis_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await,
    ] {
        let (tool_hits, model_hits) = (tools.hits().len(), llm.hits().len());
        let run = sys.start(&spec, json!({})).await;
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let step = TestSystem::step(&v, "answer");
        let out = step.output.as_ref().unwrap();
        assert_eq!(out["text"], "Order 7 has shipped; the fee is 20.");
        assert_eq!(
            out["tool_calls"],
            json!([
                {"id": "call_1", "tool": "lookup", "status": "ok", "attempt": 1},
                {"id": "call_2", "tool": "fee", "status": "ok", "attempt": 1}
            ])
        );
        assert_eq!(out["usage"]["calls"], 2);
        // 300 × 2/1M + 30 × 10/1M: both turns, charged exactly.
        assert_eq!(step.cost, Money::parse("0.0009").unwrap());

        // The tool's HTTP call: once, to the templated URL, with a per-call idempotency key.
        let hits = tools.hits();
        assert_eq!(hits.len() - tool_hits, 1);
        assert_eq!(hits[tool_hits].path, "/orders/7");
        assert_eq!(hits[tool_hits].headers["idempotency-key"], format!("{run}.answer.call_1"));

        // Both turns in the protocol's shapes: tool definitions, then the calls and their results.
        let hits = llm.hits();
        assert_eq!(hits.len() - model_hits, 2);
        let first = body(&hits[model_hits]);
        assert_eq!(
            first["tools"][0],
            json!({"type": "function", "function": {
            "name": "lookup", "description": "Look an order up by its id",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}})
        );
        assert_eq!(first["tools"][1]["function"]["name"], "fee");
        let second = body(&hits[model_hits + 1]);
        let m = second["messages"].as_array().unwrap();
        assert_eq!(m.len(), 5, "system, prompt, the answer with its calls, two results: {m:#?}");
        assert_eq!(m[2]["role"], "assistant");
        assert_eq!(
            m[2]["tool_calls"][0],
            json!({"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"id\":\"7\"}"}})
        );
        assert_eq!(m[3]["role"], "tool");
        assert_eq!(m[3]["tool_call_id"], "call_1");
        let looked_up: Value = serde_json::from_str(m[3]["content"].as_str().unwrap()).unwrap();
        assert_eq!(looked_up["status"], 200);
        assert_eq!(looked_up["body"]["status"], "shipped");
        assert_eq!(m[4], json!({"role": "tool", "tool_call_id": "call_2", "content": "{\"fee\":20}"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_that_break_the_schema_and_unknown_tools_are_not_run_and_max_turns_bounds_the_loop() {
    let tools = TestServer::start(service()).await;
    // A model that never stops calling tools, badly.
    let llm = TestServer::start(model(|turn, _| {
        openai_tools(
            "",
            &[(&format!("bad_{turn}"), "lookup", json!({"id": 7})), (&format!("ghost_{turn}"), "teleport", json!({}))],
        )
    }))
    .await;
    let sys = embedded_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await;
    let run = sys.start(&orders_spec(&tools), json!({})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "failed");
    let step = TestSystem::step(&v, "answer");
    assert_eq!(step.error.as_ref().unwrap().code, "max_turns", "{:?}", step.error);
    assert_eq!(llm.hits().len(), 4, "max_turns: 4");
    assert!(tools.hits().is_empty(), "nothing with invalid arguments ran");
    let last = body(&llm.hits()[3]);
    let m = last["messages"].as_array().unwrap();
    let results: Vec<&str> = m.iter().filter(|m| m["role"] == "tool").filter_map(|m| m["content"].as_str()).collect();
    assert!(results[0].contains("do not satisfy the tool's schema") && results[0].contains("id"), "{results:?}");
    assert!(results[1].contains("there is no tool `teleport`") && results[1].contains("lookup, fee"), "{results:?}");
    // A failed attempt reports no cost of its own: it is charged its reservation (fail
    // closed), which covers the four turns it made.
    assert!(step.cost >= Money::parse("0.0016").unwrap(), "{}", step.cost);
    assert_eq!(v.state.budget.spent, step.cost);
}

fn anthropic(blocks: Value, stop: &str) -> String {
    json!({
        "id": "msg_t", "type": "message", "role": "assistant", "model": "claude-test",
        "content": blocks, "stop_reason": stop, "usage": {"input_tokens": 50, "output_tokens": 10}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_travel_as_tool_use_and_tool_result_blocks_on_the_anthropic_protocol() {
    let tools = TestServer::start(service()).await;
    let llm = TestServer::start(model(|turn, _| match turn {
        0 => anthropic(json!([{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"id": "7"}}]), "tool_use"),
        _ => anthropic(json!([{"type": "text", "text": "It has shipped."}]), "end_turn"),
    }))
    .await;
    let sys = embedded_with(|c| priced(c, provider(ProviderKind::Anthropic, &llm))).await;
    let run = sys.start(&orders_spec(&tools), json!({})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    assert_eq!(TestSystem::step(&v, "answer").output.as_ref().unwrap()["text"], "It has shipped.");
    assert_eq!(tools.hits().len(), 1);
    let hits = llm.hits();
    assert_eq!(hits.len(), 2);
    let first = body(&hits[0]);
    assert_eq!(first["tools"][0]["name"], "lookup");
    assert_eq!(first["tools"][0]["input_schema"]["required"], json!(["id"]));
    let second = body(&hits[1]);
    let m = second["messages"].as_array().unwrap();
    assert_eq!(
        m[1],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"id": "7"}}
        ]})
    );
    assert_eq!(m[2]["role"], "user");
    assert_eq!(m[2]["content"][0]["type"], "tool_result");
    assert_eq!(m[2]["content"][0]["tool_use_id"], "toolu_1");
    assert!(m[2]["content"][0]["content"].as_str().unwrap().contains("shipped"));
}

// ---- tool authorisation, decided through the admin API by real users ----

async fn listen(sys: &TestSystem) -> String {
    let app = tollgate::http::router(sys.t().clone(), ADMIN.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn add_user(base: &str, name: &str) -> String {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": name, "groups": ["ops"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// The run's pending request other than `not`, once listed for `token`'s user.
async fn request_of(base: &str, token: &str, run: &str, not: Option<&Value>) -> Value {
    let http = reqwest::Client::new();
    let find = || async {
        let list: Value =
            http.get(format!("{base}/api/requests")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        list.as_array().unwrap().iter().find(|r| r["run"] == run && Some(&r["request"]["id"]) != not).cloned()
    };
    wait_for("a tool-authorisation request", Duration::from_secs(60), || async { find().await.is_some() }).await;
    find().await.unwrap()
}

async fn decide(base: &str, token: &str, request: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/requests/{request}/decision"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn refund_spec(service: &TestServer, forbid_self: bool) -> String {
    format!(
        r#"
id: refunds
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - id: handle
    type: llm
    prompt: "The customer jane.doe@acme-corp.com wants orders 1, 2 and 3 refunded."
    tools:
      - name: refund
        description: Refund an order to the customer
        parameters: {{ type: object, properties: {{ order: {{ type: integer }}, email: {{ type: string }} }}, required: [order, email] }}
        authorize: true
        forbid_self_approval: {forbid_self}
        api_call: {{ method: POST, url: "{base}/refund", body: {{ order: "${{{{ args.order }}}}", email: "${{{{ args.email }}}}" }} }}
"#,
        base = service.url("")
    )
}

/// A model refunding orders 1, 2, 3 one turn at a time, then saying what it did.
fn refunding_model() -> Script {
    model(|turn, request| match turn {
        0..=2 => {
            let order = turn + 1;
            openai_tools(
                &format!("Refunding order {order} as the customer asked."),
                &[(&format!("call_{order}"), "refund", json!({"order": order, "email": "jane.doe@acme-corp.com"}))],
            )
        }
        _ => {
            let results: Vec<String> = request["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap_or("").to_string())
                .collect();
            openai_text(&format!("Done: {}", results.len()))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_needing_authorisation_is_allowed_once_then_for_the_run_through_the_api() {
    let refunds = TestServer::start(service()).await;
    let llm = TestServer::start(refunding_model()).await;
    let sys = embedded_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await;
    let base = listen(&sys).await;
    let alice = add_user(&base, "alice").await;
    let run = sys.start(&refund_spec(&refunds, false), json!({})).await.to_string();

    // Turn 1: refund 1 asks. The card shows tool, arguments (redacted) and the model's reason.
    let r1 = request_of(&base, &alice, &run, None).await;
    assert_eq!(r1["request"]["mode"], "tool_authorisation");
    let ctx = &r1["request"]["context"];
    assert_eq!(ctx["tool"], "refund");
    assert_eq!(ctx["description"], "Refund an order to the customer");
    assert_eq!(ctx["arguments"]["order"], 1);
    assert_eq!(ctx["reason"], "Refunding order 1 as the customer asked.");
    assert!(!r1.to_string().contains("jane.doe@acme-corp.com"), "arguments are redacted: {r1}");
    assert!(ctx["arguments"]["email"].as_str().unwrap().starts_with("[EMAIL"), "{ctx}");
    assert!(refunds.hits().is_empty(), "nothing runs before it is allowed");
    let view = sys.t().view(&RunId::from(run.as_str())).await.unwrap();
    assert!(view.state.is_waiting(), "the run waits (passivated) like for any human request");

    let id1 = r1["request"]["id"].as_str().unwrap().to_string();
    let res = decide(&base, &alice, &id1, json!({"decision": "deny"})).await;
    assert_eq!(res.status(), 422, "deny needs a reason");
    let res = decide(&base, &alice, &id1, json!({"decision": "approve"})).await;
    assert_eq!(res.status(), 422, "approve does not fit a tool authorisation");
    assert!(res.text().await.unwrap().contains("allow_once, allow_for_run, deny"));
    let res = decide(&base, &alice, &id1, json!({"decision": "allow_once"})).await;
    assert_eq!(res.status(), 200);
    let again = decide(&base, &alice, &id1, json!({"decision": "allow_for_run"})).await;
    assert_eq!(again.status(), 409, "a second decision is refused with the first");
    assert_eq!(again.json::<Value>().await.unwrap()["decision"]["decision"], "allow_once");

    // Turn 2: allowed once does not cover refund 2: it asks again; allowed for the run.
    let r2 = request_of(&base, &alice, &run, Some(&r1["request"]["id"])).await;
    assert_ne!(r2["request"]["id"], r1["request"]["id"]);
    assert_eq!(r2["request"]["context"]["arguments"]["order"], 2);
    assert_eq!(refunds.hits().len(), 1, "refund 1 ran once it was allowed");
    let res = decide(&base, &alice, r2["request"]["id"].as_str().unwrap(), json!({"decision": "allow_for_run"})).await;
    assert_eq!(res.status(), 200);

    // Turn 3 runs without asking; the model gets every result and finishes.
    let v = sys.settle(&RunId::from(run.as_str())).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let step = TestSystem::step(&v, "handle");
    assert_eq!(step.output.as_ref().unwrap()["text"], "Done: 3");
    let sent: Vec<Value> = refunds.hits().iter().map(body).collect();
    assert_eq!(
        sent,
        vec![
            json!({"order": 1, "email": "jane.doe@acme-corp.com"}),
            json!({"order": 2, "email": "jane.doe@acme-corp.com"}),
            json!({"order": 3, "email": "jane.doe@acme-corp.com"}),
        ],
        "each refund ran exactly once, with the model's real arguments"
    );
    assert_eq!(llm.hits().len(), 4, "no model turn was asked for twice across the three attempts");
    let statuses: Vec<&str> = step.attempts.iter().map(|a| a.status.label()).collect();
    assert_eq!(statuses, ["suspended", "suspended", "succeeded"]);

    // The audit trail names each decision and who made it.
    let audit: Value = reqwest::Client::new()
        .get(format!("{base}/api/runs/{run}/audit"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("tool."))
        .map(|e| {
            (e["kind"].as_str().unwrap().to_string(), e["by"].as_str().or(e["tool"].as_str()).unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("tool.authorisation_asked".to_string(), "refund".to_string()),
            ("tool.allowed_once".into(), "alice".into()),
            ("tool.authorisation_asked".into(), "refund".into()),
            ("tool.allowed_for_run".into(), "alice".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tool_call_is_not_run_and_the_model_receives_the_reason_and_its_starter_may_not_allow_it() {
    let refunds = TestServer::start(service()).await;
    let llm = TestServer::start(model(|turn, request| match turn {
        0 => openai_tools("Refunding order 1.", &[("call_1", "refund", json!({"order": 1, "email": "x@example.org"}))]),
        _ => {
            let said = request["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string();
            openai_text(&format!("I could not refund: {said}"))
        }
    }))
    .await;
    for sys in [
        embedded_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await,
        redis_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await,
    ] {
        let base = listen(&sys).await;
        let alice = add_user(&base, "alice").await;
        let bob = add_user(&base, "bob").await;
        // Alice starts the run through the API: she may not allow its tool calls.
        let started: Value = reqwest::Client::new()
            .post(format!("{base}/api/runs"))
            .bearer_auth(&alice)
            .json(&json!({"spec": refund_spec(&refunds, true), "params": {}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let run = started["run"].as_str().unwrap().to_string();
        let r = request_of(&base, &bob, &run, None).await;
        let id = r["request"]["id"].as_str().unwrap().to_string();
        let res = decide(&base, &alice, &id, json!({"decision": "allow_once"})).await;
        assert_eq!(res.status(), 403, "self-approval is refused");
        let res =
            decide(&base, &bob, &id, json!({"decision": "deny", "reason": "refunds over 100 need the finance team"}))
                .await;
        assert_eq!(res.status(), 200);
        let v = sys.settle(&RunId::from(run.as_str())).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        let step = TestSystem::step(&v, "handle");
        assert_eq!(
            step.output.as_ref().unwrap()["text"],
            "I could not refund: denied by bob: refunds over 100 need the finance team"
        );
        assert_eq!(step.output.as_ref().unwrap()["tool_calls"][0]["status"], "denied");
        assert!(refunds.hits().is_empty(), "a denied call is never run");
        let audit: Value = reqwest::Client::new()
            .get(format!("{base}/api/runs/{run}/audit"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let denied = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "tool.denied")
            .expect("a tool.denied audit event");
        assert_eq!(denied["by"], "bob");
        assert_eq!(denied["reason"], "refunds over 100 need the finance team");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reservation_covers_every_turn_and_a_budget_that_cannot_pauses_before_the_first_call() {
    let tools = TestServer::start(service()).await;
    let llm = TestServer::start(model(|turn, _| match turn {
        0 => openai_tools("Let me check.", &[("call_1", "lookup", json!({"id": "7"}))]),
        _ => openai_text("Shipped."),
    }))
    .await;
    let sys = embedded_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await;
    let sys = &sys;
    let tools = &tools;
    let estimate = |turns: u32| async move {
        let spec = orders_spec(tools)
            .replace("max_turns: 4", &format!("max_turns: {turns}"))
            .replace("steps:", "budget: { max_cost: 0.0001 }\nsteps:");
        let run = sys.start(&spec, json!({})).await;
        let v = sys.settle(&run).await;
        assert!(v.state.is_waiting(), "the budget cannot cover the reservation: {:?}", v.state.status);
        let request = v.state.budget_request.clone().expect("a budget-extension request");
        let pending = sys.t().pending().await.unwrap();
        let estimate = pending.into_iter().find(|r| r.run == run).unwrap().request.context["estimate"].clone();
        (run, request, estimate)
    };
    let (_, _, two) = estimate(2).await;
    let (run, request, four) = estimate(4).await;
    assert!(llm.hits().is_empty(), "no model call before the budget covers every turn");
    let (two, four) = (Money::parse(two.as_str().unwrap()).unwrap(), Money::parse(four.as_str().unwrap()).unwrap());
    assert!(four > two, "more turns reserve more ({two} for 2, {four} for 4)");
    // Each turn may re-send the conversation grown by an answer and four 8 KiB results: at 2 per
    // million input tokens, four turns reserve well over 4 × (8 KiB × 4 × 2/1M).
    assert!(four > Money::parse("0.0005").unwrap(), "{four}");
    sys.t().decide(&request, tollgate_engine::run::Decision::Approve, "cfo", None).await.unwrap();
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let step = TestSystem::step(&v, "answer");
    assert_eq!(step.cost, Money::parse("0.0009").unwrap(), "charged what the two calls cost, not the reservation");
    assert_eq!(v.state.budget.spent, step.cost);
    assert!(v.state.budget.reserved.is_zero());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_authorised_by_category_asks_only_when_its_arguments_hold_one() {
    let payments = TestServer::start(service()).await;
    let llm = TestServer::start(model(|turn, _| match turn {
        0 => openai_tools(
            "Paying the small invoice.",
            &[("call_1", "pay", json!({"amount": 12, "note": "invoice 4471"}))],
        ),
        1 => openai_tools(
            "Paying by the card the customer gave.",
            &[("call_2", "pay", json!({"amount": 80, "note": "card 4111 1111 1111 1111"}))],
        ),
        _ => openai_text("Both paid."),
    }))
    .await;
    let sys = embedded_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await;
    let spec = format!(
        r#"
id: payer
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - id: pay_invoices
    type: llm
    prompt: "Pay the invoices."
    tools:
      - {{ name: pay, description: Pay an amount, authorize: [card, iban], api_call: {{ method: POST, url: "{base}/pay", body: {{ amount: "${{{{ args.amount }}}}" }} }} }}
"#,
        base = payments.url("")
    );
    let run = sys.start(&spec, json!({})).await;
    let v = sys.settle(&run).await;
    assert!(v.state.is_waiting(), "{:?}", v.state.status);
    assert_eq!(payments.hits().len(), 1, "the call without a card number ran without asking");
    let request =
        sys.t().pending().await.unwrap().into_iter().find(|r| r.run == run).expect("a tool-authorisation request");
    assert_eq!(request.request.context["because"], json!(["card"]));
    assert_eq!(request.request.context["arguments"]["amount"], 80);
    assert!(
        !request.request.context.to_string().contains("4111 1111 1111 1111"),
        "the card number is redacted on the request"
    );
    sys.t().decide(&request.request.id, tollgate_engine::run::Decision::AllowOnce, "ann", None).await.unwrap();
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    assert_eq!(payments.hits().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_item_of_a_for_each_llm_step_has_a_conversation_of_its_own() {
    let tools = TestServer::start(service()).await;
    let llm = TestServer::start(model(|turn, request| {
        let prompt = request["messages"][0]["content"].as_str().unwrap_or("").to_string();
        let order = prompt.trim_start_matches("Where is order ").trim_end_matches('?').to_string();
        match turn {
            0 => openai_tools("", &[(&format!("call_{order}"), "lookup", json!({"id": order}))]),
            _ => openai_text(&format!("Order {order} has shipped.")),
        }
    }))
    .await;
    let sys = embedded_with(|c| priced(c, provider(ProviderKind::Openai, &llm))).await;
    let spec = format!(
        r#"
id: per-order
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
parameters:
  orders: {{ type: array, default: ["7", "8"] }}
steps:
  - id: answer
    type: llm
    for_each: "${{{{ params.orders }}}}"
    prompt: "Where is order {{{{ item }}}}?"
    tools:
      - {{ name: lookup, description: Look an order up, api_call: {{ method: GET, url: "{base}/orders/${{{{ args.id }}}}" }} }}
"#,
        base = tools.url("")
    );
    let run = sys.start(&spec, json!({})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let out = TestSystem::step(&v, "answer").output.clone().unwrap();
    let texts: Vec<&str> = out.as_array().unwrap().iter().map(|o| o["text"].as_str().unwrap_or("")).collect();
    assert_eq!(texts, ["Order 7 has shipped.", "Order 8 has shipped."], "{out:#}");
    let mut paths: Vec<String> = tools.hits().iter().map(|h| h.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/orders/7", "/orders/8"], "each item ran its own call once");
    assert_eq!(llm.hits().len(), 4, "two turns per item");
}
