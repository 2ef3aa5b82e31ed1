//! Prints precision and recall per category of the built-in gate rules on a labelled corpus.
//! `cargo run -p tollgate-engine --release --example gates_eval -- tests/gates-corpus [--mistakes]
//! [--rules DIR]` (`--rules`: the rule files of DIR instead of the built-in rules, to compare
//! rule sets on one corpus).
//! Exits non-zero when a target of issue 3 is missed.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_engine::gates::eval::{evaluate, load_corpus};
use tollgate_engine::gates::{GateMesh, GatePolicy};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rules = args.iter().position(|a| a == "--rules").and_then(|i| args.get(i + 1)).cloned();
    let dir = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--rules"))
        .map(|(_, a)| PathBuf::from(a))
        .unwrap_or_else(|| "tests/gates-corpus".into());
    let mesh = match &rules {
        Some(r) => match GateMesh::load_dir(r) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("gates_eval: rules in {r}: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => GateMesh::builtin(),
    };
    let samples = match load_corpus(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gates_eval: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = evaluate(&mesh, &samples, &GatePolicy::default());
    print!("{}", report.table());
    if args.iter().any(|a| a == "--mistakes") {
        for m in &report.mistakes {
            println!("  {m}");
        }
    }
    // Targets: (category, min recall, min precision).
    let targets = [
        ("secret", 0.95, 0.90),
        ("card", 0.98, 0.95),
        ("iban", 0.98, 0.95),
        ("email", 0.98, 0.0),
        // Issue 7: widened threat families (six languages, indirect, hidden role claims, persona
        // jailbreaks, tool calls in prose) and the Nordic identity numbers.
        ("threat", 0.95, 0.98),
        ("national_id", 0.98, 0.95),
    ];
    let mut ok = true;
    for (cat, r, p) in targets {
        let met = report.category(cat).is_some_and(|c| c.recall >= r && c.precision >= p);
        println!("target {cat:<8} recall >= {r:.2} precision >= {p:.2}: {}", if met { "met" } else { "MISSED" });
        ok &= met;
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
