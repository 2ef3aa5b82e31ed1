//! The deterministic gate mesh: every step output passes it before anything else may read it.
//!
//! Text is normalised (NFKC, hidden characters dropped and flagged, offsets kept), one keyword
//! prefilter pass decides which rules run, then four detectors report findings — user regex
//! rules, PII (with checksums and context words), secrets (provider formats, entropy,
//! allowlists) and a threat classifier (named, weighted signals). The policy turns findings into
//! `allow`, `redact` (typed placeholders stable within a run) or `block`; oversized input and an
//! exceeded time budget fail closed. Rules are data (`config/gates/*.toml`), embedded as the
//! built-in set, and each rule's examples are checked when it loads.
//!
//! ```
//! use tollgate_engine::gates::{GateAction, GateMesh, GatePolicy, RedactionMap};
//! let mesh = GateMesh::builtin();
//! let mut map = RedactionMap::with_key([0; 32]);
//! let out = mesh.scan_text("mail jane@corp.example.org", &GatePolicy::default(), &mut map);
//! assert_eq!(out.verdict.action, GateAction::Redact);
//! assert_eq!(out.redacted.as_deref(), Some("mail [EMAIL_1]"));
//! ```

mod checksum;
mod encoded;
mod error;
pub mod eval;
mod examples;
mod json;
mod locate;
mod matcher;
mod mesh;
mod normalize;
mod pii;
mod policy;
mod prefilter;
mod redact;
mod regex_rules;
pub mod replay;
mod rules;
mod scan;
mod secrets;
mod threat;
mod verdict;

pub use error::GateError;
pub use locate::{RedactedLocation, redacted_locations};
pub use mesh::GateMesh;
pub use policy::{DetectorSet, GatePolicy, GatePolicyOverride};
pub use redact::{RedactionMap, placeholder_kind};
pub use regex_rules::RegexRule;
pub use rules::Examples;
pub use verdict::{Detector, Finding, GateAction, GateOutcome, GateVerdict, RulesetId, Severity, Span, ThreatSummary};

#[cfg(test)]
mod tests;
