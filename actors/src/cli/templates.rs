//! `tollgate templates list|show NAME`: the workflow catalogue (shipped templates and
//! configured specs) with each workflow's parameters.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use crate::catalogue::{Catalogue, Entry};
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum TemplatesCommand {
    /// List the workflows known by id: the shipped templates and the configured specs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a workflow's description and parameters (type, required, default, description).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, command: TemplatesCommand) -> anyhow::Result<ExitCode> {
    let catalogue = Catalogue::load(&config.catalogue)?;
    match command {
        TemplatesCommand::List { json } => {
            if json {
                let all: Vec<Value> = catalogue.entries().map(Entry::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "templates": all }))?);
            } else {
                let width = catalogue.entries().map(|e| e.id().len()).max().unwrap_or(0);
                for e in catalogue.entries() {
                    let required = e.parameters().iter().filter(|p| p["required"] == true).count();
                    println!(
                        "{:width$}  {}  ({} parameters, {required} required)",
                        e.id(),
                        e.description(),
                        e.parameters().len(),
                    );
                }
                println!("\n`tollgate templates show NAME` shows one; `tollgate run NAME --set name=value…` runs one.");
            }
        }
        TemplatesCommand::Show { name, json } => {
            let entry = match catalogue.get(&name) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("tollgate: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&entry.to_json())?);
            } else {
                print_entry(entry);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_entry(e: &Entry) {
    let s = e.spec.spec();
    println!("{} v{} (owner {}, {})", e.id(), s.version, s.owner, e.source);
    if !e.description().is_empty() {
        println!("  {}", e.description());
    }
    let triggers: Vec<&str> = s.triggers.iter().map(|t| t.kind().name()).collect();
    if !triggers.is_empty() {
        println!("  triggers: {}", triggers.join(", "));
    }
    println!(
        "  steps: {}",
        s.steps.iter().map(|st| format!("{} ({})", st.id, st.ty().name())).collect::<Vec<_>>().join(", ")
    );
    println!("\nParameters:");
    let params = e.parameters();
    if params.is_empty() {
        println!("  (none)");
    }
    for p in &params {
        let name = p["name"].as_str().unwrap_or_default();
        let ty = p["type"].as_str().unwrap_or_default();
        let req = if p["required"] == true { "required".to_string() } else { format!("default {}", p["default"]) };
        println!("  {name:<20} {ty:<8} {req}");
        if let Some(d) = p["description"].as_str() {
            println!("  {:<20} {d}", "");
        }
    }
    let example: Vec<String> = params
        .iter()
        .filter(|p| p["required"] == true)
        .map(|p| format!("--set {}=…", p["name"].as_str().unwrap_or_default()))
        .collect();
    println!("\nRun it: tollgate run {} {}", e.id(), example.join(" "));
}
