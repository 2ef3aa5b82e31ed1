//! The six shipped templates end to end, each run from the workflow catalogue (the text
//! embedded in the binary) against real local servers: an SMTP sink (aiosmtpd) for email, real
//! HTTP servers for the downstream APIs, the reports service and the calendar, the engine's own
//! admin API, and a model stand-in speaking the OpenAI Chat Completions protocol (a local HTTP
//! server answering each template's task deterministically from the prompt it is sent). The
//! client intake also runs with the demo's own data and stand-in model (`scripts/demo-llm.py`,
//! a real process), as `scripts/demo` does.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate::config::Config;
use tollgate::service::RunView;
use tollgate_connectors::docs::{DocStore, Format, SourceDoc};
use tollgate_engine::connections::{Connection, ConnectionKind};
use tollgate_engine::ids::{OwnerId, RunId};
use tollgate_engine::llm::{ModelPrice, ProviderConfig};
use tollgate_engine::money::Money;
use tollgate_engine::run::{Decision, StepStatus};
use tollgate_engine::store::Note;
use tollgate_tests::harness::{Hit, Script, TestServer, TestSystem, embedded_with, wait_for};
use tollgate_tests::smtp_sink::SmtpSink;

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
    sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn line<'a>(prompt: &'a str, name: &str) -> &'a str {
    prompt.lines().find_map(|l| l.trim().strip_prefix(name)).map(str::trim).unwrap_or("")
}

/// The search results a research summary is sent (`[hit-N] SOURCE` then the text), in order:
/// `(id, source, text)`.
fn search_results(prompt: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for l in prompt.lines() {
        if l.starts_with("Answer with the summary only.") {
            break;
        }
        match l.strip_prefix('[').and_then(|r| r.split_once("] ")).filter(|(id, _)| id.starts_with("hit-")) {
            Some((id, source)) => out.push((id.to_string(), source.to_string(), String::new())),
            None => {
                if let Some(last) = out.last_mut() {
                    last.2.push_str(l);
                    last.2.push('\n');
                }
            }
        }
    }
    out
}

/// The first percentage between 5 and 12 in `text`.
fn fee_rate(text: &str) -> Option<f64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        (w[1].starts_with('%')).then(|| w[0].parse::<f64>().ok()).flatten().filter(|r| (5.0..=12.0).contains(r))
    })
}

/// An engagement letter as JSON: the fee at the rate of the first similar past engagement the
/// prompt lists with one (the letter's `precedent`), else 8 %.
fn engagement_letter(prompt: &str) -> String {
    let (client, matter) = (line(prompt, "Client:"), line(prompt, "Matter:"));
    let value: f64 = line(prompt, "Matter value:").parse().unwrap_or(0.0);
    let listed: Vec<(String, String)> = prompt
        .split("\n[hit-")
        .skip(1)
        .filter_map(|part| {
            part.split_once("] ")
                .and_then(|(_, rest)| rest.split_once(": "))
                .map(|(source, text)| (source.to_string(), text.to_string()))
        })
        .collect();
    let followed = listed.iter().find_map(|(source, text)| fee_rate(text).map(|r| (source.clone(), r)));
    let rate = followed.as_ref().map_or(8.0, |f| f.1);
    let body = format!(
        "Dear {client},\n\nScope of engagement. We will act for you in the matter \"{matter}\".\nFees. Our fixed fee is {} USD.\nLimitation of liability. Our liability is limited to the fee paid.\nTermination. Either party may end this engagement by written notice.\n\nYours sincerely,\nThe Partners",
        value * rate / 100.0
    );
    json!({"address_block": format!("{client}\nRegistered office on file"), "fee": value * rate / 100.0, "precedent": followed.map(|f| f.0), "body": body}).to_string()
}

/// A KYC document classified by its words: kind, holder, expiry date, confidence.
fn kyc_classification(prompt: &str) -> String {
    let text = prompt.split_once("Document:").map_or(prompt, |(_, t)| t);
    let kind = if text.contains("PASSPORT") {
        "passport"
    } else if text.contains("ELECTRICITY BILL") {
        "utility_bill"
    } else {
        "other"
    };
    let holder = match line(text, "Account holder:") {
        "" => format!("{} {}", line(text, "Given names:"), line(text, "Surname:")).trim().to_string(),
        h => h.to_string(),
    };
    let expires = Some(line(text, "Date of expiry:")).filter(|d| !d.is_empty());
    json!({"kind": kind, "holder": holder, "expires": expires, "confidence": if kind == "other" { 0.4 } else { 0.95 }})
        .to_string()
}

/// The model stand-in: answers each template's task (the prompt's `Task:` line) from the prompt.
fn stand_in_model() -> Script {
    Arc::new(|_, hit| {
        let prompt = prompt_of(hit);
        let answer = match line(&prompt, "Task:") {
            "precedent-summary" => search_results(&prompt)
                .iter()
                .map(|(id, source, text)| {
                    format!(
                        "{source}: {} [{id}]",
                        text.lines().find(|l| l.contains("Fee basis")).unwrap_or("no fee basis").trim()
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
            "engagement-letter" => engagement_letter(&prompt),
            "kyc-classify" => kyc_classification(&prompt),
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
            "weekly-summary" => format!(
                "Weekly digest. {} {}",
                line(&prompt, "Runs:"),
                if prompt.contains("- none") { "No failures." } else { "Some runs failed." }
            ),
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
        c.llm.prices.0.insert(
            "stand-in".into(),
            ModelPrice {
                input_per_million: Money::parse("1").unwrap(),
                output_per_million: Money::parse("2").unwrap(),
            },
        );
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

async fn smtp_connection(sys: &TestSystem, owner: &str, name: &str, sink: &SmtpSink) {
    let settings: Vec<(String, String)> = [
        ("host", "127.0.0.1".to_string()),
        ("port", sink.port.to_string()),
        ("security", "none".into()),
        ("from", "Tollgate <tollgate@firm.test>".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let c = Connection::from_settings(name, ConnectionKind::Smtp, &settings).unwrap();
    sys.t().engine.store.put_connection(&OwnerId::from(owner), &c, None).await.unwrap();
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

fn template_text(id: &str) -> &'static str {
    tollgate::catalogue::SHIPPED
        .iter()
        .find(|(f, _)| *f == format!("{id}.yaml"))
        .map(|(_, t)| *t)
        .expect("a shipped template")
}

async fn wait_for_mail(sink: &SmtpSink, n: usize) -> Vec<String> {
    wait_for("the mail to arrive", Duration::from_secs(30), || async { sink.messages().len() >= n }).await;
    sink.messages()
}

/// The request a run waits on at `step`.
fn waiting_request(v: &RunView, step: &str) -> tollgate_engine::ids::RequestId {
    match &TestSystem::step(v, step).status {
        StepStatus::WaitingHuman { request } => request.clone(),
        other => panic!("{step} is not waiting for a person: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_check_finds_the_rules_flags_a_breach_for_a_reviewer_then_files_and_mails_the_report() {
    let model = TestServer::start(stand_in_model()).await;
    let sys = system(&model, &["compliance"]).await;
    let sink = SmtpSink::start();
    smtp_connection(&sys, "compliance", "compliance_mail", &sink).await;
    let docs = DocStore::new(sys.t().engine.store.clone());
    let policy = |name: &str, text: &str| SourceDoc {
        source: name.into(),
        format: Format::Markdown,
        bytes: text.as_bytes().to_vec(),
    };
    docs.ingest(
        &OwnerId::from("compliance"),
        "policies",
        vec![
            policy("liability.md", "# Liability caps\nEvery contract caps the firm's liability at the fees paid; liability is never unlimited."),
            policy("retention.md", "# Retention\nClient data in a contract is retained for at most six years (data protection)."),
        ],
    )
    .await
    .unwrap();

    let contract = "SUPPLY AGREEMENT. The supplier's liability is unlimited. Records are kept for ten years.";
    let run = start(
        &sys,
        "compliance-check",
        json!({"document_name": "acme-supply.txt", "document_text": contract, "report_to": "legal@firm.test"}),
    )
    .await;
    let v = sys.settle(&run).await;
    // The model was sent the policy passages research found, and the document.
    let sent = prompt_of(model.hits().last().unwrap());
    assert!(
        sent.contains("[liability.md]") && sent.contains("liability at the fees paid") && sent.contains(contract),
        "{sent}"
    );
    assert_eq!(
        output(&v, "evaluate"),
        json!({"flagged": true, "flagged_count": 1, "counts": {"low": 1, "medium": 0, "high": 1}, "total": 2})
    );
    // A high finding: the reviewer must sign off before anything is filed or sent.
    let request = waiting_request(&v, "review");
    assert!(sink.messages().is_empty(), "nothing is mailed before the review");
    sys.t().decide(&request, Decision::Approve, "rita", Some("agreed, back to the supplier".into())).await.unwrap();
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let mail = wait_for_mail(&sink, 1).await;
    assert!(mail[0].contains("To: legal@firm.test"), "{}", mail[0]);
    assert!(mail[0].contains("Subject: Compliance report: acme-supply.txt (FLAGGED, accepted by rita)"), "{}", mail[0]);
    assert!(mail[0].contains("[HIGH] [liability.md] Liability caps: \"liability is unlimited\""), "{}", mail[0]);
    let note = sys
        .t()
        .engine
        .store
        .note(&OwnerId::from("compliance"), "compliance/acme-supply.txt")
        .await
        .unwrap()
        .expect("the report is filed in memory");
    assert!(
        note.text.contains("Verdict: FLAGGED, accepted by rita") && note.tags == ["compliance", "report"],
        "{note:?}"
    );

    // A clean document needs no reviewer.
    let run = start(&sys, "compliance-check", json!({"document_name": "nda.txt", "document_text": "MUTUAL NDA. Liability is capped at the fees paid.", "report_to": "legal@firm.test"})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    assert_eq!(TestSystem::step(&v, "review").status.label(), "skipped");
    let mail = wait_for_mail(&sink, 2).await;
    assert!(
        mail.iter().any(|m| m.contains("Compliance report: nda.txt") && m.contains("Verdict: no findings")),
        "{mail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_batch_docs_classifies_each_document_files_them_by_category_and_notifies_the_team() {
    let model = TestServer::start(stand_in_model()).await;
    let sys = system(&model, &["ops"]).await;
    sys.t().users.add("ivy", tollgate_engine::users::Role::Operator, vec!["intake".into()], None).await.unwrap();
    let batch = json!([
        {"name": "march.txt", "text": "INVOICE 2026-031. Amount due: 4,200 EUR for March services."},
        {"name": "lease.md", "text": "# LEASE AGREEMENT\nThe tenant leases the warehouse for five years."},
        {"name": "letter.txt", "text": "Dear counsel, thank you for your call on Tuesday."}
    ]);
    let run = start(&sys, "ingest-batch-docs", json!({"documents": batch})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    // One model call per document, each an item of its own.
    let classify = TestSystem::step(&v, "classify");
    assert_eq!(classify.items.len(), 3);
    let categories: Vec<Value> =
        output(&v, "classify").as_array().unwrap().iter().map(|o| o["json"]["category"].clone()).collect();
    assert_eq!(categories, [json!("invoice"), json!("contract"), json!("correspondence")]);
    // Filed into the intake collection under their category: research finds them.
    let docs = DocStore::new(sys.t().engine.store.clone());
    let hits = docs.search(&OwnerId::from("ops"), "intake", "warehouse tenant", 3).await.unwrap();
    assert_eq!(hits[0].hit.source, "contract/lease.md", "{hits:?}");
    assert_eq!(output(&v, "file_documents")["total_documents"], 3);
    // The team is told, with each document's place and summary.
    let told = sys.t().engine.store.notifications("ivy", 10).await.unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    let n = serde_json::to_value(&told[0]).unwrap();
    assert_eq!(n["subject"], "3 document(s) filed into intake");
    assert!(n["message"].as_str().unwrap().contains("invoice/march.txt: march.txt is a invoice."), "{n}");

    // Through the upload trigger: one uploaded file is a batch of one.
    let h = tollgate_tests::triggers::Hooked::start(sys, template_text("ingest-batch-docs")).await;
    let boundary = "tollgate-template-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"april.txt\"\r\nContent-Type: text/plain\r\n\r\nINVOICE 77. Due now.\r\n--{boundary}--\r\n"
    );
    let resp = reqwest::Client::new()
        .post(h.url("upload"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let runs = h.sys.t().engine.store.list_runs().await.unwrap();
    let uploaded = runs.iter().find(|r| **r != run).expect("the upload started a run").clone();
    let v = h.sys.settle(&uploaded).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    assert_eq!(output(&v, "label")["filed"][0]["name"], "invoice/april.txt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_webhook_data_validates_transforms_and_delivers_a_signed_event_and_escalates_a_failure() {
    let model = TestServer::start(stand_in_model()).await;
    // The downstream API: the first order is taken; an order for customer "Broken" fails with a 500 every time.
    let downstream = TestServer::start(Arc::new(|_, hit| {
        let sent: Value = serde_json::from_slice(&hit.body).unwrap_or(Value::Null);
        if sent["customer_name"] == "Broken" {
            return (StatusCode::INTERNAL_SERVER_ERROR, vec![], r#"{"error":"database down"}"#.into(), Duration::ZERO);
        }
        (
            StatusCode::CREATED,
            vec![],
            json!({"id": "erp-1", "external_id": sent["external_id"]}).to_string(),
            Duration::ZERO,
        )
    }))
    .await;
    let sys = system(&model, &["ops"]).await;
    sys.t().users.add("oscar", tollgate_engine::users::Role::Operator, vec!["ops".into()], None).await.unwrap();
    http_connection(&sys, "ops", "downstream_api", &downstream.url(""), None).await;
    let h = tollgate_tests::triggers::Hooked::start(sys, template_text("process-webhook-data")).await;
    let secret = h.secret("orders").await;
    let deliver = |body: Value, id: &'static str| {
        let body = serde_json::to_vec(&body).unwrap();
        let sig = tollgate_engine::trigger::signature::sign_hex(&secret, &body);
        let url = h.url("orders");
        async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("X-Signature-256", sig)
                .header("Idempotency-Key", id)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let order = |customer: &str| json!({"event": "order.created", "order": {"id": "SO-1001", "customer": customer, "currency": "EUR", "lines": [{"sku": "A-1", "quantity": 3, "unit_price": 12.5}, {"sku": "B-2", "quantity": 1, "unit_price": 100}]}});

    // An unsigned delivery is refused; a body without `order` fails the trigger's schema.
    let unsigned = reqwest::Client::new()
        .post(h.url("orders"))
        .header("content-type", "application/json")
        .body(order("Acme").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(deliver(json!({"event": "order.created"}), "d-0").await, 422);

    assert_eq!(deliver(order("Acme GmbH"), "d-1").await, 202);
    let first = h.sys.t().engine.store.list_runs().await.unwrap()[0].clone();
    let v = h.sys.settle(&first).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let hit = &downstream.hits()[0];
    assert_eq!(hit.path, "/v1/orders");
    let sent: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(
        sent,
        json!({"external_id": "SO-1001", "action": "create", "customer_name": "Acme GmbH", "currency": "EUR", "total_minor": 13750, "items": [{"sku": "A-1", "qty": 3, "price_minor": 1250}, {"sku": "B-2", "qty": 1, "price_minor": 10000}]})
    );
    assert!(hit.headers.get("idempotency-key").is_some());
    assert_eq!(TestSystem::step(&v, "escalate").status.label(), "skipped");

    // The downstream API keeps failing: retried, then a person is told.
    assert_eq!(deliver(order("Broken"), "d-2").await, 202);
    let runs = h.sys.t().engine.store.list_runs().await.unwrap();
    let second = runs.iter().find(|r| **r != first).unwrap().clone();
    let v = h.sys.settle(&second).await;
    assert_eq!(v.state.status.label(), "failed");
    assert_eq!(TestSystem::step(&v, "deliver").attempts.len(), 4, "retried up to max_attempts");
    assert_eq!(TestSystem::step(&v, "escalate").status.label(), "succeeded");
    let told = h.sys.t().engine.store.notifications("oscar", 10).await.unwrap();
    let n = serde_json::to_value(&told[0]).unwrap();
    assert_eq!(n["subject"], "Webhook order event not processed");
    assert!(n["message"].as_str().unwrap().contains("deliver: failed"), "{n}");

    // An invalid order (a fractional quantity) fails validation, naming the field, and is escalated too.
    let mut bad = order("Acme GmbH");
    bad["order"]["id"] = json!("SO-1002");
    bad["order"]["lines"][0]["quantity"] = json!(1.5);
    assert_eq!(deliver(bad, "d-3").await, 202);
    let third = loop {
        let runs = h.sys.t().engine.store.list_runs().await.unwrap();
        if let Some(r) = runs.iter().find(|r| **r != first && **r != second) {
            break r.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v = h.sys.settle(&third).await;
    let e = TestSystem::step(&v, "validate").error.clone().unwrap();
    assert!(e.message.contains("order.lines[0].quantity: a whole number"), "{}", e.message);
    assert_eq!(downstream.hits().len(), 5, "nothing more was delivered");
    wait_for("the second escalation", Duration::from_secs(30), || {
        let t = h.sys.t().clone();
        async move { t.engine.store.notifications("oscar", 10).await.unwrap().len() == 2 }
    })
    .await;
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
    let mut puts: Vec<(String, Value)> = service
        .hits()
        .iter()
        .filter(|h| h.path != "/reports")
        .map(|h| (h.path.clone(), serde_json::from_slice(&h.body).unwrap()))
        .collect();
    assert_eq!(puts.len(), 2);
    // The items publish concurrently: r1 and r3, each with its own rewrite and the approver.
    puts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(puts[0].0, "/reports/r1");
    assert_eq!(puts[1].0, "/reports/r3");
    assert_eq!(puts[0].1["title"], "Q1 market outlook");
    assert!(puts[1].1["body"].as_str().unwrap().starts_with("Sanctions overview: refreshed."), "{}", puts[1].1);
    assert_eq!(puts[1].1["approved_by"], "eddie");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekly_memory_summary_reads_the_weeks_notes_and_runs_and_mails_the_summary() {
    let model = TestServer::start(stand_in_model()).await;
    let sys = system(&model, &["ops"]).await;
    let sink = SmtpSink::start();
    smtp_connection(&sys, "ops", "office_mail", &sink).await;
    // The engine's own admin API, read with an ops user's token.
    let reader = sys
        .t()
        .users
        .add("digest", tollgate_engine::users::Role::Operator, vec!["ops".into()], None)
        .await
        .unwrap()
        .token
        .to_string();
    let app = tollgate::http::router(sys.t().clone(), "boot".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    http_connection(&sys, "ops", "tollgate_api", &api, Some(&reader)).await;
    // The week: two notes, one succeeded and one failed run of the owner.
    let store = &sys.t().engine.store;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for (key, text) in
        [("intake/1", "Filed 3 documents for Acme."), ("compliance/nda.txt", "NDA checked: no findings.")]
    {
        store
            .put_note(
                &OwnerId::from("ops"),
                Note {
                    key: key.into(),
                    text: text.into(),
                    tags: vec!["ops".into()],
                    at: now - 3_600_000,
                    workflow: None,
                    run: None,
                },
            )
            .await
            .unwrap();
    }
    let ok =
        sys.start("id: chores\nowner: ops\nsteps:\n  - { id: a, type: code, script: \"return 1\" }\n", json!({})).await;
    let bad = sys
        .start(
            "id: chores-2\nowner: ops\nsteps:\n  - { id: a, type: code, script: \"throw new Error('boom')\" }\n",
            json!({}),
        )
        .await;
    sys.settle(&ok).await;
    sys.settle(&bad).await;

    let run = start(&sys, "weekly-memory-summary", json!({"to": "owner@firm.test"})).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let digest = output(&v, "digest");
    assert_eq!(digest["note_count"], 2);
    // The two runs of the week, and the summary's own (open) run.
    assert_eq!(digest["run_count"], 3);
    assert!(digest["failed"][0].as_str().unwrap().starts_with("chores-2 "), "{digest}");
    let sent = prompt_of(model.hits().last().unwrap());
    assert!(
        sent.contains("[intake/1] Filed 3 documents for Acme.") && sent.contains("chores: 1 succeeded, 0 failed"),
        "{sent}"
    );
    let mail = wait_for_mail(&sink, 1).await;
    assert!(
        mail[0].contains("To: owner@firm.test")
            && mail[0].contains("Weekly summary: 3 runs, 2 notes")
            && mail[0].contains("Weekly digest. 3 Some runs failed."),
        "{}",
        mail[0]
    );
    let kept = store
        .notes(
            &OwnerId::from("ops"),
            &tollgate_engine::store::NoteFilter { since: 0, tag: Some("weekly-summary"), limit: 10 },
        )
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
}

/// The demo's stand-in model (`scripts/demo-llm.py`), as a real process on a free port.
struct StandIn {
    child: std::process::Child,
    port: u16,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn stand_in() -> StandIn {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo-llm.py");
    let child = std::process::Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .spawn()
        .expect("python3 runs the stand-in");
    let s = StandIn { child, port };
    tollgate_tests::harness::wait_for("the stand-in model listens", Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    s
}

/// The demo data directory `scripts/demo-data/NAME`, ingested as `tollgate docs ingest` does
/// (each file under its path as given, `scripts/demo-data/NAME/FILE`).
async fn ingest_demo_data(sys: &TestSystem, owner: &str, collection: &str, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo-data").join(name);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let docs = files
        .iter()
        .map(|f| SourceDoc {
            source: format!("scripts/demo-data/{name}/{}", f.file_name().unwrap().to_string_lossy()),
            format: Format::Markdown,
            bytes: std::fs::read(f).unwrap(),
        })
        .collect();
    DocStore::new(sys.t().engine.store.clone()).ingest(&OwnerId::from(owner), collection, docs).await.unwrap();
}

/// The pending request of `run` at `step`, as its assignee sees it.
async fn pending(sys: &TestSystem, run: &RunId, step: &str) -> tollgate_engine::run::HumanRequestSpec {
    let all = sys.t().pending().await.unwrap();
    all.into_iter()
        .find(|r| r.run == *run && r.request.step.as_ref().is_some_and(|s| s.as_str() == step))
        .unwrap_or_else(|| panic!("no request at {step}"))
        .request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_intake_stops_on_a_conflict_in_the_ingested_register_and_takes_a_clear_client_through_kyc_and_the_partner()
 {
    let model = TestServer::start(stand_in_model()).await;
    let calendar =
        TestServer::start(Arc::new(|_, _| (StatusCode::CREATED, vec![], r#"{"booked":true}"#.into(), Duration::ZERO)))
            .await;
    let sys = system(&model, &["ops"]).await;
    ingest_demo_data(&sys, "ops", "conflicts-register", "conflicts-register").await;
    ingest_demo_data(&sys, "ops", "past-engagements", "past-engagements").await;

    // An adverse party that is our client (Globex Corporation, written differently): stopped
    // before any model is asked anything.
    let run =
        start(&sys, "client-intake", json!({"client_name": "Acme Logistics Ltd", "adverse_parties": ["Globex Corp."]}))
            .await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let decision = output(&v, "conflict_decision");
    assert_eq!(decision["clear"], false, "{decision}");
    assert_eq!(decision["conflicts"][0]["party"], "Globex Corp.");
    assert_eq!(decision["conflicts"][0]["entry"], "Globex Corporation");
    assert_eq!(decision["conflicts"][0]["role"], "client");
    assert_eq!(decision["conflicts"][0]["source"], "scripts/demo-data/conflicts-register/globex-corporation.md");
    for step in ["precedents", "draft_letter", "kyc_classify", "engagement_letter", "intake_memo", "welcome_pack"] {
        assert_eq!(TestSystem::step(&v, step).status.label(), "skipped", "{step}");
    }
    // The client itself on the other side of one of our matters is a conflict too.
    let run = start(&sys, "client-intake", json!({"client_name": "Umbrella Holdings PLC"})).await;
    let v = sys.settle(&run).await;
    let decision = output(&v, "conflict_decision");
    assert_eq!(
        (decision["clear"].clone(), decision["conflicts"][0]["side"].clone(), decision["conflicts"][0]["role"].clone()),
        (json!(false), json!("client"), json!("adverse")),
        "{decision}"
    );
    assert!(model.hits().is_empty(), "no model call for a conflicted intake");

    // A clear client: the letter follows a similar past engagement; the KYC documents do not
    // pass the thresholds, so compliance reviews them beside the partner.
    let kyc = json!([
        {"name": "passport.txt", "text": "PASSPORT\nSurname: HOLLOWAY\nGiven names: MARGARET ANNE\nDate of expiry: 2019-03-31"},
        {"name": "bill.txt", "text": "ELECTRICITY BILL\nAccount holder: Acme Logistics Ltd\nBill date: 2026-01-05"},
        {"name": "photo.txt", "text": "A photograph of a person holding a card."}
    ]);
    let params = json!({
        "client_name": "Acme Logistics Ltd", "matter": "Supply agreement negotiation", "matter_value": 48000,
        "intake_notes": "Three-year supply agreement with a haulier; the client wants a fixed fee.",
        "adverse_parties": ["Hooli"], "kyc_documents": kyc, "scheduler_url": calendar.url("/schedule")
    });
    let run = start(&sys, "client-intake", params).await;
    let v = sys.settle(&run).await;
    assert!(v.state.is_waiting(), "{:?}", v.state.status);
    assert_eq!(output(&v, "conflict_decision")["summary"], "clear: 2 name(s) checked against the register");
    // The summary was sent the past engagements research found, and cites them.
    let prompts: Vec<String> = model.hits().iter().map(prompt_of).collect();
    let summary_prompt =
        prompts.iter().find(|p| p.contains("Task: precedent-summary")).expect("the precedents were summarised");
    assert!(
        summary_prompt.contains("[hit-1] scripts/demo-data/past-engagements/2022-contoso-supply-agreement.md\n"),
        "{summary_prompt}"
    );
    let precedents = output(&v, "precedents");
    assert_eq!(precedents["summary"]["citations"][0], "hit-1", "{precedents}");
    // The drafter was sent the intake notes and the past engagement, and followed its 10 %.
    let draft_prompt = prompts.iter().find(|p| p.contains("Task: engagement-letter")).expect("the letter was drafted");
    assert!(draft_prompt.contains("Intake notes: Three-year supply agreement with a haulier"), "{draft_prompt}");
    assert!(draft_prompt.contains("Similar past engagements, summarised: scripts/demo-data/past-engagements/2022-contoso-supply-agreement.md: Fee basis: a fixed fee of 10 %"), "{draft_prompt}");
    let draft = TestSystem::step(&v, "draft_letter");
    let letter = draft.output.as_ref().unwrap()["json"].clone();
    assert_eq!(letter["precedent"], "scripts/demo-data/past-engagements/2022-contoso-supply-agreement.md");
    assert_eq!(letter["fee"], 4800.0);
    let checks = draft.gate.as_ref().unwrap()["checks"].as_array().unwrap().clone();
    assert!(checks.len() == 4 && checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    // KYC: each document classified with structured output, then the thresholds.
    let kinds: Vec<Value> =
        output(&v, "kyc_classify").as_array().unwrap().iter().map(|o| o["json"]["kind"].clone()).collect();
    assert_eq!(kinds, [json!("passport"), json!("utility_bill"), json!("other")]);
    let kyc = output(&v, "kyc_check");
    assert_eq!(kyc["passed"], false);
    assert_eq!(
        kyc["problems"],
        json!([
            "passport.txt: passport expired on 2019-03-31",
            "photo.txt: classified as other with confidence 0.4, below 0.8",
            "no valid identity document (passport, national_id, driving_licence)"
        ])
    );
    // Compliance and the partner are asked at once; the partner sees the checked draft.
    let review = pending(&sys, &run, "kyc_review").await;
    assert_eq!(review.context["inputs"]["problems"], kyc["problems"]);
    let approval = pending(&sys, &run, "engagement_letter").await;
    assert!(
        approval.question.contains("fee 4800")
            && approval.question.contains("Conflicts: clear")
            && approval.question.contains("KYC: needs a compliance review"),
        "{}",
        approval.question
    );
    assert_eq!(approval.context["inputs"]["letter"], letter["body"]);
    assert_eq!(approval.context["inputs"]["precedent"], letter["precedent"]);
    assert!(calendar.hits().is_empty(), "nothing is booked before the decisions");

    sys.t()
        .decide(&review.id, Decision::Approve, "carol", Some("passport renewal seen in person".into()))
        .await
        .unwrap();
    sys.t().decide(&approval.id, Decision::Approve, "paula", None).await.unwrap();
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    let memo = output(&v, "intake_memo");
    assert!(
        memo["body"].as_str().unwrap().contains("engagement approved by paula. KYC accepted on review by carol."),
        "{memo}"
    );
    let booked: Value = serde_json::from_slice(&calendar.hits()[0].body).unwrap();
    assert_eq!(booked["title"], "Kick-off: Acme Logistics Ltd");
    assert_eq!(output(&v, "welcome_pack")["meeting"], json!({"booked": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_intake_on_the_demo_data_with_the_demo_stand_in_reaches_the_partner_with_a_drafted_checked_letter() {
    let model = stand_in().await;
    let base_url = format!("http://127.0.0.1:{}/v1", model.port);
    let prices = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/prices.toml");
    let sys = embedded_with(move |c| {
        c.apply_env(
            [
                ("TOLLGATE_LLM_BASE_URL".to_string(), base_url),
                ("TOLLGATE_LLM_MODEL".into(), "tollgate-demo-drafter".into()),
            ]
            .into_iter(),
        )
        .unwrap();
        c.llm.prices_file = prices.into();
    })
    .await;
    ingest_demo_data(&sys, "ops", "conflicts-register", "conflicts-register").await;
    ingest_demo_data(&sys, "ops", "past-engagements", "past-engagements").await;
    // What scripts/demo runs.
    let kyc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo-data/kyc/acme-logistics.json"))
            .unwrap(),
    )
    .unwrap();
    let params = json!({
        "client_name": "Acme Logistics Ltd", "matter": "Warehouse lease review", "matter_value": 48000, "adverse_parties": ["Hooli"],
        "intake_notes": "Ten-year lease of a bonded warehouse; the client wants a fixed fee.", "kyc_documents": kyc, "scheduler_url": ""
    });
    let run = start(&sys, "client-intake", params).await;
    let v = sys.settle(&run).await;
    assert!(v.state.is_waiting(), "{:?}", v.state.status);
    let precedents = output(&v, "precedents");
    assert_eq!(precedents["hits"][0]["source"], "scripts/demo-data/past-engagements/2023-northwind-warehouse-lease.md");
    assert_eq!(precedents["summary"]["citations"][0], "hit-1", "{precedents}");
    assert_eq!(output(&v, "kyc_check")["passed"], true, "{}", output(&v, "kyc_check"));
    assert_eq!(TestSystem::step(&v, "kyc_review").status.label(), "skipped");
    let draft = TestSystem::step(&v, "draft_letter");
    assert_eq!(draft.status.label(), "succeeded", "{:?}", draft.error);
    let checks = draft.gate.as_ref().unwrap()["checks"].as_array().unwrap().clone();
    assert_eq!(checks.len(), 4);
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    assert!(draft.cost > Money::ZERO, "priced from config/prices.toml");
    let request = pending(&sys, &run, "engagement_letter").await;
    let letter = request.context["inputs"]["letter"].as_str().unwrap().to_owned();
    assert!(letter.contains("Dear Acme Logistics Ltd") && letter.contains("Limitation of liability"), "{letter}");
    assert_eq!(
        request.context["inputs"]["precedent"],
        "scripts/demo-data/past-engagements/2023-northwind-warehouse-lease.md"
    );
    assert!(request.question.contains("fee 3840") && request.question.contains("KYC: passed"), "{}", request.question);
}

#[test]
fn every_template_has_a_trigger_or_a_one_command_run_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for (file, _) in tollgate::catalogue::SHIPPED {
        let id = file.trim_end_matches(".yaml");
        assert!(
            readme.contains(&format!("scripts/demo-template {id}")) || id == "client-intake",
            "README has no one-command run of {id}"
        );
    }
}
