//! Webhook triggers through real HTTP: one run per delivery id however many concurrent
//! deliveries, signatures (generic, GitHub, Stripe with its timestamp tolerance) checked and
//! forgeries refused with only a count, body limits, schemas, body-hash dedup — on both
//! backends — and the run says which trigger and fire started it.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_engine::trigger::FireOutcome;
use tollgate_engine::trigger::signature::{sign_hex, stripe_header};
use tollgate_tests::harness::{TestSystem, each_backend, wait_for};
use tollgate_tests::triggers::{Hooked, count};

const SPEC: &str = r#"
id: hooked-flow
owner: ops
parameters:
  client: { type: string, required: true }
steps:
  - { id: greet, type: code, script: "return { hello: input.c }", inputs: { c: "${{ params.client }}" } }
triggers:
  - id: intake
    webhook: { max_body: 4096, schema: { type: object, required: [client], properties: { client: { type: string } } } }
    params: { client: "${{ payload.body.client }}" }
  - id: gh
    webhook: { signature: github }
    params: { client: "${{ payload.body.sender.login }}" }
  - id: stripe
    webhook: { signature: stripe }
    params: { client: "${{ payload.body.data.object.customer }}" }
"#;

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

async fn post(client: &reqwest::Client, url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut req = client.post(url).header("content-type", "application/json").body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("delivery sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_deliveries_of_one_id_start_one_run() {
    each_backend(|sys| async move {
        let h = Hooked::start(sys, SPEC).await;
        let secret = h.secret("intake").await;
        let body = serde_json::to_vec(&json!({"client": "Acme"})).unwrap();
        let sig = sign_hex(&secret, &body);
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        let url = h.url("intake");
        let answers = futures::future::join_all((0..1000).map(|_| {
            let (client, url, body, sig) = (client.clone(), url.clone(), body.clone(), sig.clone());
            tokio::spawn(async move {
                post(&client, &url, &[("X-Signature-256", sig), ("Idempotency-Key", "delivery-1".into())], &body).await
            })
        }))
        .await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.as_ref().unwrap().0).collect();
        assert_eq!(
            statuses.iter().filter(|&&s| s == 202).count(),
            1,
            "exactly one delivery starts a run: {statuses:?}"
        );
        assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 999, "the others are acknowledged as duplicates");
        let history = h.history().await;
        assert_eq!(count(&history, "started"), 1);
        assert_eq!(count(&history, "skipped_duplicate"), 999);
        assert_eq!(history.len(), 1000);
        let runs = h.sys.t().engine.store.list_runs().await.unwrap();
        assert_eq!(runs.len(), 1, "one run in the store");
        // The run ran with the payload and records the trigger and fire that started it.
        let v = h.sys.settle(&runs[0]).await;
        assert_eq!(v.state.status.label(), "succeeded");
        assert_eq!(TestSystem::step(&v, "greet").output.as_ref().unwrap()["hello"], "Acme");
        let started = history.iter().find(|f| f.outcome.label() == "started").unwrap();
        let t = v.meta.trigger.as_ref().expect("the run names its trigger");
        assert_eq!((t.trigger.as_str(), &t.fire, t.kind.as_str()), ("intake", &started.fire, "webhook"));
        assert!(history.iter().all(|f| match &f.outcome {
            FireOutcome::SkippedDuplicate { of } => of == &started.fire,
            _ => true,
        }));
        let health = h.health("intake");
        assert_eq!((health.started, health.duplicates, health.rejected), (1, 999, 0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signatures_and_expired_stripe_timestamps_are_refused() {
    each_backend(|sys| async move {
        let h = Hooked::start(sys, SPEC).await;
        let client = reqwest::Client::new();
        let body = serde_json::to_vec(&json!({"client": "Acme"})).unwrap();
        // Generic HMAC: a signature made with another secret, none at all, a tampered body.
        let forged = sign_hex(b"not the secret", &body);
        let (s, v) = post(&client, &h.url("intake"), &[("X-Signature-256", forged)], &body).await;
        assert_eq!((s, v["error"].as_str()), (401, Some("bad_signature")), "{v}");
        let (s, _) = post(&client, &h.url("intake"), &[], &body).await;
        assert_eq!(s, 401);
        let good = sign_hex(&h.secret("intake").await, &body);
        let (s, _) = post(&client, &h.url("intake"), &[("X-Signature-256", good)], br#"{"client":"Evil"}"#).await;
        assert_eq!(s, 401, "a signature over another body");

        // GitHub: sha256=… over the body, delivery id from X-GitHub-Delivery.
        let gh_body = serde_json::to_vec(&json!({"sender": {"login": "octo"}})).unwrap();
        let gh_secret = h.secret("gh").await;
        let gh_forged = format!("sha256={}", sign_hex(b"guess", &gh_body));
        let (s, _) = post(
            &client,
            &h.url("gh"),
            &[("X-Hub-Signature-256", gh_forged), ("X-GitHub-Delivery", "g-1".into())],
            &gh_body,
        )
        .await;
        assert_eq!(s, 401);
        let gh_sig = format!("sha256={}", sign_hex(&gh_secret, &gh_body));
        let (s, v) = post(
            &client,
            &h.url("gh"),
            &[("X-Hub-Signature-256", gh_sig), ("X-GitHub-Delivery", "g-1".into())],
            &gh_body,
        )
        .await;
        assert_eq!((s, v["outcome"].as_str()), (202, Some("started")), "{v}");

        // Stripe: t=…,v1=… over "t.body", within the tolerance (5 minutes by default).
        let st_body = serde_json::to_vec(&json!({"id": "evt_1", "data": {"object": {"customer": "cus_9"}}})).unwrap();
        let st_secret = h.secret("stripe").await;
        let expired = stripe_header(&st_secret, now_s() - 600, &st_body);
        let (s, v) = post(&client, &h.url("stripe"), &[("Stripe-Signature", expired)], &st_body).await;
        assert_eq!(s, 401, "an expired timestamp: {v}");
        assert!(v["message"].as_str().unwrap().contains("beyond the tolerance"), "{v}");
        let fresh = stripe_header(&st_secret, now_s(), &st_body);
        let (s, _) = post(&client, &h.url("stripe"), &[("Stripe-Signature", fresh.clone())], &st_body).await;
        assert_eq!(s, 202);
        // Stripe's event id is the dedup key: a redelivery (newly signed) is a duplicate.
        let again = stripe_header(&st_secret, now_s(), &st_body);
        let (s, v) = post(&client, &h.url("stripe"), &[("Stripe-Signature", again)], &st_body).await;
        assert_eq!((s, v["outcome"].as_str()), (200, Some("skipped_duplicate")), "{v}");

        // Refused deliveries are only counted: nothing in the history, no run.
        let history = h.history().await;
        assert_eq!(count(&history, "started"), 2, "{history:#?}");
        assert_eq!(history.len(), 3);
        assert_eq!(h.health("intake").rejected, 3);
        assert_eq!(h.health("gh").rejected, 1);
        assert_eq!(h.health("stripe").rejected, 1);
        assert_eq!(h.sys.t().engine.store.list_runs().await.unwrap().len(), 2);
        // The admin API shows the same health.
        let api: Value =
            client.get(format!("http://{}/api/triggers", h.addr)).send().await.unwrap().json().await.unwrap();
        let intake = api["triggers"].as_array().unwrap().iter().find(|t| t["trigger"] == "intake").unwrap().clone();
        assert_eq!(
            (intake["rejected"].as_u64(), intake["connected"].as_bool(), intake["type"].as_str()),
            (Some(3), Some(true), Some("webhook")),
            "{intake}"
        );
        let hist: Value = client
            .get(format!("http://{}/api/triggers/{}/history", h.addr, h.workflow))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(hist["fires"].as_array().unwrap().len(), 3, "{hist}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_schemas_and_body_hash_dedup() {
    each_backend(|sys| async move {
        let h = Hooked::start(sys, SPEC).await;
        let client = reqwest::Client::new();
        let secret = h.secret("intake").await;
        // Over max_body (4096): 413 before anything else.
        let big = serde_json::to_vec(&json!({"client": "x".repeat(5000)})).unwrap();
        let (s, v) = post(&client, &h.url("intake"), &[("X-Signature-256", sign_hex(&secret, &big))], &big).await;
        assert_eq!((s, v["error"].as_str()), (413, Some("body_too_large")), "{v}");
        // Signed but not what the schema asks: a failed fire with the reason, 422.
        let wrong = serde_json::to_vec(&json!({"customer": "Acme"})).unwrap();
        let (s, v) = post(&client, &h.url("intake"), &[("X-Signature-256", sign_hex(&secret, &wrong))], &wrong).await;
        assert_eq!((s, v["outcome"].as_str()), (422, Some("failed")), "{v}");
        assert!(v["message"].as_str().unwrap().contains("schema"), "{v}");
        // No delivery id: the body's hash is the key, so the same body twice is one run.
        let body = serde_json::to_vec(&json!({"client": "Beta"})).unwrap();
        let sig = sign_hex(&secret, &body);
        let (s1, _) = post(&client, &h.url("intake"), &[("X-Signature-256", sig.clone())], &body).await;
        let (s2, v2) = post(&client, &h.url("intake"), &[("X-Signature-256", sig)], &body).await;
        assert_eq!((s1, s2, v2["outcome"].as_str()), (202, 200, Some("skipped_duplicate")));
        // A trigger that does not exist.
        let (s, _) = post(&client, &format!("http://{}/hooks/hooked-flow/nope", h.addr), &[], b"{}").await;
        assert_eq!(s, 404);
        let history = h.history().await;
        let failed: Vec<_> = history.iter().filter(|f| f.outcome.label() == "failed").collect();
        assert_eq!(failed.len(), 1);
        assert!(matches!(&failed[0].outcome, FireOutcome::Failed { error } if error.contains("schema")));
        assert_eq!(count(&history, "started"), 1);
        wait_for("the run finishes", Duration::from_secs(60), || async {
            let runs = h.sys.t().engine.store.list_runs().await.unwrap();
            runs.len() == 1 && h.sys.t().view(&runs[0]).await.is_ok_and(|v| v.state.status.is_finished())
        })
        .await;
    })
    .await;
}
