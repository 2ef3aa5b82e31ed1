//! Rule files: their schema, loading from `config/gates/` (or the copies embedded in the binary),
//! the ruleset hash, compilation into detectors, and the check that every rule's positive
//! examples match and its negative examples do not — a rule that fails refuses to load.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::gates::error::GateError;
use crate::gates::pii::{PiiRule, PiiRules};
use crate::gates::prefilter::{Prefilter, Target};
use crate::gates::regex_rules::{CompiledRegexRule, RegexRule};
use crate::gates::secrets::{Allowlist, SecretRule};
use crate::gates::threat::ThreatRule;
use crate::gates::verdict::{Detector, GateAction, RulesetId, Severity};

/// The rule files shipped in `config/gates/`, embedded so the mesh works without a config dir.
const BUILTIN_FILES: &[(&str, &str)] = &[
    ("allowlist.toml", include_str!("../../../config/gates/allowlist.toml")),
    ("pii.toml", include_str!("../../../config/gates/pii.toml")),
    ("secrets.toml", include_str!("../../../config/gates/secrets.toml")),
    ("threat.toml", include_str!("../../../config/gates/threat.toml")),
];

/// Identity of a rule as findings report it.
#[derive(Clone, Debug)]
pub(crate) struct RuleMeta {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    pub detector: Detector,
    pub message: Option<String>,
    /// A user rule's own action, which the policy does not override.
    pub action: Option<GateAction>,
}

/// Positive and negative examples carried by every rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Examples {
    /// Texts the rule must match.
    pub positive: Vec<String>,
    /// Texts the rule must not match (hard negatives).
    pub negative: Vec<String>,
}

/// One rule file. Every section is optional, so rules can be split across files at will.
#[derive(Deserialize, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RuleFile {
    pub meta: Option<Meta>,
    pub allowlist: Option<AllowlistDef>,
    pub secret: Vec<SecretRuleDef>,
    pub pii: Vec<PiiRuleDef>,
    pub threat: Vec<ThreatRuleDef>,
    pub regex: Vec<RegexRule>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct Meta {
    pub version: String,
}

/// Placeholder values that are never secrets.
#[derive(Deserialize, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AllowlistDef {
    /// Case-insensitive substrings (`example`, `xxxx`, `${`).
    pub substrings: Vec<String>,
    /// Regexes over the whole candidate value.
    pub patterns: Vec<String>,
    pub examples: Examples,
}

fn default_lookbehind() -> usize {
    64
}
fn default_confidence() -> f32 {
    0.9
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretRuleDef {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    /// Prefilter keywords (ASCII case-insensitive); the regex runs only if one occurs.
    pub keywords: Vec<String>,
    pub regex: String,
    /// Entropy floor (bits per byte) of the secret part.
    #[serde(default)]
    pub entropy: Option<f32>,
    /// Generic rules yield to provider rules on overlapping matches.
    #[serde(default)]
    pub generic: bool,
    /// How far before a keyword a match may start; 0 = the match starts at the keyword.
    #[serde(default = "default_lookbehind")]
    pub lookbehind: usize,
    /// How far after a keyword a match may end.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Rule-specific allowlist regexes over the secret part.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Key-name endings (with `-`/`.` read as `_`) whose values are not secrets (`_hash`,
    /// `_id`, `_url`); needs a `key` group in the regex.
    #[serde(default)]
    pub ignore_key_suffixes: Vec<String>,
    /// Extra structural check: `jwt`, `not_code`.
    #[serde(default)]
    pub validate: Option<String>,
    #[serde(default = "default_confidence")]
    pub confidence: f32,
    #[serde(flatten)]
    pub examples: Examples,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct PiiRuleDef {
    pub id: String,
    /// Which built-in recogniser (with its checksum) this rule configures.
    pub kind: String,
    pub category: String,
    pub severity: Severity,
    #[serde(default = "default_confidence")]
    pub confidence: f32,
    /// Words that raise confidence (or are required, see `require_context`).
    #[serde(default)]
    pub context: Vec<String>,
    #[serde(default)]
    pub context_boost: f32,
    #[serde(default)]
    pub require_context: bool,
    /// Bytes around a match in which a context word counts.
    #[serde(default = "default_window")]
    pub window: usize,
    #[serde(flatten)]
    pub examples: Examples,
}

fn default_window() -> usize {
    48
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThreatRuleDef {
    pub id: String,
    /// `pattern` (regex), `markdown_image`, `markdown_link`, `invisible_zero_width`,
    /// `invisible_bidi`, `invisible_tag`, `invisible_selector`, `encoded_payload`.
    #[serde(default = "default_threat_kind")]
    pub kind: String,
    /// Signal weight, 0.0–1.0, combined by noisy-OR into the threat score.
    pub weight: f32,
    pub severity: Severity,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default = "default_lookbehind")]
    pub lookbehind: usize,
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    #[serde(flatten)]
    pub examples: Examples,
}

fn default_max_len() -> usize {
    512
}

fn default_threat_kind() -> String {
    "pattern".into()
}

/// A compiled rule set: every detector's rules plus the shared keyword prefilter.
#[derive(Debug)]
pub(crate) struct Ruleset {
    pub id: RulesetId,
    pub secrets: Arc<Vec<SecretRule>>,
    pub allowlist: Arc<Allowlist>,
    pub pii: Arc<PiiRules>,
    pub threat: Arc<Vec<ThreatRule>>,
    pub regex: Vec<CompiledRegexRule>,
    pub prefilter: Prefilter,
}

/// Reads the embedded rule files.
pub(crate) fn builtin_sources() -> Vec<(String, String)> {
    BUILTIN_FILES.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect()
}

/// Reads every `*.toml` of `dir` except `policy*.toml`, sorted by name.
pub(crate) fn dir_sources(dir: &Path) -> Result<Vec<(String, String)>, GateError> {
    let io = |source| GateError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.ends_with(".toml") || name.starts_with("policy") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| GateError::Io { path: path.clone(), source })?;
        files.push((name, text));
    }
    files.sort();
    Ok(files)
}

/// Parses, compiles and checks a rule set.
pub(crate) fn compile(files: &[(String, String)]) -> Result<Ruleset, GateError> {
    let mut hasher = Sha256::new();
    let mut version = None;
    let mut all = RuleFile::default();
    let mut allow = AllowlistDef::default();
    for (name, text) in files {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        let f: RuleFile =
            toml::from_str(text).map_err(|e| GateError::Parse { file: name.clone(), message: e.to_string() })?;
        if let Some(m) = f.meta {
            version = Some(m.version);
        }
        if let Some(a) = f.allowlist {
            allow.substrings.extend(a.substrings);
            allow.patterns.extend(a.patterns);
            allow.examples.positive.extend(a.examples.positive);
            allow.examples.negative.extend(a.examples.negative);
        }
        all.secret.extend(f.secret);
        all.pii.extend(f.pii);
        all.threat.extend(f.threat);
        all.regex.extend(f.regex);
    }
    let id =
        RulesetId { version: version.unwrap_or_else(|| "unversioned".into()), hash: hex::encode(hasher.finalize()) };

    let mut seen = std::collections::HashSet::new();
    let ids = all.secret.iter().map(|r| &r.id).chain(all.pii.iter().map(|r| &r.id));
    for rid in ids.chain(all.threat.iter().map(|r| &r.id)).chain(all.regex.iter().map(|r| &r.id)) {
        if !seen.insert(rid.clone()) {
            return Err(GateError::DuplicateRule { rule: rid.clone() });
        }
    }

    let allowlist = Allowlist::compile(&allow)?;
    let secrets = all.secret.into_iter().map(SecretRule::compile).collect::<Result<Vec<_>, _>>()?;
    let pii = all.pii.into_iter().map(PiiRule::compile).collect::<Result<Vec<_>, _>>()?;
    let threat = all.threat.into_iter().map(ThreatRule::compile).collect::<Result<Vec<_>, _>>()?;
    let regex = all.regex.into_iter().map(CompiledRegexRule::compile).collect::<Result<Vec<_>, _>>()?;
    let rs =
        assemble(id, Arc::new(secrets), Arc::new(allowlist), Arc::new(PiiRules::new(pii)), Arc::new(threat), regex);
    crate::gates::examples::check_all(&rs)?;
    Ok(rs)
}

/// Builds the prefilter over compiled rules.
pub(crate) fn assemble(
    id: RulesetId,
    secrets: Arc<Vec<SecretRule>>,
    allowlist: Arc<Allowlist>,
    pii: Arc<PiiRules>,
    threat: Arc<Vec<ThreatRule>>,
    regex: Vec<CompiledRegexRule>,
) -> Ruleset {
    let mut pairs = Vec::new();
    for (i, r) in secrets.iter().enumerate() {
        pairs.extend(r.keywords.iter().map(|k| (k.clone(), Target::Secret(i))));
    }
    for (i, r) in threat.iter().enumerate() {
        pairs.extend(r.keywords.iter().map(|k| (k.clone(), Target::Threat(i))));
    }
    for (i, r) in regex.iter().enumerate() {
        pairs.extend(r.keywords.iter().map(|k| (k.clone(), Target::Regex(i))));
    }
    for (i, r) in pii.rules.iter().enumerate().filter(|(_, r)| r.needs_positions()) {
        pairs.extend(r.context.iter().map(|k| (k.clone(), Target::Context(i))));
    }
    let counts = [secrets.len(), threat.len(), regex.len(), pii.rules.len()];
    let prefilter = Prefilter::build(pairs, counts);
    Ruleset { id, secrets, allowlist, pii, threat, regex, prefilter }
}

/// Compiles a regex with bounded program and cache sizes (a rule cannot eat the heap).
pub(crate) fn build_regex(rule: &str, pattern: &str) -> Result<regex::Regex, GateError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(2 << 20)
        .dfa_size_limit(2 << 20)
        .build()
        .map_err(|e| GateError::Regex { rule: rule.to_string(), message: e.to_string() })
}
