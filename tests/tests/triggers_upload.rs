//! Upload triggers: a multipart upload fires once per content (a second upload of the same
//! bytes is a duplicate), a path-traversing name is refused, an oversized file gets 413; a
//! watched folder's files move to `processed/` or `failed/` once their fire is recorded.

use std::time::Duration;

use serde_json::Value;
use tollgate_tests::harness::{TestSystem, embedded, wait_for};
use tollgate_tests::triggers::{Hooked, count};

fn spec(folder: &std::path::Path) -> String {
    format!(
        r#"
id: upload-flow
owner: ops
parameters:
  name: {{ type: string, required: true }}
  text: {{ type: string }}
steps:
  - {{ id: read, type: code, script: "return {{ len: input.t.length, name: input.n }}", inputs: {{ t: "${{{{ params.text }}}}", n: "${{{{ params.name }}}}" }} }}
triggers:
  - id: form
    upload: {{ max_size: 64 }}
    params: {{ name: "${{{{ payload.file.name }}}}", text: "${{{{ payload.file.text }}}}" }}
  - id: inbox
    upload: {{ max_size: 64, folder: "{}", poll: 50ms }}
    params: {{ name: "${{{{ payload.file.name }}}}", text: "${{{{ payload.file.text }}}}" }}
"#,
        folder.display()
    )
}

async fn upload(url: &str, name: &str, content: &[u8]) -> (u16, Value) {
    let boundary = "tollgate-test-boundary";
    let mut body =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n").into_bytes();
    body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\n").into_bytes());
    body.extend_from_slice(content);
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_fire_once_per_content_and_refuse_traversal() {
    let folder = tempfile::tempdir().unwrap();
    let h = Hooked::start(embedded().await, &spec(folder.path())).await;
    let url = h.url("form");
    let (s, v) = upload(&url, "../etc/passwd", b"root:x:0:0").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_upload")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("refused"), "{v}");
    let (s, _) = upload(&url, "..\\..\\boot.ini", b"x").await;
    assert_eq!(s, 400);
    let (s, v) = upload(&url, "big.txt", &[b'a'; 65]).await;
    assert_eq!((s, v["error"].as_str()), (413, Some("body_too_large")), "{v}");
    let (s, v) = upload(&url, "note.txt", b"twelve bytes").await;
    assert_eq!((s, v["outcome"].as_str()), (202, Some("started")), "{v}");
    // The same content under another name: the content hash is the key.
    let (s, v) = upload(&url, "copy.txt", b"twelve bytes").await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("skipped_duplicate")), "{v}");
    let history = h.history().await;
    assert_eq!(
        (count(&history, "started"), count(&history, "skipped_duplicate"), history.len()),
        (1, 1, 2),
        "refused uploads record nothing"
    );
    let runs = h.sys.t().engine.store.list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    let v = h.sys.settle(&runs[0]).await;
    assert_eq!(TestSystem::step(&v, "read").output.as_ref().unwrap()["len"], 12);
    assert_eq!(TestSystem::step(&v, "read").output.as_ref().unwrap()["name"], "note.txt");
    // The file itself is kept sealed in the store, by reference.
    let started = history.iter().find(|f| f.outcome.label() == "started").unwrap();
    assert!(started.key.starts_with("sha256:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_moves_files_after_their_fire_is_recorded() {
    let folder = tempfile::tempdir().unwrap();
    let h = Hooked::start(embedded().await, &spec(folder.path())).await;
    let put = |name: &str, content: &[u8]| {
        // Written hidden, then renamed: the watcher never sees a half-written file.
        let hidden = folder.path().join(format!(".{name}"));
        std::fs::write(&hidden, content).unwrap();
        std::fs::rename(&hidden, folder.path().join(name)).unwrap();
    };
    put("a.txt", b"first file");
    let processed = folder.path().join("processed");
    let failed = folder.path().join("failed");
    wait_for("a.txt is processed", Duration::from_secs(30), || async { processed.join("a.txt").exists() }).await;
    put("b.txt", b"first file"); // same content: a duplicate, also processed
    put("c.txt", &[b'z'; 100]); // over max_size: failed
    wait_for("b.txt and c.txt are moved", Duration::from_secs(30), || async {
        processed.join("b.txt").exists() && failed.join("c.txt").exists()
    })
    .await;
    assert!(
        !folder.path().join("a.txt").exists()
            && !folder.path().join("b.txt").exists()
            && !folder.path().join("c.txt").exists()
    );
    let history: Vec<_> = h.history().await.into_iter().filter(|f| f.trigger.as_str() == "inbox").collect();
    assert_eq!(
        (count(&history, "started"), count(&history, "skipped_duplicate"), count(&history, "failed")),
        (1, 1, 1),
        "{history:#?}"
    );
    assert!(history.iter().any(
        |f| matches!(&f.outcome, tollgate_engine::trigger::FireOutcome::Failed { error } if error.contains("max_size"))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_trigger_is_restarted_with_backoff_and_its_health_says_why() {
    let base = tempfile::tempdir().unwrap();
    // The folder's parent is a file: the watcher cannot create processed/ and fails.
    let blocker = base.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let folder = blocker.join("inbox");
    let yaml = spec(&folder).replace(
        "  - id: form\n    upload: { max_size: 64 }\n",
        "  - id: form\n    upload: { max_size: 64 }\n    enabled: false\n",
    );
    let sys = embedded().await;
    let triggers = tollgate::triggers::start_triggers(
        sys.t(),
        sys.config.triggers.history_ttl,
        vec![tollgate_engine::spec::parse_yaml(&yaml).unwrap()],
    )
    .await
    .unwrap();
    let wf = tollgate_engine::ids::WorkflowId::new("upload-flow");
    let health = || sys.t().engine.triggers.health(&wf, &"inbox".into()).unwrap();
    wait_for("the trigger fails and is restarted twice", Duration::from_secs(30), || async { health().restarts >= 2 })
        .await;
    let h = health();
    assert!(!h.connected);
    assert!(h.last_error.as_ref().is_some_and(|(_, e)| e.contains("creating")), "{h:?}");
    assert!(sys.t().engine.triggers.health(&wf, &"form".into()).is_none(), "a disabled trigger does not run");
    // Fix the cause: the next restart connects.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir_all(&folder).unwrap();
    wait_for("the trigger connects after the fix", Duration::from_secs(60), || async { health().connected }).await;
    triggers.shutdown().await;
}
