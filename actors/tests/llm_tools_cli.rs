//! An `llm` step's tool loop through the real binary. kill -9 of a `tollgate run` process in the
//! middle of the loop, then `tollgate resume`: the conversation continues from its turn journal
//! — the model turn that had answered is not asked for again and the tool call that had
//! completed is not run again (counted at the model server and at the tool's HTTP service).
//! And a tool needing authorisation: `tollgate run` stops at the request, `tollgate decide …
//! deny --reason` answers it and the model receives the reason.

#[allow(dead_code)] // the helpers other process tests use
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::routing::{any, post};
use serde_json::{Value, json};
use support::{start_run_with, tollgate, wait_until};

#[derive(Default)]
struct Counts {
    /// Model requests by how many tool results their conversation held (the turn they ask for).
    model_by_turn: HashMap<usize, usize>,
    /// Tool service requests by path.
    tool_by_path: HashMap<String, usize>,
    /// Tool results the model was sent.
    results_seen: Vec<String>,
}

type Shared = Arc<Mutex<Counts>>;

/// An OpenAI-protocol model: turn 0 looks order 1 up, turn 1 (slow, so a kill lands while it
/// is in flight) looks order 2 up, turn 2 answers.
async fn model(State(counts): State<Shared>, axum::Json(request): axum::Json<Value>) -> axum::Json<Value> {
    let turn = request["messages"].as_array().map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count());
    *counts.lock().unwrap().model_by_turn.entry(turn).or_default() += 1;
    let message = match turn {
        0 | 1 => {
            if turn == 1 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            let id = turn + 1;
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": format!("call_{id}"), "type": "function",
                "function": {"name": "lookup", "arguments": json!({"id": id.to_string()}).to_string()}}]})
        }
        _ => json!({"role": "assistant", "content": "Both orders have shipped."}),
    };
    axum::Json(
        json!({"model": "crash-model", "choices": [{"message": message, "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
    )
}

async fn tool(State(counts): State<Shared>, uri: Uri) -> axum::Json<Value> {
    *counts.lock().unwrap().tool_by_path.entry(uri.path().to_string()).or_default() += 1;
    axum::Json(json!({"status": "shipped"}))
}

fn spec(tools: &str) -> String {
    format!(
        r#"
id: tool-crash
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - id: answer
    type: llm
    prompt: "Where are orders 1 and 2?"
    max_tokens: 50
    tools:
      - name: lookup
        description: Look an order up
        parameters: {{ type: object, properties: {{ id: {{ type: string }} }}, required: [id] }}
        api_call: {{ method: GET, url: "{tools}/orders/${{{{ args.id }}}}" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_tool_loop_resumes_without_repeating_a_model_turn_or_a_tool_call() {
    let counts: Shared = Arc::default();
    let app =
        axum::Router::new().route("/v1/chat/completions", post(model)).fallback(any(tool)).with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tools.yaml");
    std::fs::write(&file, spec(&base)).unwrap();
    let data = dir.path().join("data");
    let model_url = format!("{base}/v1");
    let c = counts.clone();
    let result = tokio::task::spawn_blocking(move || {
        let with_model = |mut cmd: std::process::Command| {
            cmd.env("TOLLGATE_LLM_BASE_URL", &model_url).env("TOLLGATE_LLM_MODEL", "crash-model");
            cmd
        };
        let (mut child, run) = start_run_with(&data, &file, with_model);
        // Turn 1 is asked for only once the first tool result is in the turn journal: kill then,
        // while that model call is in flight.
        wait_until("the model's second turn", Duration::from_secs(60), || {
            c.lock().unwrap().model_by_turn.contains_key(&1)
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let out = with_model(tollgate(&data)).args(["resume", &run, "--json"]).output().unwrap();
        assert!(out.status.success(), "resume failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    })
    .await
    .unwrap();
    let summary = result;
    assert_eq!(summary["status"], "succeeded", "{summary:#}");
    let counts = counts.lock().unwrap();
    assert_eq!(
        counts.model_by_turn.get(&0),
        Some(&1),
        "the first turn had answered before the kill: never asked again ({:?})",
        counts.model_by_turn
    );
    assert_eq!(
        counts.tool_by_path.get("/orders/1"),
        Some(&1),
        "the completed tool call ran once ({:?})",
        counts.tool_by_path
    );
    assert_eq!(counts.tool_by_path.get("/orders/2"), Some(&1), "{:?}", counts.tool_by_path);
    assert_eq!(counts.model_by_turn.get(&2), Some(&1));
    let step = summary["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "answer"))
        .cloned()
        .unwrap_or(Value::Null);
    let attempts: Vec<&str> = step["attempt_log"]
        .as_array()
        .map(|a| a.iter().filter_map(|a| a["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(attempts, ["interrupted", "succeeded"], "{step:#}");
}

/// A model that asks to refund order 9, then repeats what the tool answered.
async fn refunding_model(State(counts): State<Shared>, axum::Json(request): axum::Json<Value>) -> axum::Json<Value> {
    let results: Vec<String> = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect();
    {
        let mut c = counts.lock().unwrap();
        *c.model_by_turn.entry(results.len()).or_default() += 1;
        c.results_seen.extend(results.iter().cloned());
    }
    let message = match results.first() {
        None => {
            json!({"role": "assistant", "content": "Refunding as asked.", "tool_calls": [{"id": "call_9", "type": "function",
            "function": {"name": "refund", "arguments": "{\"order\": 9}"}}]})
        }
        Some(said) => json!({"role": "assistant", "content": format!("Not refunded: {said}")}),
    };
    axum::Json(
        json!({"model": "cli-model", "choices": [{"message": message, "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_decide_denies_a_tool_call_with_a_reason_the_model_receives() {
    let counts: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(refunding_model))
        .fallback(any(tool))
        .with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refund.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
id: cli-refund
owner: ops
egress: {{ allow: ["127.0.0.1"] }}
steps:
  - id: answer
    type: llm
    prompt: "Refund order 9."
    tools:
      - {{ name: refund, description: Refund an order, authorize: true, api_call: {{ method: POST, url: "{base}/refund" }} }}
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let model_url = format!("{base}/v1");
    let (ran, decided) = tokio::task::spawn_blocking(move || {
        let with_model = |mut cmd: std::process::Command| {
            cmd.env("TOLLGATE_LLM_BASE_URL", &model_url).env("TOLLGATE_LLM_MODEL", "cli-model");
            cmd
        };
        let ran = with_model(tollgate(&data)).arg("run").arg(&file).arg("--json").output().unwrap();
        let summary: Value = serde_json::from_slice(&ran.stdout).unwrap_or(Value::Null);
        let run = summary["run"].as_str().unwrap_or_default().to_string();
        let decided = with_model(tollgate(&data))
            .args([
                "decide",
                &run,
                "answer",
                "deny",
                "--reason",
                "order 9 is past the refund window",
                "--by",
                "carol",
                "--json",
            ])
            .output()
            .unwrap();
        (summary, decided)
    })
    .await
    .unwrap();
    assert_eq!(ran["status"], "waiting", "`tollgate run` stops at the authorisation request: {ran:#}");
    assert!(decided.status.success(), "decide failed: {}", String::from_utf8_lossy(&decided.stderr));
    let stdout = String::from_utf8_lossy(&decided.stdout);
    let summary: Value = serde_json::from_str(
        stdout.lines().skip_while(|l| !l.starts_with('{')).collect::<Vec<_>>().join("\n").as_str(),
    )
    .unwrap_or(Value::Null);
    assert_eq!(summary["status"], "succeeded", "{stdout}");
    let step = summary["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "answer"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(step["decision"]["decision"]["decision"], "deny", "{step:#}");
    assert_eq!(step["decision"]["by"], "carol");
    assert_eq!(
        step["tool_calls"],
        json!([{"id": "call_9", "tool": "refund", "status": "denied", "attempt": 2}]),
        "{step:#}"
    );
    let counts = counts.lock().unwrap();
    assert!(counts.tool_by_path.is_empty(), "the denied call was never made: {:?}", counts.tool_by_path);
    assert_eq!(
        counts.model_by_turn.get(&0),
        Some(&1),
        "the first turn was not asked for again: {:?}",
        counts.model_by_turn
    );
    assert_eq!(counts.model_by_turn.get(&1), Some(&1));
    assert_eq!(
        counts.results_seen,
        ["denied by carol: order 9 is past the refund window"],
        "the model received the reason as the tool's result"
    );
}
