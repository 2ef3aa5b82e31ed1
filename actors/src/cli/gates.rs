//! `tollgate gates scan FILE|-` (findings of the gate mesh on a text, as a table or `--json`;
//! never the matched values), `tollgate gates eval DIR` (precision and recall per category
//! on a labelled corpus) and `tollgate gates replay --policy FILE` (what a new policy would
//! have done to the outputs recorded in the store; see `crate::gate_replay`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use tollgate_engine::gates::eval::{evaluate, load_corpus};
use tollgate_engine::gates::{GateAction, GateMesh, GatePolicy, RedactionMap};
use tollgate_engine::ids::WorkflowId;

use crate::config::Config;
use crate::gate_replay::{ReplayScope, replay_policy};

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
    /// Decide the recorded outputs of past runs again under a new policy and report, per step,
    /// what would have been allowed, redacted or blocked differently (no value is printed).
    Replay {
        /// The new gate policy (TOML, or YAML for `.yaml`/`.yml`): it replaces each workflow's
        /// policy; steps keep their own overrides.
        #[arg(long)]
        policy: PathBuf,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<WorkflowId>,
        /// Only runs created within this long before now (`7d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, cmd: GatesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GatesCommand::Replay { policy, workflow, since, json } => {
            replay_cmd(config, &policy, workflow, since, json).await
        }
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

fn read_policy(path: &Path) -> anyhow::Result<GatePolicy> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    let parsed = if yaml { GatePolicy::from_yaml(&text) } else { GatePolicy::from_toml(&text) };
    parsed.with_context(|| format!("gate policy {}", path.display()))
}

async fn replay_cmd(
    config: &Config,
    policy_file: &Path,
    workflow: Option<WorkflowId>,
    since: Option<Duration>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let policy = read_policy(policy_file)?;
    let engine = super::read_only_engine(config).await?;
    let since_ms = since.map(|d| crate::system::now_ms().saturating_sub(d.as_millis() as u64));
    let scope = ReplayScope { workflow, since: since_ms };
    let report = replay_policy(&engine, &policy, &scope).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("replayed {} recorded outputs of {} runs under {}", report.outputs, report.runs, policy_file.display());
    if report.steps.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let count = |m: &std::collections::BTreeMap<GateAction, usize>| {
        format!(
            "{}/{}/{}",
            m.get(&GateAction::Allow).unwrap_or(&0),
            m.get(&GateAction::Redact).unwrap_or(&0),
            m.get(&GateAction::Block).unwrap_or(&0)
        )
    };
    println!(
        "\n{:<24} {:<20} {:>7} {:>16} {:>16} {:>8}",
        "WORKFLOW", "STEP", "OUTPUTS", "RECORDED a/r/b", "REPLAYED a/r/b", "CHANGED"
    );
    for s in &report.steps {
        println!(
            "{:<24} {:<20} {:>7} {:>16} {:>16} {:>8}",
            s.workflow,
            s.step,
            s.outputs,
            count(&s.recorded),
            count(&s.replayed),
            s.changed
        );
    }
    if report.changes.is_empty() {
        println!("\nno recorded output would have been treated differently");
        return Ok(ExitCode::SUCCESS);
    }
    println!("\n{:<28} {:<20} {:>7} {:<9} {:<9} WHY", "RUN", "STEP", "ATTEMPT", "RECORDED", "REPLAYED");
    for c in &report.changes {
        let why = if c.verdict.rules.is_empty() {
            "-".to_string()
        } else {
            format!("{} ({})", c.verdict.categories.join(", "), c.verdict.rules.join(", "))
        };
        let note = if c.verdict.output_rescanned { "" } else { "  [findings only: the blocked output was not kept]" };
        println!(
            "{:<28} {:<20} {:>7} {:<9} {:<9} {why}{note}",
            c.run,
            c.step,
            c.attempt,
            word(c.verdict.recorded),
            word(c.verdict.replayed)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn word(a: GateAction) -> &'static str {
    match a {
        GateAction::Allow => "allow",
        GateAction::Redact => "redact",
        GateAction::Block => "block",
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
        Some(p) => read_policy(p)?,
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
        println!(
            "verdict: {:?}  ({} findings; ruleset {} {})",
            v.action,
            v.findings.len(),
            v.ruleset.version,
            v.ruleset.hash
        );
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
