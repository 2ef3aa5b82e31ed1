//! `tollgate gates scan FILE|-` (findings of the gate mesh on a text, as a table or `--json`;
//! never the matched values) and `tollgate gates eval DIR` (precision and recall per category
//! on a labelled corpus).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use tollgate_engine::gates::eval::{evaluate, load_corpus};
use tollgate_engine::gates::{GateAction, GateMesh, GatePolicy, RedactionMap};

#[derive(Subcommand, Debug)]
pub enum GatesCommand {
    /// Scan a file (or `-` for standard input) and print the verdict and findings.
    Scan {
        file: PathBuf,
        /// A gate policy file (TOML), instead of the default policy.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Also print the redacted text.
        #[arg(long)]
        redacted: bool,
        #[arg(long)]
        json: bool,
    },
    /// Precision and recall per category on a labelled corpus (JSONL files).
    Eval {
        #[arg(default_value = "tests/gates-corpus")]
        dir: PathBuf,
    },
}

pub fn run(cmd: GatesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GatesCommand::Scan { file, policy, redacted, json } => scan(&file, policy.as_deref(), redacted, json),
        GatesCommand::Eval { dir } => {
            let samples = load_corpus(&dir).with_context(|| format!("loading the corpus in {}", dir.display()))?;
            let report = evaluate(&GateMesh::builtin(), &samples, &GatePolicy::default());
            println!("{} samples from {}", samples.len(), dir.display());
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn scan(file: &Path, policy: Option<&Path>, show_redacted: bool, json: bool) -> anyhow::Result<ExitCode> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let policy = match policy {
        Some(p) => {
            let t = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            GatePolicy::from_toml(&t).with_context(|| format!("gate policy {}", p.display()))?
        }
        None => GatePolicy::default(),
    };
    let out = GateMesh::builtin().scan_text(&text, &policy, &mut RedactionMap::new());
    let v = &out.verdict;
    if json {
        let mut doc = serde_json::to_value(v)?;
        if show_redacted {
            doc["redacted"] = serde_json::to_value(&out.redacted)?;
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("verdict: {:?}  ({} findings; ruleset {} {})", v.action, v.findings.len(), v.ruleset.version, v.ruleset.hash);
        for f in &v.findings {
            println!(
                "  {:<8} {:<28} {:<12} {:?} bytes {}..{}  confidence {:.2}  → {:?}",
                format!("{:?}", f.detector).to_lowercase(),
                f.rule_id,
                f.category,
                f.severity,
                f.span.start,
                f.span.end,
                f.confidence,
                f.action
            );
        }
        if let Some(t) = &v.threat {
            println!("  threat score {:.2}: {}", t.score, t.signals.join(", "));
        }
        if show_redacted {
            if let Some(r) = &out.redacted {
                println!("--- redacted ---\n{r}");
            }
        }
    }
    Ok(if v.action == GateAction::Block { ExitCode::from(3) } else { ExitCode::SUCCESS })
}
