//! The five shipped templates end to end, each run from the workflow catalogue (the text
//! embedded in the binary) against real local servers: an SMTP sink (aiosmtpd) for email, real
//! HTTP servers for the downstream APIs and the reports service, the engine's own admin API,
//! and a model stand-in speaking the OpenAI Chat Completions protocol (a local HTTP server
//! answering each template's task deterministically from the prompt it is sent).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate::config::Config;
use tollgate::service::RunView;
use tollgate_engine::connections::{Connection, ConnectionKind};
use tollgate_engine::ids::{OwnerId, RunId};
use tollgate_engine::llm::{ModelPrice, ProviderConfig};
use tollgate_engine::money::Money;
use tollgate_engine::run::{Decision, StepStatus};
use tollgate_tests::harness::{Hit, Script, TestServer, TestSystem, embedded_with};

fn chat(content: &str) -> String {
    json!({
        "id": "chatcmpl-t", "object": "chat.completion", "model": "stand-in",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 200, "completion_tokens": 50, "total_tokens": 250}
    })
    .to_string()
}

fn prompt_of(hit: &Hit) -> String {
    let sent: Value = serde_json::from_slice(&hit.body).expect("the engine sends JSON");
    sent["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "user").filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join("\n")
}

fn line<'a>(prompt: &'a str, name: &str) -> &'a str {
    prompt.lines().find_map(|l| l.trim().strip_prefix(name)).map(str::trim).unwrap_or("")
}

/// The model stand-in: answers each template's task (the prompt's `Task:` line) from the prompt.
fn stand_in_model() -> Script {
    Arc::new(|_, hit| {
        let prompt = prompt_of(hit);
        let answer = match line(&prompt, "Task:") {
            "compliance-assessment" => {
                let mut findings = Vec::new();
                if prompt.contains("liability is unlimited") {
                    findings.push(json!({"rule": "[liability.md] Liability caps", "severity": "high", "quote": "liability is unlimited", "explanation": "Policy requires liability to be capped."}));
                }
                if prompt.contains("kept for ten years") {
                    findings.push(json!({"rule": "[retention.md] Retention", "severity": "low", "quote": "kept for ten years", "explanation": "Longer than the six-year retention rule."}));
                }
                json!({"findings": findings, "summary": format!("{} finding(s) against the firm's policies.", findings.len())}).to_string()
            }
            "classify-document" => {
                let category = if prompt.contains("INVOICE") {
                    "invoice"
                } else if prompt.contains("AGREEMENT") {
                    "contract"
                } else {
                    "correspondence"
                };
                let name = line(&prompt, "Document").split_once(": ").map_or("", |(_, n)| n).to_string();
                json!({"category": category, "summary": format!("{name} is a {category}.")}).to_string()
            }
            "refresh-report" => {
                let title = line(&prompt, "Title:");
                json!({
                    "title": title,
                    "body": format!("{title}: refreshed. The figures were brought up to date and the outlook restated for the coming quarter, in plain words for clients."),
                    "changes": "Updated the figures and the outlook."
                })
                .to_string()
            }
            "weekly-summary" => format!("Weekly digest. {} {}", line(&prompt, "Runs:"), if prompt.contains("- none") { "No failures." } else { "Some runs failed." }),
            other => format!("no scripted answer for task {other:?}"),
        };
        (StatusCode::OK, vec![], chat(&answer), Duration::ZERO)
    })
}

/// Config: the model stand-in as the only provider (priced), loopback reachable for http
/// connections, a quick reconcile tick.
fn configure(model: &TestServer) -> impl FnOnce(&mut Config) {
    let p: ProviderConfig = serde_json::from_value(json!({
        "kind": "openai", "base_url": model.url("/v1"), "model": "stand-in", "max_tokens": 1500, "api_key_secret": "openai"
    }))
    .unwrap();
    move |c: &mut Config| {
        c.llm.providers.insert("local".into(), p);
        c.llm.prices.0.insert("stand-in".into(), ModelPrice { input_per_million: Money::parse("1").unwrap(), output_per_million: Money::parse("2").unwrap() });
        c.egress.allow = vec!["127.0.0.1".into()];
    }
}

async fn system(model: &TestServer, owners: &[&str]) -> TestSystem {
    let sys = embedded_with(configure(model)).await;
    for owner in owners {
        sys.t().engine.store.put_secret(&OwnerId::from(*owner), "openai", "sk-stand-in").await.unwrap();
    }
    sys
}


async fn http_connection(sys: &TestSystem, owner: &str, name: &str, base_url: &str, bearer: Option<&str>) {
    let auth = if bearer.is_some() { "bearer" } else { "none" };
    let settings = vec![("base_url".to_string(), base_url.to_string()), ("auth".to_string(), auth.to_string())];
    let c = Connection::from_settings(name, ConnectionKind::Http, &settings).unwrap();
    sys.t().engine.store.put_connection(&OwnerId::from(owner), &c, bearer).await.unwrap();
}

/// Start a run of the catalogue's template `id` (as an installed binary has it).
async fn start(sys: &TestSystem, id: &str, params: Value) -> RunId {
    let entry = sys.t().engine.catalogue.get(id).unwrap_or_else(|e| panic!("{e}"));
    sys.t().start_run(&entry.spec, params.as_object().unwrap()).await.unwrap_or_else(|e| panic!("{id}: {e}"))
}

fn output(v: &RunView, step: &str) -> Value {
    let s = TestSystem::step(v, step);
    s.output.clone().unwrap_or_else(|| panic!("step {step} has no output ({}): {:?}", s.status.label(), s.error))
}



/// The request a run waits on at `step`.
fn waiting_request(v: &RunView, step: &str) -> tollgate_engine::ids::RequestId {
    match &TestSystem::step(v, step).status {
        StepStatus::WaitingHuman { request } => request.clone(),
        other => panic!("{step} is not waiting for a person: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_stale_reports_regenerates_each_stale_report_and_publishes_after_approval() {
    let model = TestServer::start(stand_in_model()).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let day = 86_400_000u64;
    let reports = json!({"reports": [
        {"id": "r1", "title": "Q1 market outlook", "updated_at": now - 200 * day, "body": "Old outlook."},
        {"id": "r2", "title": "Fresh memo", "updated_at": now - 3 * day, "body": "Current."},
        {"id": "r3", "title": "Sanctions overview", "updated_at": now - 120 * day, "body": "Old sanctions list."}
    ]});
    let service = TestServer::start(Arc::new(move |_, hit| {
        if hit.path == "/reports" {
            (StatusCode::OK, vec![], reports.to_string(), Duration::ZERO)
        } else {
            (StatusCode::OK, vec![], r#"{"saved":true}"#.into(), Duration::ZERO)
        }
    }))
    .await;
    let sys = system(&model, &["research"]).await;
    http_connection(&sys, "research", "reports_api", &service.url(""), Some("reports-token")).await;
    let run = start(&sys, "refresh-stale-reports", json!({"max_age_days": 90})).await;
    let v = sys.settle(&run).await;
    assert_eq!(output(&v, "find_stale")["count"], 2);
    let regenerate = TestSystem::step(&v, "regenerate");
    assert_eq!(regenerate.items.len(), 2, "one rewrite per stale report");
    assert!(service.hits().iter().all(|h| h.path == "/reports"), "nothing is published before the approval");
    assert_eq!(service.hits()[0].headers["authorization"], "Bearer reports-token");
    let request = waiting_request(&v, "editor_approval");
    sys.t().decide(&request, Decision::Approve, "eddie", None).await.unwrap();
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let mut puts: Vec<(String, Value)> = service.hits().iter().filter(|h| h.path != "/reports").map(|h| (h.path.clone(), serde_json::from_slice(&h.body).unwrap())).collect();
    assert_eq!(puts.len(), 2);
    // The items publish concurrently: r1 and r3, each with its own rewrite and the approver.
    puts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(puts[0].0, "/reports/r1");
    assert_eq!(puts[1].0, "/reports/r3");
    assert_eq!(puts[0].1["title"], "Q1 market outlook");
    assert!(puts[1].1["body"].as_str().unwrap().starts_with("Sanctions overview: refreshed."), "{}", puts[1].1);
    assert_eq!(puts[1].1["approved_by"], "eddie");
}

#[test]
fn every_template_has_a_trigger_or_a_one_command_run_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for (file, _) in tollgate::catalogue::SHIPPED {
        let id = file.trim_end_matches(".yaml");
        assert!(readme.contains(&format!("scripts/demo-template {id}")) || id == "client-intake", "README has no one-command run of {id}");
    }
}
