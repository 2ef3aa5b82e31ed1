//! Gate-policy replay over recorded runs: ten runs of a workflow whose policy lets email
//! addresses and IBANs through, some with an address or an IBAN planted in a step's output,
//! one with a card number (which the old policy already redacted). Replaying a tightened
//! policy reports exactly the steps whose planted values the old policy allowed; replaying a
//! loosened one reports the card the old policy redacted; a workflow filter and a time window
//! narrow the runs.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tollgate::gate_replay::{ReplayScope, replay_policy};
use tollgate_engine::gates::{GateAction, GatePolicy};
use tollgate_engine::ids::WorkflowId;
use tollgate_tests::harness::{TestSystem, embedded};

const LENIENT: &str = r#"
id: replay-intake
owner: ops
parameters:
  contact: { type: string, default: "no contact on file" }
  account: { type: string, default: "no account on file" }
gates:
  policy:
    actions: { email: allow, iban: allow }
steps:
  - { id: contact, type: code, inputs: { c: "${{ params.contact }}" }, script: "return { note: 'Contact: ' + input.c }" }
  - { id: account, type: code, inputs: { a: "${{ params.account }}" }, script: "return 'Account: ' + input.a" }
  - { id: total, type: code, needs: [contact, account], script: "return { total: 12 }" }
"#;

/// Another workflow, with an address in its output too: only a filter keeps it out.
const OTHER: &str = r#"
id: replay-other
owner: ops
gates:
  policy:
    actions: { email: allow }
steps:
  - { id: mail, type: code, script: "return 'write to ' + 'kim.osei' + '@example.net'" }
"#;

async fn run(sys: &TestSystem, yaml: &str, params: Value) -> String {
    let run = sys.start(yaml, params).await;
    let v = sys.settle(&run).await;
    assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
    run.to_string()
}

fn changed(report: &tollgate::gate_replay::ReplayReport) -> BTreeSet<(String, String)> {
    report.changes.iter().map(|c| (c.run.to_string(), c.step.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tightening_a_policy_reports_exactly_the_steps_whose_planted_values_it_allowed() {
    let sys = embedded().await;
    let mut expected = BTreeSet::new();
    let mut card_run = None;
    for i in 0..10 {
        let mut params = serde_json::Map::new();
        if i % 3 == 0 {
            params.insert("contact".into(), json!(format!("client{i}.office@example.org")));
        }
        if i % 4 == 1 {
            params.insert("account".into(), json!("GB82 WEST 1234 5698 7654 32"));
        }
        if i == 7 {
            params.insert("contact".into(), json!("card 4111 1111 1111 1111"));
        }
        let id = run(&sys, LENIENT, Value::Object(params.clone())).await;
        if params.contains_key("contact") && i != 7 {
            expected.insert((id.clone(), "contact".to_string()));
        }
        if params.contains_key("account") {
            expected.insert((id.clone(), "account".to_string()));
        }
        if i == 7 {
            card_run = Some(id);
        }
    }
    let other = run(&sys, OTHER, json!({})).await;
    assert_eq!(expected.len(), 4 + 3, "addresses in runs 0, 3, 6, 9; IBANs in runs 1, 5, 9");

    let engine = &sys.t().engine;
    let scope = ReplayScope { workflow: Some(WorkflowId::from("replay-intake")), since: None };
    let tight = replay_policy(engine, &GatePolicy::default(), &scope).await.unwrap();
    assert_eq!(tight.runs, 10);
    assert_eq!(tight.outputs, 30, "three gated outputs per run");
    assert_eq!(changed(&tight), expected);
    for c in &tight.changes {
        assert_eq!((c.verdict.recorded, c.verdict.replayed), (GateAction::Allow, GateAction::Redact), "{c:?}");
        let category = if c.step == "contact" { "email" } else { "iban" };
        assert_eq!(c.verdict.categories, [category], "{c:?}");
        assert!(c.verdict.output_rescanned);
    }
    let contact = tight.steps.iter().find(|s| s.step == "contact").unwrap();
    assert_eq!((contact.outputs, contact.changed), (10, 4));
    assert_eq!(contact.recorded.get(&GateAction::Redact), Some(&1), "the card was redacted already");
    assert_eq!(contact.replayed.get(&GateAction::Redact), Some(&5));
    let report = serde_json::to_string(&tight).unwrap();
    for planted in ["office@example.org", "WEST 1234", "4111"] {
        assert!(!report.contains(planted), "the report holds no value: {planted}");
    }

    // Without the filter, the other workflow's address is there too.
    let all = replay_policy(engine, &GatePolicy::default(), &ReplayScope::default()).await.unwrap();
    assert_eq!(all.runs, 11);
    let mut with_other = expected.clone();
    with_other.insert((other, "mail".into()));
    assert_eq!(changed(&all), with_other);

    // Loosening: cards allowed. Only the card the old policy redacted changes, found from the
    // recorded verdict (its text is not in the journal).
    let mut loose =
        GatePolicy::from_toml("[actions]\nemail = \"allow\"\niban = \"allow\"\ncard = \"allow\"\n").unwrap();
    loose.min_confidence = GatePolicy::default().min_confidence;
    let looser = replay_policy(engine, &loose, &scope).await.unwrap();
    assert_eq!(changed(&looser), BTreeSet::from([(card_run.unwrap(), "contact".to_string())]));
    assert_eq!(
        (looser.changes[0].verdict.recorded, looser.changes[0].verdict.replayed),
        (GateAction::Redact, GateAction::Allow)
    );

    // The same policy as recorded changes nothing; a window that starts after the runs holds none.
    let same = GatePolicy::from_toml("[actions]\nemail = \"allow\"\niban = \"allow\"\n").unwrap();
    assert!(replay_policy(engine, &same, &scope).await.unwrap().changes.is_empty());
    let later = ReplayScope { since: Some(tollgate::system::now_ms() + 60_000), ..scope };
    assert_eq!(replay_policy(engine, &GatePolicy::default(), &later).await.unwrap().runs, 0);
}

/// Blocks secrets and fails the step: the output is never recorded.
const BLOCKING: &str = r#"
id: replay-blocking
owner: ops
gates:
  policy:
    actions: { secret: block }
  on_block: fail
steps:
  - { id: leak, type: code, script: "return 'GITHUB_TOKEN=' + 'ghp_Vpzz63FfkCzJr4i0' + 'B3JrTAwR4y9ojfljoQoa'" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_failed_its_step_is_replayed_from_its_findings() {
    let sys = embedded().await;
    let run = sys.start(BLOCKING, json!({})).await;
    assert_eq!(sys.settle(&run).await.state.status.label(), "failed");
    let scope = ReplayScope { workflow: Some(WorkflowId::from("replay-blocking")), since: None };
    let report = replay_policy(&sys.t().engine, &GatePolicy::default(), &scope).await.unwrap();
    assert_eq!(report.changes.len(), 1, "{report:?}");
    let c = &report.changes[0];
    assert_eq!(
        (c.step.as_str(), c.verdict.recorded, c.verdict.replayed),
        ("leak", GateAction::Block, GateAction::Redact)
    );
    assert_eq!(c.verdict.rules, ["secret.github_token"]);
    assert!(!c.verdict.output_rescanned, "the blocked output was never recorded");
    assert_eq!(report.steps[0].findings_only, 1);
}
