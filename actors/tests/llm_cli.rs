//! The `llm` step through the real binary: `tollgate secrets set` reads a provider key from
//! stdin (and refuses an empty one), `tollgate run` calls a local server speaking OpenAI Chat
//! Completions with that key (provider from `TOLLGATE_LLM_*`, prices from a file), and
//! `runs show` prints the step's model usage and cost.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::json;

const SPEC: &str = r#"
id: cli-draft
owner: firm
steps:
  - { id: draft, type: llm, prompt: "Say hello to {{ params.name }}.", max_tokens: 50 }
parameters:
  name: { type: string, default: "Ada" }
"#;

fn tollgate(data: &std::path::Path, model_url: &str, prices: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.arg("--data-dir")
        .arg(data)
        .env_remove("TOLLGATE_BACKEND")
        .env("TOLLGATE_LLM_BASE_URL", model_url)
        .env("TOLLGATE_LLM_MODEL", "small-model")
        .env("TOLLGATE_LLM_API_KEY_SECRET", "openai")
        .env("TOLLGATE_LLM_PRICES_FILE", prices);
    c
}

#[test]
fn a_key_set_from_stdin_reaches_the_provider_and_runs_show_prints_usage_and_cost() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen_by_server = seen.clone();
    let addr = runtime.block_on(async move {
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            post(move |headers: HeaderMap| {
                let seen = seen_by_server.clone();
                async move {
                    seen.lock().unwrap().push(headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned());
                    axum::Json(json!({
                        "model": "small-model",
                        "choices": [{"message": {"role": "assistant", "content": "Hello, Ada!"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5}
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let prices = dir.path().join("prices.toml");
    std::fs::write(&prices, "[small-model]\ninput_per_million = \"1\"\noutput_per_million = \"2\"\n").unwrap();
    let url = format!("http://{addr}/v1");

    // An empty stdin is refused, naming how to pass the value.
    let out = tollgate(&data, &url, &prices)
        .args(["secrets", "set", "openai", "--owner", "firm"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no value on stdin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = tollgate(&data, &url, &prices)
        .args(["secrets", "set", "openai", "--owner", "firm"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"sk-cli-4242\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("sk-cli-4242") && !stderr.contains("sk-cli-4242"), "the value is never printed");

    let spec = dir.path().join("draft.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = tollgate(&data, &url, &prices).args(["run"]).arg(&spec).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(seen.lock().unwrap().as_slice(), ["Bearer sk-cli-4242"], "the trailing newline is not part of the key");
    let run = summary["run"].as_str().unwrap();
    assert_eq!(summary["steps"][0]["usage"]["cost"], "0.00002", "10 × 1/1M + 5 × 2/1M");

    let out = tollgate(&data, &url, &prices).args(["runs", "show", run]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("model: default/small-model, 1 call(s), 10 tokens in, 5 out, cost 0.00002"), "{shown}");
}
