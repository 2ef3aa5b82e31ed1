//! `[triggers]` config, and loading the workflow specs whose triggers a process starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tollgate_engine::spec::{ValidatedSpec, parse_yaml};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggersConfig {
    /// Workflow spec files whose triggers `tollgate serve` starts.
    pub workflows: Vec<PathBuf>,
    /// How long fire history entries are kept (and the default dedup window).
    #[serde(with = "crate::config::humantime_serde_compat")]
    pub history_ttl: Duration,
}

impl Default for TriggersConfig {
    fn default() -> Self {
        Self { workflows: Vec::new(), history_ttl: Duration::from_secs(7 * 24 * 3600) }
    }
}

/// Read and validate spec files; a bad one is an error naming the file and every problem.
pub fn load_workflows(files: &[impl AsRef<Path>]) -> anyhow::Result<Vec<ValidatedSpec>> {
    files
        .iter()
        .map(|f| {
            let f = f.as_ref();
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            parse_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))
        })
        .collect()
}
