//! Event and IMAP triggers on the one fire path. Event: on both backends, an event of the
//! trigger's name that passes its filter starts one run with its payload, the first one
//! published once the trigger is connected included. IMAP, against a real
//! dovecot: a mail delivered while the engine is down starts one run after it comes back; the
//! server restarted mid-IDLE, a mail sent during the outage starts one run; the same message
//! appended twice starts one run; a broken MIME message is a failed fire in the history and in
//! the quarantine folder, and the trigger keeps working.

use std::time::Duration;

use serde_json::json;
use tollgate::triggers::start_triggers;
use tollgate_engine::spec::parse_yaml;
use tollgate_tests::dovecot::{BROKEN, Dovecot, PASSWORD_ENV, USER, mail, set_password_env};
use tollgate_tests::harness::{TestSystem, each_backend, embedded, wait_for};
use tollgate_tests::triggers::{Hooked, count};

const EVENT_FLOW: &str = r#"
id: on-lead
owner: ops
parameters:
  lead: { type: string }
steps:
  - { id: greet, type: code, script: "return { hello: input.lead }", inputs: { lead: "${{ params.lead }}" } }
triggers:
  - id: leads
    event: { name: lead.created, filter: "payload.score > 5" }
    params: { lead: "${{ payload.name }}" }
"#;

async fn runs(sys: &TestSystem) -> Vec<tollgate_engine::ids::RunId> {
    sys.t().engine.store.list_runs().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_passes_the_filter_starts_one_run_with_its_payload() {
    each_backend(|sys| async move {
        let mut h = Hooked::start(sys, EVENT_FLOW).await;
        h.sys.t().emit_event("ops", "lead.created", &json!({"name": "Cold Co", "score": 2}), None).await.unwrap();
        h.sys.t().emit_event("ops", "lead.other", &json!({"name": "Other Co", "score": 9}), None).await.unwrap();
        h.sys.t().emit_event("ops", "lead.created", &json!({"name": "Acme", "score": 9}), None).await.unwrap();
        let hh = &h;
        wait_for("one fire recorded", Duration::from_secs(30), || async move { !hh.history().await.is_empty() }).await;
        let all = runs(&h.sys).await;
        assert_eq!(all.len(), 1, "one run: the other events are filtered out or of another name");
        let v = h.sys.settle(&all[0]).await;
        assert_eq!(TestSystem::step(&v, "greet").output, Some(json!({"hello": "Acme"})));
        assert_eq!(count(&h.history().await, "started"), 1);
        h.stop_triggers().await;
    })
    .await;
}

/// The first event after the trigger says it is connected: on Redis a trigger used to fix
/// where it follows the bus only at its first tail call, which waited behind the event
/// dispatcher's blocked read on a shared connection, so an event published meanwhile was
/// neither read by the trigger's catch-up nor tailed afterwards, and never started a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_as_soon_as_the_trigger_is_connected_starts_its_run() {
    each_backend(|sys| async move {
        let mut h = Hooked::start(sys, EVENT_FLOW).await;
        h.sys.t().emit_event("ops", "lead.created", &json!({"name": "First", "score": 9}), None).await.unwrap();
        let hh = &h;
        wait_for("the first event's run", Duration::from_secs(30), || async move { !hh.history().await.is_empty() })
            .await;
        let all = runs(&h.sys).await;
        assert_eq!(all.len(), 1);
        let v = h.sys.settle(&all[0]).await;
        assert_eq!(TestSystem::step(&v, "greet").output, Some(json!({"hello": "First"})));
        h.stop_triggers().await;
    })
    .await;
}

fn imap_flow(d: &Dovecot) -> String {
    format!(
        r#"
id: inbound
owner: ops
parameters:
  subject: {{ type: string }}
  files: {{ type: integer, default: 0 }}
steps:
  - {{ id: read, type: code, script: "return {{ subject: input.s, files: input.f }}", inputs: {{ s: "${{{{ params.subject }}}}", f: "${{{{ params.files }}}}" }} }}
triggers:
  - id: mail
    imap: {{ host: 127.0.0.1, port: {port}, tls: false, user: "{USER}", password_env: {PASSWORD_ENV}, liveness: 2s, poll: 1s }}
    params: {{ subject: "${{{{ payload.subject }}}}", files: "${{{{ size(payload.attachments) }}}}" }}
"#,
        port = d.port
    )
}

async fn settled_subjects(sys: &TestSystem) -> Vec<String> {
    let mut out = Vec::new();
    for run in runs(sys).await {
        let v = sys.settle(&run).await;
        assert_eq!(v.state.status.label(), "succeeded", "{:?}", v.state.status);
        out.push(TestSystem::step(&v, "read").output.as_ref().unwrap()["subject"].as_str().unwrap().to_string());
    }
    out.sort();
    out
}

async fn wait_runs(sys: &TestSystem, n: usize, what: &str) {
    let t = sys.t().clone();
    wait_for(what, Duration::from_secs(60), move || {
        let t = t.clone();
        async move { t.engine.store.list_runs().await.unwrap().len() >= n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_delivered_while_the_engine_is_down_starts_one_run_after_it_comes_back() {
    set_password_env();
    let d = tokio::task::block_in_place(Dovecot::start);
    let yaml = imap_flow(&d);
    let mut h = Hooked::start(embedded().await, &yaml).await;
    d.append("INBOX", &mail("first@example.test", "First")).await;
    wait_runs(&h.sys, 1, "the first mail's run").await;
    h.stop_triggers().await;
    h.sys.stop().await;
    d.append("INBOX", &mail("down@example.test", "While down")).await;
    h.sys.restart().await;
    h.triggers = Some(
        start_triggers(h.sys.t(), h.sys.config.triggers.history_ttl, vec![parse_yaml(&yaml).unwrap()]).await.unwrap(),
    );
    wait_runs(&h.sys, 2, "the run of the mail from the downtime").await;
    assert_eq!(settled_subjects(&h.sys).await, ["First", "While down"]);
    let v = h.sys.settle(&runs(&h.sys).await[0]).await;
    assert_eq!(
        TestSystem::step(&v, "read").output.as_ref().unwrap()["files"],
        1,
        "the attachment is passed by reference"
    );
    let history = h.history().await;
    assert_eq!((count(&history, "started"), history.len()), (2, 2), "{history:?}");
    h.stop_triggers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_restarted_mid_idle_the_trigger_reconnects_and_the_outage_mail_starts_one_run() {
    set_password_env();
    let d = tokio::task::block_in_place(Dovecot::start);
    let mut h = Hooked::start(embedded().await, &imap_flow(&d)).await;
    d.append("INBOX", &mail("before@example.test", "Before")).await;
    wait_runs(&h.sys, 1, "the first run").await;
    tokio::task::block_in_place(|| d.stop());
    let hh = &h;
    wait_for("the trigger notices the outage", Duration::from_secs(30), || async move { !hh.health("mail").connected })
        .await;
    d.deliver_to_maildir(&mail("outage@example.test", "During the outage"));
    tokio::task::block_in_place(|| d.start_again());
    wait_runs(&h.sys, 2, "the outage mail's run").await;
    assert_eq!(settled_subjects(&h.sys).await, ["Before", "During the outage"]);
    wait_for("connected again", Duration::from_secs(30), || async move { hh.health("mail").connected }).await;
    assert_eq!(count(&h.history().await, "started"), 2);
    h.stop_triggers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_appended_twice_starts_one_run() {
    set_password_env();
    let d = tokio::task::block_in_place(Dovecot::start);
    let dd = &d;
    each_backend(|sys| async move {
        let mut h = Hooked::start(sys, &imap_flow(dd)).await;
        let id = format!("{}@example.test", ulid::Ulid::generate());
        dd.append("INBOX", &mail(&id, "Twice")).await;
        dd.append("INBOX", &mail(&id, "Twice")).await;
        let hh = &h;
        wait_for("both copies recorded", Duration::from_secs(60), || async move { hh.history().await.len() >= 2 })
            .await;
        let history = h.history().await;
        assert_eq!((count(&history, "started"), count(&history, "skipped_duplicate")), (1, 1), "{history:?}");
        assert_eq!(runs(&h.sys).await.len(), 1);
        h.stop_triggers().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_message_is_a_failed_fire_and_quarantined_and_the_trigger_keeps_working() {
    set_password_env();
    let d = tokio::task::block_in_place(Dovecot::start);
    let mut h = Hooked::start(embedded().await, &imap_flow(&d)).await;
    d.append("INBOX", BROKEN).await;
    let hh = &h;
    wait_for("the failed fire", Duration::from_secs(60), || async move { !hh.history().await.is_empty() }).await;
    let history = h.history().await;
    assert_eq!(count(&history, "failed"), 1, "{history:?}");
    let tollgate_engine::trigger::FireOutcome::Failed { error } = &history[0].outcome else { unreachable!() };
    assert!(error.contains("multipart/mixed but declares no boundary"), "{error}");
    let dd = &d;
    wait_for("the broken mail in quarantine", Duration::from_secs(30), || async move {
        dd.folder_len("Quarantine").await == 1
    })
    .await;
    d.append("INBOX", &mail("good@example.test", "Good")).await;
    wait_runs(&h.sys, 1, "the good mail's run").await;
    assert_eq!(settled_subjects(&h.sys).await, ["Good"]);
    assert_eq!(h.history().await.len(), 2, "the broken message was not fired again");
    h.stop_triggers().await;
}
