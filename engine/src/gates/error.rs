//! Errors of the gate mesh: loading rule files, checking their examples, building policies.

use std::path::PathBuf;

/// Why a rule set or a policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("cannot read gate rules at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse gate rule file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("rule {rule}: invalid regex: {message}")]
    Regex { rule: String, message: String },
    #[error("rule {rule}: {message}")]
    InvalidRule { rule: String, message: String },
    #[error("duplicate rule id {rule}")]
    DuplicateRule { rule: String },
    /// A positive example that does not match, or a negative example that does.
    #[error("rule {rule}: {kind} example #{index} {outcome}: {example:?}")]
    Example {
        rule: String,
        /// `positive` or `negative`.
        kind: &'static str,
        index: usize,
        /// `did not match` or `matched`.
        outcome: &'static str,
        example: String,
    },
    #[error("invalid gate policy: {0}")]
    Policy(String),
}
