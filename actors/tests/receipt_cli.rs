//! The receipt and replay commands of the `tollgate` binary: `runs export RUN --receipt`,
//! `receipt key`, `receipt verify FILE [--key]` (valid, altered, another key, no service to
//! take the key from) and `gates replay --policy FILE` (table and `--json`).

use std::path::Path;
use std::process::{Command, Output};

const ADDRESS: &str = "ola.nordmann@example.org";
const IBAN: &str = "GB82WEST12345698765432";

const SPEC: &str = r#"
id: receipt-cli
owner: ops
parameters:
  account: { type: string, required: true }
gates:
  policy:
    actions: { email: allow }
steps:
  - { id: contact, type: code, script: "return 'write to ' + 'ola.nordmann' + '@example.org'" }
  - { id: bill, type: code, needs: [contact], inputs: { a: "${{ params.account }}" }, script: "return { pay: input.a }" }
"#;

fn tollgate(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("TOLLGATE_BACKEND")
        .env_remove("TOLLGATE_MASTER_KEY")
        .output()
        .unwrap()
}

fn ok(data: &Path, args: &[&str]) -> (String, String) {
    let out = tollgate(data, args);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "tollgate {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn fails(data: &Path, args: &[&str]) -> String {
    let out = tollgate(data, args);
    assert!(!out.status.success(), "tollgate {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn export_verify_and_replay_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let data = dir.path().join("data");
    let spec = spec.to_str().unwrap();

    let (_, err) = ok(&data, &["run", spec, "--set", &format!("account={IBAN}")]);
    let run = err
        .lines()
        .find_map(|l| l.strip_prefix("tollgate: run ").and_then(|l| l.strip_suffix(" started")))
        .expect("run id")
        .to_string();

    let (receipt, _) = ok(&data, &["runs", "export", &run, "--receipt"]);
    assert!(!receipt.contains(ADDRESS) && !receipt.contains(IBAN), "the receipt holds a planted value:\n{receipt}");
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, &receipt).unwrap();
    let file = file.to_str().unwrap();
    let (key, _) = ok(&data, &["receipt", "key"]);
    let key = key.trim();
    assert_eq!(key.len(), 64);
    assert_eq!(ok(&data, &["receipt", "key"]).0.trim(), key, "the key is created once");

    let (out, _) = ok(&data, &["receipt", "verify", file]);
    assert!(out.contains("valid") && out.contains(&run) && out.contains(key), "{out}");
    ok(&data, &["receipt", "verify", file, "--key", key]);

    // Another service's key: not valid.
    let other = dir.path().join("other");
    let (other_key, _) = ok(&other, &["receipt", "key"]);
    assert_ne!(other_key.trim(), key);
    let err = fails(&data, &["receipt", "verify", file, "--key", other_key.trim()]);
    assert!(err.contains("NOT VALID") && err.contains("not the service key"), "{err}");
    let err = fails(&data, &["receipt", "verify", file, "--key", "nothex"]);
    assert!(err.contains("64 hex"), "{err}");

    // Altered: the entry is named.
    let mut doc: serde_json::Value = serde_json::from_str(&receipt).unwrap();
    let i = doc["entries"].as_array().unwrap().iter().position(|e| e["record"]["step"] == "bill").unwrap();
    doc["entries"][i]["record"]["cost"] = serde_json::json!("1.00");
    let altered = dir.path().join("altered.json");
    std::fs::write(&altered, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let err = fails(&data, &["receipt", "verify", altered.to_str().unwrap()]);
    assert!(err.contains(&format!("entry {i} (step_succeeded) was altered")), "{err}");

    // Where no service is configured, the key must be given; nothing is created.
    let nowhere = dir.path().join("nowhere");
    let err = fails(&nowhere, &["receipt", "verify", file]);
    assert!(err.contains("--key"), "{err}");
    assert!(!nowhere.exists(), "verifying created a data directory");
    ok(&nowhere, &["receipt", "verify", file, "--key", key]);

    // Replay a policy that redacts addresses: the run's `contact` step is reported.
    let policy = dir.path().join("strict.toml");
    std::fs::write(&policy, "[actions]\nemail = \"redact\"\n").unwrap();
    let policy = policy.to_str().unwrap();
    let (table, _) = ok(&data, &["gates", "replay", "--policy", policy, "--workflow", "receipt-cli", "--since", "7d"]);
    let line = table.lines().find(|l| l.starts_with(&run)).unwrap_or_else(|| panic!("no row for the run:\n{table}"));
    assert!(
        line.contains("contact") && line.contains("allow") && line.contains("redact") && line.contains("pii.email"),
        "{table}"
    );
    assert!(!table.contains(ADDRESS));
    let (json, _) = ok(&data, &["gates", "replay", "--policy", policy, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{json}");
    assert_eq!(
        (changes[0]["run"].as_str(), changes[0]["step"].as_str(), changes[0]["replayed"].as_str()),
        (Some(run.as_str()), Some("contact"), Some("redact"))
    );
    let (none, _) = ok(&data, &["gates", "replay", "--policy", policy, "--workflow", "another"]);
    assert!(none.contains("replayed 0 recorded outputs of 0 runs"), "{none}");
    let err = fails(&data, &["gates", "replay", "--policy", spec]);
    assert!(err.contains("gate policy"), "{err}");
}
