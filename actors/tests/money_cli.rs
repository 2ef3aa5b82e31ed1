//! Money is exact end to end, through the real binary: three steps of cost 0.1 spend exactly
//! 0.30 of a 0.3 budget (state, `runs show`, `--json`), a fourth pauses the run, and an
//! extension of 0.1 read from the command line lets it finish at exactly 0.40.

use std::process::Command;

use serde_json::{Value, json};

const SPEC: &str = r#"
id: tenths
owner: ops
budget: { max_cost: 0.3 }
steps:
  - { id: a, type: code, script: "return 1", cost: 0.1 }
  - { id: b, type: code, script: "return 2", cost: 0.1, needs: [a] }
  - { id: c, type: code, script: "return 3", cost: 0.1, needs: [b] }
  - { id: d, type: code, script: "return 4", cost: 0.1, needs: [c] }
"#;

fn tollgate(data: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("TOLLGATE_BACKEND")
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "tollgate {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn show_json(data: &std::path::Path, run: &str) -> Value {
    serde_json::from_str(&tollgate(data, &["runs", "show", run, "--json"]).0).expect("runs show --json prints JSON")
}

#[test]
fn three_tenths_spend_exactly_three_tenths_and_an_extension_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenths.yaml");
    std::fs::write(&file, SPEC).unwrap();
    let data = dir.path().join("data");

    let (_, err) = tollgate(&data, &["run", file.to_str().unwrap(), "--json"]);
    let run = err
        .lines()
        .find_map(|l| l.strip_prefix("tollgate: run ").and_then(|l| l.strip_suffix(" started")))
        .expect("run id")
        .to_string();

    let v = show_json(&data, &run);
    assert_eq!(v["status"], "waiting", "the fourth step does not fit a budget of 0.3: {v}");
    assert_eq!(v["budget"]["spent"], json!("0.3"), "{}", v["budget"]);
    assert_eq!(v["budget"]["cap"], json!("0.3"));
    let costs: Vec<&Value> = v["steps"].as_array().unwrap().iter().map(|s| &s["cost"]).collect();
    assert_eq!(costs, [&json!("0.1"), &json!("0.1"), &json!("0.1"), &json!("0")]);
    let (table, _) = tollgate(&data, &["runs", "show", &run]);
    assert!(table.contains("budget: 0.30 spent of 0.30"), "{table}");

    tollgate(&data, &["decide", &run, "d", "extend", "--amount", "0.1", "--by", "cfo"]);
    let v = show_json(&data, &run);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["budget"]["spent"], json!("0.4"));
    assert_eq!(v["budget"]["extended"], json!("0.1"));
    let (table, _) = tollgate(&data, &["runs", "show", &run]);
    assert!(table.contains("budget: 0.40 spent of 0.40"), "{table}");

    let refused = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--data-dir")
        .arg(&data)
        .args(["decide", &run, "d", "extend", "--amount=-1"])
        .env_remove("TOLLGATE_BACKEND")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("must not be negative"), "{stderr}");
}
