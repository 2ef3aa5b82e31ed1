//! The `tollgate` binary never prints a planted secret: not in progress, summaries, `runs show`
//! (table or JSON) nor debug logs — while `runs show` does name the gate rules that fired.

use std::process::Command;

const KEY: &str = "sk-proj-Ab3dEf5gHi7jKl9mNo1pQr3sTu5vWx7yZa9bCd1eFg3hIj5kLm";
const CARD: &str = "4111 1111 1111 1111";

const SPEC: &str = r#"
id: planted-cli
owner: ops
steps:
  - id: leak
    type: code
    script: |
      const key = "sk-proj-" + "Ab3dEf5gHi7jKl9mNo1pQr3s" + "Tu5vWx7yZa9bCd1eFg3hIj5kLm";
      return "card " + "4111 1111" + " 1111 1111" + " key " + key;
  - { id: forward, type: code, needs: [leak], inputs: { t: "${{ steps.leak.output }}" }, script: "return input.t" }
"#;

fn tollgate(data: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("TOLLGATE_LOG", "debug")
        .env_remove("TOLLGATE_BACKEND")
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "tollgate {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn no_cli_output_or_log_line_holds_a_planted_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("planted.yaml");
    std::fs::write(&file, SPEC).unwrap();
    let data = dir.path().join("data");
    let file = file.to_str().unwrap();

    let (run_out, run_err) = tollgate(&data, &["run", file]);
    let run = run_err
        .lines()
        .find_map(|l| l.strip_prefix("tollgate: run ").and_then(|l| l.strip_suffix(" started")))
        .expect("run id")
        .to_string();
    let mut everything = vec![run_out, run_err];
    everything.push(tollgate(&data, &["run", file, "--json"]).0);
    let (show, show_err) = tollgate(&data, &["runs", "show", &run]);
    assert!(
        show.contains("gate: redact — ") && show.contains("(card)") && show.contains("(secret)"),
        "runs show names the rules that fired:\n{show}"
    );
    everything.extend([show, show_err]);
    everything.push(tollgate(&data, &["runs", "show", &run, "--json"]).0);
    everything.push(tollgate(&data, &["runs", "list"]).0);
    for (i, out) in everything.iter().enumerate() {
        assert!(!out.contains(KEY), "output {i} holds the planted key:\n{out}");
        assert!(!out.contains(CARD), "output {i} holds the planted card:\n{out}");
    }
}
