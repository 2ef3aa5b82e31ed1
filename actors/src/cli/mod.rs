//! The command line: `validate`, `schema`, `run`, `decide`, `resume`, `cancel`, `runs`,
//! `secrets`, `connections`, `docs`, `memory`, `receipt`, `serve`, `worker`. Each command is a function here or in a sibling module.

mod connections;
mod docs;
mod gates;
mod memory;
mod progress;
mod receipt;
mod report;
mod secrets;
mod templates;
mod triggers;
mod users;

pub use report::summary_json;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use tollgate_engine::ids::{RunId, StepId};
use tollgate_engine::money::Money;
use tollgate_engine::run::{Decision, StepStatus};
use tollgate_engine::spec::{ValidatedSpec, parse_yaml};

use crate::bootstrap::{self, Role, Running};
use crate::config::{BackendKind, Config};
use crate::service::{RunView, ServiceError, Tollgate};

#[derive(Parser, Debug)]
#[command(name = "tollgate", version, about = "Standard operating procedures as durable, gated, audited workflows")]
pub struct Cli {
    /// Config file (default: config/default.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Storage and queue backend (overrides config and TOLLGATE_BACKEND).
    #[arg(long, global = true, value_enum)]
    pub backend: Option<BackendKind>,
    /// Data directory of the embedded backend.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Redis URL for the redis backend.
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a workflow spec; prints every problem with its place.
    Validate { file: PathBuf },
    /// Print the JSON Schema of the workflow spec format (for editors).
    Schema,
    /// Run a workflow until it finishes or waits for a human: a spec file, or the id of a
    /// workflow in the catalogue (`tollgate templates list`).
    Run {
        /// A spec file, or a catalogue id such as `client-intake`.
        workflow: String,
        /// A parameter, `name=value` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Print the final summary as JSON.
        #[arg(long)]
        json: bool,
        /// Keep waiting through human pauses (decide from another terminal).
        #[arg(long)]
        wait: bool,
        /// Your API token: the run is recorded as started by its user.
        #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Decide a pending human request of a run's step: approve, reject, extend, modify, abort;
    /// a tool authorisation: allow_once, allow_for_run, deny (with --reason), abort.
    Decide {
        run: RunId,
        /// The step waiting for the decision (for a budget extension: the step the budget blocks).
        step: StepId,
        #[arg(value_parser = ["approve", "reject", "extend", "modify", "abort", "allow_once", "allow_for_run", "deny"])]
        decision: String,
        #[arg(long)]
        comment: Option<String>,
        /// For `deny`: why; the model receives it as the tool's result.
        #[arg(long)]
        reason: Option<String>,
        /// For `extend`: the amount to add to the budget (an exact decimal, e.g. 0.50).
        #[arg(long)]
        amount: Option<Money>,
        /// For `modify`: the corrected output, as JSON (a bare word is taken as a string).
        #[arg(long)]
        value: Option<String>,
        /// Your API token: the decision is recorded as its user's (required once users exist).
        #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Who decides, before any user exists (recorded in the audit trail).
        #[arg(long, default_value_t = whoami())]
        by: String,
        #[arg(long)]
        json: bool,
    },
    /// Continue an unfinished run in this process (after a crash or a decision).
    Resume {
        run: RunId,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run.
    Cancel {
        run: RunId,
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
    },
    /// Inspect runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// The gate mesh: scan text, evaluate on a labelled corpus.
    Gates {
        #[command(subcommand)]
        command: gates::GatesCommand,
    },
    /// Secrets of an owner (model providers' API keys), sealed at rest.
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Named connections of an owner (smtp, imap, http) that `connector` steps use: add, list, test, remove.
    Connections {
        #[command(subcommand)]
        command: connections::ConnectionsCommand,
    },
    /// Document collections that `research` steps search: ingest, search, list, delete.
    Docs {
        #[command(subcommand)]
        command: docs::DocsCommand,
    },
    /// An owner's memory notes (written by `memory.write` steps), sealed at rest.
    Memory {
        #[command(subcommand)]
        command: memory::MemoryCommand,
    },
    /// Run the engine (run actors, step workers, admin HTTP, the triggers of
    /// `[triggers] workflows`) until interrupted.
    Serve,
    /// Triggers: run them, list them with their health, show a workflow's fire history.
    Triggers {
        #[command(subcommand)]
        command: triggers::TriggersCommand,
    },
    /// Run step workers only (fleets, against Redis).
    Worker,
    /// Run receipts: the signing key, verification (export: `runs export RUN --receipt`).
    Receipt {
        #[command(subcommand)]
        command: receipt::ReceiptCommand,
    },
    /// The workflow catalogue: shipped templates and configured specs, with their parameters.
    Templates {
        #[command(subcommand)]
        command: templates::TemplatesCommand,
    },
    /// Users of the admin API and the console.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// List runs, newest first, a page at a time (from summary records; no journal is read).
    List {
        #[arg(long)]
        json: bool,
        /// Runs per page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
        limit: u16,
        /// Start after this run (the `next` printed at the end of the previous page).
        #[arg(long)]
        after: Option<RunId>,
    },
    /// Show a run: each step's status, attempts, duration, cost, error and decision.
    Show {
        run: RunId,
        #[arg(long)]
        json: bool,
        /// Also print each step's output (as the run holds it: gated, so redacted).
        #[arg(long)]
        outputs: bool,
    },
    /// Export a run's record: `--receipt` prints its signed receipt (JSON) to standard output.
    Export {
        run: RunId,
        /// The signed receipt: spec digest, parameters (redacted), every attempt, verdict and
        /// decision, the journal's hash chain (check it with `tollgate receipt verify`).
        #[arg(long, required = true)]
        receipt: bool,
    },
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

pub async fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(b) = cli.backend {
        config.backend = b;
    }
    if let Some(d) = cli.data_dir {
        config.data_dir = d;
    }
    if let Some(u) = cli.redis_url {
        config.redis_url = u;
    }
    match cli.command {
        Command::Validate { file } => validate_cmd(&config, &file),
        Command::Secrets { command } => secrets::secrets_cmd(&config, command).await,
        Command::Connections { command } => connections::run(&config, command).await,
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&tollgate_engine::spec::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { workflow, set, json, wait, token } => {
            let (spec, name) = match resolve_workflow(&config, &workflow) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            let params = parse_sets(&set)?;
            let sys = bootstrap::start(&config, Role::All).await?;
            let result = async {
                let caller = users::caller(&sys.tollgate.users, token.as_deref(), &whoami()).await?;
                let run = match sys.tollgate.start_run_as(&caller, &spec, &params).await {
                    Ok(r) => r,
                    // The spec itself was validated above: what is left is the parameters.
                    Err(ServiceError::Spec(e)) => {
                        eprintln!("{name}: invalid parameters:");
                        for p in &e.problems {
                            eprintln!("  - {p}");
                        }
                        return Ok(ExitCode::from(2));
                    }
                    Err(e) => return Err(e.into()),
                };
                eprintln!("tollgate: run {run} started");
                drive(&sys, &run, json, wait).await
            }
            .await;
            sys.shutdown().await;
            result
        }
        Command::Decide { run, step, decision, comment, reason, amount, value, token, by, json } => {
            let decision = match (decision.as_str(), amount, value) {
                ("deny", _, _) => match reason.filter(|r| !r.trim().is_empty()) {
                    Some(reason) => Decision::Deny { reason },
                    None => bail!("`deny` needs --reason: the model receives it as the tool's result"),
                },
                ("allow_once", _, _) => Decision::AllowOnce,
                ("allow_for_run", _, _) => Decision::AllowForRun,
                ("approve", _, _) => Decision::Approve,
                ("reject", _, _) => Decision::Reject,
                ("abort", _, _) => Decision::Abort,
                ("extend", Some(a), _) if !a.is_zero() => Decision::Extend { amount: a },
                ("extend", _, _) => bail!("`extend` needs --amount with a positive amount"),
                ("modify", _, Some(v)) => {
                    Decision::Modify { value: serde_json::from_str(&v).unwrap_or(Value::String(v)) }
                }
                ("modify", _, None) => bail!("`modify` needs --value with the corrected output"),
                (other, _, _) => bail!("unknown decision `{other}`"),
            };
            let sys = bootstrap::start(&config, Role::All).await?;
            let result = async {
                let caller = users::caller(&sys.tollgate.users, token.as_deref(), &by).await?;
                decide_cmd(&sys, &run, &step, decision, &caller, comment, json).await
            }
            .await;
            sys.shutdown().await;
            result
        }
        Command::Resume { run, json } => {
            let sys = bootstrap::start(&config, Role::All).await?;
            let result = async {
                sys.tollgate.ensure(&run).await?;
                drive(&sys, &run, json, false).await
            }
            .await;
            sys.shutdown().await;
            result
        }
        Command::Cancel { run, reason } => {
            let sys = bootstrap::start(&config, Role::All).await?;
            let result = async {
                sys.tollgate.cancel(&run, &whoami(), &reason).await?;
                let v = sys.tollgate.wait_settled(&run, Duration::from_millis(200)).await?;
                report::print_summary(&v);
                Ok(ExitCode::SUCCESS)
            }
            .await;
            sys.shutdown().await;
            result
        }
        Command::Runs { command } => runs_cmd(&config, command).await,
        Command::Users { command } => users::run(&config, command).await,
        Command::Receipt { command } => receipt::run(&config, command).await,
        Command::Templates { command } => templates::run(&config, command),
        Command::Gates { command } => gates::run(&config, command).await,
        Command::Docs { command } => docs::run(&config, command).await,
        Command::Memory { command } => memory::run(&config, command).await,
        Command::Serve => crate::http::serve(&config).await.map(|_| ExitCode::SUCCESS),
        Command::Triggers { command } => triggers::run(&config, command).await,
        Command::Worker => {
            let sys = bootstrap::start(&config, Role::WorkerOnly).await?;
            let health = match config.health_addr {
                Some(addr) => {
                    let (bound, server) =
                        crate::http::health::serve(addr, sys.tollgate.engine.health.clone(), sys.token())
                            .await
                            .with_context(|| format!("health listener on {addr}"))?;
                    eprintln!("tollgate worker: health on http://{bound}/healthz");
                    Some(server)
                }
                None => None,
            };
            eprintln!("tollgate worker: processing steps from {:?} (Ctrl-C or SIGTERM to stop)", config.backend);
            shutdown_signal().await;
            sys.shutdown().await;
            if let Some(server) = health {
                let _ = server.await;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Ctrl-C or SIGTERM (what `docker stop` and service managers send).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Read and validate a spec file, printing problems. Exit code 2 on a bad spec.
fn load_spec(file: &Path) -> Result<ValidatedSpec, ExitCode> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tollgate: cannot read {}: {e}", file.display());
            return Err(ExitCode::from(2));
        }
    };
    parse_yaml(&text).map_err(|e| {
        eprint!("{}: {e}", file.display());
        ExitCode::from(2)
    })
}

/// What `tollgate run WORKFLOW` runs: the spec file `workflow` names if there is one, else the
/// catalogue's workflow of that id. Exit code 2, with the reason, when it is neither.
fn resolve_workflow(config: &Config, workflow: &str) -> Result<(ValidatedSpec, String), ExitCode> {
    let path = Path::new(workflow);
    if path.is_file() {
        return load_spec(path).map(|s| (s, path.display().to_string()));
    }
    let catalogue = match crate::catalogue::Catalogue::load(&config.catalogue) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return Err(ExitCode::from(2));
        }
    };
    match catalogue.get(workflow) {
        Ok(entry) => Ok(((*entry.spec).clone(), format!("{workflow} ({})", entry.source))),
        Err(e) => {
            let looks_like_file = workflow.contains('/') || workflow.ends_with(".yaml") || workflow.ends_with(".yml");
            if looks_like_file {
                eprintln!("tollgate: cannot read {workflow}: no such file (and it is not a catalogue id)");
            } else {
                eprintln!("tollgate: `{workflow}` is neither a spec file nor a workflow of the catalogue: {e}");
            }
            Err(ExitCode::from(2))
        }
    }
}

fn validate_cmd(config: &Config, file: &Path) -> anyhow::Result<ExitCode> {
    match load_spec(file) {
        Ok(spec) => {
            // `workflow.run` steps name workflows of the catalogue (and no cycle through them).
            let catalogue = crate::catalogue::Catalogue::load(&config.catalogue)?;
            if let Err(problems) =
                crate::subworkflows::check_refs_in(&|w| catalogue.get(w.as_str()).ok().map(|e| e.spec.clone()), &spec)
            {
                for p in problems.lines() {
                    eprintln!("{}: {p}", file.display());
                }
                return Ok(ExitCode::from(2));
            }
            let s = spec.spec();
            println!("{}: ok — workflow `{}` v{} ({} steps)", file.display(), s.id, s.version, s.steps.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

/// `--set a=1 --set name=Acme` → parameters (strings; the spec's types coerce them).
fn parse_sets(sets: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for s in sets {
        let Some((k, v)) = s.split_once('=') else { bail!("--set {s}: expected NAME=VALUE") };
        out.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(out)
}

/// Follow a run with progress until it finishes (or waits for a human, unless `wait`).
async fn drive(sys: &Running, run: &RunId, json: bool, wait: bool) -> anyhow::Result<ExitCode> {
    let progress = (!json).then(|| progress::Progress::start(sys.tollgate.engine.updates.subscribe(), run.clone()));
    let view = loop {
        let v = sys.tollgate.wait_settled(run, Duration::from_millis(250)).await?;
        if v.state.status.is_finished() || !wait {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if let Some(p) = progress {
        p.finish().await;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report::summary_json(&view))?);
    } else {
        report::print_summary(&view);
        print_next_steps(&view);
    }
    Ok(exit_code(&view))
}

fn exit_code(v: &RunView) -> ExitCode {
    match v.state.status.label() {
        "succeeded" => ExitCode::SUCCESS,
        "running" | "pending" => ExitCode::SUCCESS, // waiting for a human
        _ => ExitCode::FAILURE,
    }
}

fn print_next_steps(v: &RunView) {
    let run = &v.meta.run;
    // Steps, then the items of `for_each` steps (`STEP.K`).
    let ids: Vec<(String, &tollgate_engine::run::StepState)> = v
        .state
        .steps
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            std::iter::once((v.step_ids[i].clone(), s))
                .chain(s.items.iter().enumerate().map(move |(k, it)| (format!("{}.{k}", v.step_ids[i]), it)))
        })
        .collect();
    for (id, s) in &ids {
        if let (StepStatus::WaitingHuman { .. }, Some(_)) = (&s.status, &s.blocked) {
            let by = if s
                .gate
                .as_ref()
                .and_then(|g| g["checks"].as_array())
                .is_some_and(|c| c.iter().any(|c| c["passed"] == false))
            {
                "Its checks blocked"
            } else {
                "The gate mesh blocked"
            };
            println!("\n{by} the output of `{}` in run {run}. To decide:", id);
            println!("  tollgate decide {run} {} approve                       # release it as is", id);
            println!(
                "  tollgate decide {run} {} modify --value '\"corrected\"'  # continue with a corrected value",
                id
            );
            println!("  tollgate decide {run} {} abort", id);
        } else if let StepStatus::WaitingHuman { .. } = s.status {
            println!("\nRun {run} is waiting for a human decision on `{}`. To decide:", id);
            println!("  tollgate decide {run} {} approve --comment \"looks good\"", id);
            println!("  tollgate decide {run} {} reject --comment \"why\"", id);
        }
    }
    if v.state.budget_request.is_some() {
        if let Some(ask) = &v.state.child_ask {
            println!(
                "\nRun {run} is paused: its budget cannot cover what sub-workflow run {} of `{}` needs ({} more). To decide:",
                ask.child, v.step_ids[ask.step], ask.amount
            );
            println!("  tollgate decide {run} {} extend --amount {}", v.step_ids[ask.step], ask.amount);
            println!("  tollgate decide {run} {} reject", v.step_ids[ask.step]);
        } else if let Some(&i) = v.state.budget_blocked.first() {
            println!("\nRun {run} is paused: its budget cannot cover `{}`. To decide:", v.step_ids[i]);
            println!("  tollgate decide {run} {} extend --amount 5", v.step_ids[i]);
            println!("  tollgate decide {run} {} reject", v.step_ids[i]);
        }
        for ask in &v.state.queued_asks {
            println!(
                "Then sub-workflow run {} of `{}` needs {} more (asked once this decision is made).",
                ask.child, v.step_ids[ask.step], ask.amount
            );
        }
    }
}

async fn decide_cmd(
    sys: &Running,
    run: &RunId,
    step: &StepId,
    decision: Decision,
    caller: &crate::access::Caller,
    comment: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let t: &Tollgate = &sys.tollgate;
    let v = t.view_as(caller, run).await?;
    // A step, or an item `STEP.K` of a `for_each` step.
    let item = step
        .as_str()
        .rsplit_once('.')
        .and_then(|(s, k)| Some((v.step_ids.iter().position(|id| id == s)?, k.parse::<usize>().ok()?)));
    let (i, state) = match (v.step_ids.iter().position(|s| s == step.as_str()), item) {
        (Some(i), _) => (i, &v.state.steps[i]),
        (None, Some((i, k))) if k < v.state.steps[i].items.len() => (i, &v.state.steps[i].items[k]),
        _ => bail!("run {run} has no step `{step}` (steps: {})", v.step_ids.join(", ")),
    };
    let request = match &state.status {
        StepStatus::WaitingHuman { request } => request.clone(),
        _ if item.is_none() && v.state.budget_blocked.contains(&i) && v.state.budget_request.is_some() => {
            v.state.budget_request.clone().expect("checked")
        }
        // A sub-workflow's budget ask the run put to a person.
        _ if item.is_none()
            && v.state.child_ask.as_ref().is_some_and(|a| a.step == i)
            && v.state.budget_request.is_some() =>
        {
            v.state.budget_request.clone().expect("checked")
        }
        other => bail!("step `{step}` of run {run} is not waiting for a decision (it is {})", other.label()),
    };
    t.decide_as(caller, &request, decision, comment).await?;
    println!("decision recorded on {request} (by {})", caller.name());
    // Drive the run on from here, unless another process holds it.
    match t.ensure(run).await {
        Ok(()) => drive(sys, run, json, false).await,
        Err(e) => {
            println!("the run is driven by another process, which will apply the decision ({e})");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The store alone, for commands that only read it (and write records of their own):
/// no queue, no workers, no heartbeat.
async fn read_only_engine(config: &Config) -> anyhow::Result<crate::system::Engine> {
    let backend = bootstrap::open_backend(config).await?;
    // Takes no lease, so it announces no heartbeat.
    let liveness = crate::liveness::Liveness::detached(backend.clone());
    let store = tollgate_engine::store::Store::new(backend, bootstrap::master_key(config)?);
    Ok(crate::system::Engine::new(
        std::sync::Arc::new(store),
        std::sync::Arc::new(NoQueue),
        Default::default(),
        1,
        Duration::from_secs(1),
        liveness,
        config.lease_ttl,
    ))
}

async fn runs_cmd(config: &Config, command: RunsCommand) -> anyhow::Result<ExitCode> {
    // Read-only: the store alone, no queue, no workers.
    let engine = read_only_engine(config).await?;
    match command {
        RunsCommand::List { json, limit, after } => {
            let page = engine.store.run_page(after.as_ref(), usize::from(limit)).await?;
            if json {
                let runs: Vec<Value> = page.runs.iter().map(crate::http::listing_json).collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "runs": runs, "next": page.next }))?);
            } else {
                report::print_list(&page);
            }
        }
        RunsCommand::Show { run, json, outputs } => {
            let v = crate::service::view(&engine, &run).await.with_context(|| format!("run {run}"))?;
            if json {
                let mut summary = report::summary_json(&v);
                if outputs {
                    report::add_outputs(&v, &mut summary);
                }
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                report::print_summary(&v);
                if outputs {
                    report::print_outputs(&v);
                }
            }
        }
        RunsCommand::Export { run, receipt: _ } => receipt::export(&engine, &run).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `runs` reads only; it never enqueues.
struct NoQueue;

#[async_trait::async_trait]
impl tollgate_engine::queue::StepQueue for NoQueue {
    async fn enqueue(
        &self,
        _: tollgate_engine::queue::StepJob,
        _: Option<std::time::SystemTime>,
    ) -> Result<(), tollgate_engine::queue::QueueError> {
        Err(tollgate_engine::queue::QueueError("read-only command".into()))
    }
}
