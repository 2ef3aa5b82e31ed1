//! Reading a spec from YAML, and the error type that names where a spec is wrong.

use std::fmt;

use crate::spec::{ValidatedSpec, WorkflowSpec, limits, validate};

/// One thing wrong with a spec, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// Where: `steps[2] (memo).needs`, `parameters.client_name`, or `line 4, column 3`.
    pub at: String,
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A spec that cannot be used, with every problem found (not just the first).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub problems: Vec<SpecProblem>,
}

impl SpecError {
    pub fn one(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self { problems: vec![SpecProblem { at: at.into(), message: message.into() }] }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "invalid workflow spec ({n} problem{}):", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Parse YAML text into a validated spec. The text's size and nesting are bounded first
/// ([`limits`]), so a hostile spec costs one linear scan, not the parser's time.
pub fn parse_yaml(text: &str) -> Result<ValidatedSpec, SpecError> {
    limits::check(text)?;
    let spec: WorkflowSpec = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = match e.location() {
            Some(loc) => format!("line {}, column {}", loc.line(), loc.column()),
            None => "spec".to_string(),
        };
        // serde_yaml_ng prefixes the path ("steps[1]: unknown field…") and suffixes the
        // location, which `at` already says.
        let message = e.to_string();
        let message = match (e.location(), message.rfind(" at line ")) {
            (Some(_), Some(cut)) => message[..cut].to_string(),
            _ => message,
        };
        SpecError::one(at, message)
    })?;
    validate(spec)
}
