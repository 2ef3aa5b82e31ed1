//! The `platform` step through the real binary, as the README shows it: `tollgate validate`
//! refuses a `workflow.run` naming a workflow outside the catalogue (and accepts it once the
//! catalogue has it); `tollgate run` of a parent whose child needs more than the parent's budget
//! pauses the parent for an extension; `tollgate decide … extend` lets both finish; `runs show`
//! links the two runs; `tollgate memory list|show` print the note the parent wrote, to its owner
//! only.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const GREETER: &str = r#"
id: greeter
owner: ops
parameters:
  who: { type: string, required: true }
steps:
  - { id: greet, type: code, cost: 0.4, inputs: { who: "${{ params.who }}" }, script: "return { greeting: 'hello ' + input.who }" }
  - { id: again, type: code, cost: 0.4, needs: [greet], inputs: { g: "${{ steps.greet.output.greeting }}" }, script: "return { greeting: input.g + '!' }" }
"#;

const CALLER: &str = r#"
id: caller
owner: ops
budget: { max_cost: 0.5 }
steps:
  - { id: child, type: platform, action: workflow.run, with: { workflow: greeter, params: { who: Globex } } }
  - { id: note, type: platform, needs: [child], action: memory.write, with: { key: globex, text: "${{ steps.child.output.outputs.again.greeting }}", tags: [demo] } }
"#;

fn tollgate(dir: &Path, catalogue: bool, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .env_remove("TOLLGATE_BACKEND")
        .env("TOLLGATE_RECONCILE_INTERVAL", "100ms");
    if catalogue {
        cmd.env("TOLLGATE_CATALOGUE_FILES", dir.join("greeter.yaml"));
    } else {
        cmd.env_remove("TOLLGATE_CATALOGUE_FILES");
    }
    cmd.output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = tollgate(dir, true, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tollgate {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

#[test]
fn a_parent_pauses_for_its_childs_budget_and_remembers_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("greeter.yaml"), GREETER).unwrap();
    std::fs::write(dir.join("caller.yaml"), CALLER).unwrap();
    let caller = dir.join("caller.yaml");
    let caller = caller.to_str().unwrap();

    let refused = tollgate(dir, false, &["validate", caller]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("steps[0] (child).with.workflow: no workflow `greeter` in the workflow catalogue"),
        "{stderr}"
    );
    assert!(ok(dir, &["validate", caller]).contains("ok — workflow `caller`"));

    let paused = ok(dir, &["run", caller]);
    assert!(paused.contains("its budget cannot cover what sub-workflow run"), "{paused}");
    let runs = json(dir, &["runs", "list", "--json"]);
    let run = runs["runs"].as_array().unwrap().iter().find(|r| r["workflow"] == "caller").unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(paused.contains(&format!("tollgate decide {run} child extend --amount 0.30")), "{paused}");

    let done = ok(dir, &["decide", &run, "child", "extend", "--amount", "0.3"]);
    assert!(done.contains("succeeded"), "{done}");
    let parent = json(dir, &["runs", "show", &run, "--json"]);
    assert_eq!(parent["status"], "succeeded");
    assert_eq!(parent["steps"][0]["cost"], "0.8", "what the child spent is charged to the step");
    let child = parent["steps"][0]["child"].as_str().unwrap().to_string();
    let shown = ok(dir, &["runs", "show", &child]);
    assert!(
        shown.contains(&format!("sub-workflow of run {run} (step `child` of workflow caller, depth 1)")),
        "{shown}"
    );

    let notes = json(dir, &["memory", "list", "--owner", "ops", "--json"]);
    assert_eq!(notes[0]["text"], "hello Globex!");
    assert_eq!(notes[0]["run"], run.as_str());
    assert!(ok(dir, &["memory", "show", "globex", "--owner", "ops"]).contains("hello Globex!"));
    let other = tollgate(dir, true, &["memory", "show", "globex", "--owner", "legal"]);
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("`legal` has no note under key `globex`"));
}
