//! `code` steps: a JavaScript body run as a job in the sandbox of the `code` handler
//! (`tollgate-connectors`), under CPU and memory limits.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::validate::problem;

/// `code`: a JavaScript function body run in a sandbox (no I/O) under CPU and memory limits;
/// `input` holds the step's inputs, the value it returns is the output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeStep {
    /// A JavaScript function body; `input` holds the step's inputs; its return value is the output.
    pub script: String,
    /// Sandbox limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CodeLimits>,
}

impl CodeStep {
    pub const FIELDS: &'static [&'static str] = &["script", "limits"];
}

impl StepShape for CodeStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if let Some(l) = &self.limits {
            if l.cpu.is_zero() {
                p.push(problem(format!("{at}.limits.cpu"), "must be more than zero"));
            }
            if !(1..=4096).contains(&l.memory_mib) {
                p.push(problem(format!("{at}.limits.memory_mib"), "must be between 1 and 4096"));
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeLimits {
    /// CPU time for one attempt.
    #[serde(with = "humantime_serde", default = "default_cpu")]
    #[schemars(with = "String")]
    pub cpu: Duration,
    /// Heap limit in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
}

impl Default for CodeLimits {
    fn default() -> Self {
        Self { cpu: default_cpu(), memory_mib: default_memory_mib() }
    }
}

fn default_cpu() -> Duration {
    Duration::from_secs(2)
}
fn default_memory_mib() -> u32 {
    32
}
