//! `upload:` — a file starts the run: an HTTP multipart upload to the trigger's URL, and/or a
//! watched folder whose files are moved to `processed/` or `failed/` once their fire is
//! recorded. The dedup key is the content's hash.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::SpecProblem;
use crate::spec::validate::problem;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadTrigger {
    /// Largest file accepted, in bytes (default 10 MiB; larger: 413, or `failed/`).
    #[serde(default = "default_max_size")]
    pub max_size: usize,
    /// A folder to watch: each new file fires once, then moves to `processed/` (or `failed/`)
    /// inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub folder: Option<PathBuf>,
    /// How often the folder is scanned (default 1s).
    #[serde(default = "default_poll", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll: Duration,
}

fn default_max_size() -> usize {
    10 << 20
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}

impl UploadTrigger {
    pub(crate) fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if self.max_size == 0 {
            p.push(problem(format!("{at}.upload.max_size"), "must be at least 1 byte"));
        }
        if self.poll.is_zero() {
            p.push(problem(format!("{at}.upload.poll"), "must be longer than zero"));
        }
    }
}

/// A file name as an uploader gave it, made safe to show and store: the last path component
/// only if it is plain; `None` for a name that tries to leave its folder (`..`, a path, a
/// drive, control characters) — such an upload is refused, not renamed.
pub fn sanitize_file_name(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || name == "." || name == ".." {
        return None;
    }
    if name.contains(['/', '\\', ':', '\0']) || name.chars().any(char::is_control) {
        return None;
    }
    Some(name.to_string())
}
