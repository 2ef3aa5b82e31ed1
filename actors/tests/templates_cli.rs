//! The workflow catalogue through the real binary: `templates list|show` print the shipped
//! templates with their typed, described parameters; `run NAME --set k=v` runs a workflow of
//! the catalogue (a configured directory) without its file, coercing the values to the declared
//! types; a name that is neither a file nor a catalogue id, a missing required parameter and a
//! wrongly typed one are refused with exit code 2 and a message naming what is wrong.

#[allow(dead_code)] // the helpers other process tests use
mod support;

use std::process::Output;

use serde_json::{Value, json};

const TALLY: &str = r#"
id: tally
owner: ops
description: Count the invoices of a client above a threshold.
parameters:
  client: { type: string, required: true, description: The client's name }
  threshold: { type: integer, default: 100, description: Smallest amount counted }
  amounts: { type: array, default: [50, 150, 300], description: Invoice amounts }
  urgent: { type: boolean, default: false, description: Whether to flag the report }
steps:
  - id: count
    type: code
    inputs: { client: "${{ params.client }}", threshold: "${{ params.threshold }}", amounts: "${{ params.amounts }}", urgent: "${{ params.urgent }}" }
    script: "return { client: input.client, over: input.amounts.filter(a => a > input.threshold).length, urgent: input.urgent }"
"#;

fn run(dir: &std::path::Path, catalogue: &std::path::Path, args: &[&str]) -> Output {
    support::tollgate(&dir.join("data")).env("TOLLGATE_CATALOGUE_DIRS", catalogue).args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn templates_list_and_show_print_each_workflow_with_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("workflows");
    std::fs::create_dir(&cat).unwrap();
    std::fs::write(cat.join("tally.yaml"), TALLY).unwrap();

    let out = run(dir.path(), &cat, &["templates", "list"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for id in tollgate::catalogue::SHIPPED.iter().map(|(f, _)| f.trim_end_matches(".yaml")).chain(["tally"]) {
        assert!(stdout.lines().any(|l| l.starts_with(id)), "`{id}` is not listed:\n{stdout}");
    }
    assert!(
        stdout.contains("Count the invoices of a client above a threshold.  (4 parameters, 1 required)"),
        "{stdout}"
    );

    let out = run(dir.path(), &cat, &["templates", "show", "client-intake"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("Take on a new client matter"), "{stdout}");
    assert!(stdout.contains("client_name          string   required"), "{stdout}");
    assert!(stdout.contains("matter_value         number   default 25000"), "{stdout}");
    assert!(stdout.contains("Legal name of the client"), "{stdout}");
    assert!(stdout.contains("Run it: tollgate run client-intake --set client_name=…"), "{stdout}");

    let out = run(dir.path(), &cat, &["templates", "show", "tally", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], json!(cat.join("tally.yaml").display().to_string()));
    assert_eq!(
        v["parameters"][3],
        json!({"name": "urgent", "type": "boolean", "required": false, "default": false, "description": "Whether to flag the report"})
    );

    let out = run(dir.path(), &cat, &["templates", "show", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("no workflow `nope` in the catalogue (known: ")
            && stderr.contains("client-intake")
            && stderr.contains("tally"),
        "{stderr}"
    );
}

#[test]
fn run_name_runs_a_catalogue_workflow_with_typed_values_and_refuses_what_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("workflows");
    std::fs::create_dir(&cat).unwrap();
    std::fs::write(cat.join("tally.yaml"), TALLY).unwrap();

    let out = run(
        dir.path(),
        &cat,
        &[
            "run",
            "tally",
            "--set",
            "client=Acme",
            "--set",
            "threshold=200",
            "--set",
            "amounts=[150, 250, 900]",
            "--set",
            "urgent=true",
            "--json",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["workflow"], "tally");

    let run_id =
        stderr.lines().find_map(|l| l.strip_prefix("tollgate: run ").and_then(|l| l.strip_suffix(" started"))).unwrap();
    let out = run(dir.path(), &cat, &["runs", "show", run_id, "--json", "--outputs"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["steps"][0]["output"], json!({"client": "Acme", "over": 2, "urgent": true}), "{v}");

    // Neither a file nor an id.
    let out = run(dir.path(), &cat, &["run", "tallly"]);
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("`tallly` is neither a spec file nor a workflow of the catalogue") && stderr.contains("tally"),
        "{stderr}"
    );
    let out = run(dir.path(), &cat, &["run", "missing/flow.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("cannot read missing/flow.yaml: no such file"), "{}", text(&out).1);

    // A required parameter missing, a value of the wrong type, an unknown name.
    let out = run(dir.path(), &cat, &["run", "tally", "--set", "threshold=lots", "--set", "colour=red"]);
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("tally (") && stderr.contains("invalid parameters"), "{stderr}");
    assert!(stderr.contains("parameter client: required parameter is missing"), "{stderr}");
    assert!(stderr.contains("parameter threshold: expected an integer"), "{stderr}");
    assert!(stderr.contains("parameter colour: unknown parameter"), "{stderr}");

    // A file still runs as before, and a file wins over an id of the same name.
    let file = dir.path().join("tally");
    std::fs::write(&file, TALLY.replace("id: tally", "id: tally-file")).unwrap();
    let out = support::tollgate(&dir.path().join("data"))
        .current_dir(dir.path())
        .env("TOLLGATE_CATALOGUE_DIRS", &cat)
        .args(["run", "tally", "--set", "client=B", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out).1));
    assert_eq!(v["workflow"], "tally-file");
}
