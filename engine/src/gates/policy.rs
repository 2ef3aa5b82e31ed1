//! Gate policy: which detectors run, what each category's findings do, thresholds and the
//! fail-closed limits. A workflow embeds it as its `gates:` section and a step may override parts
//! of it with [`GatePolicyOverride`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gates::error::GateError;
use crate::gates::verdict::GateAction;

/// Which detectors of the mesh run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSet {
    /// User-defined regex rules of the workflow.
    pub regex: bool,
    /// Personal data detectors.
    pub pii: bool,
    /// Credential scanner.
    pub secrets: bool,
    /// Prompt-injection / exfiltration classifier.
    pub threat: bool,
}

impl Default for DetectorSet {
    fn default() -> Self {
        DetectorSet { regex: true, pii: true, secrets: true, threat: true }
    }
}

/// A workflow's gate policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatePolicy {
    /// Detectors that run.
    pub detectors: DetectorSet,
    /// Action per finding category (`email`, `card`, `secret`, ... or a user rule's category).
    pub actions: BTreeMap<String, GateAction>,
    /// Action for a category missing from `actions` (user rules without their own action).
    pub default_action: GateAction,
    /// Threat score (0.0–1.0) at or above which `threat_action` applies.
    pub threat_threshold: f32,
    /// Action when the threat score reaches the threshold; below it threat findings only record.
    pub threat_action: GateAction,
    /// Findings whose confidence is below this are dropped.
    pub min_confidence: f32,
    /// Larger input is blocked without scanning (fail closed). For JSON: total bytes of strings.
    pub max_input_bytes: usize,
    /// Wall-clock budget for one scan in milliseconds; exceeding it blocks (fail closed).
    pub time_budget_ms: u64,
    /// Regions (ISO 3166 alpha-2) whose national phone formats are recognised.
    pub phone_regions: Vec<String>,
    /// Hosts a markdown image or link may point to without counting as exfiltration.
    /// A leading `.` matches subdomains (`.example.com`).
    pub allowed_hosts: Vec<String>,
    /// Rule ids switched off for this workflow.
    pub disabled_rules: Vec<String>,
}

impl Default for GatePolicy {
    fn default() -> Self {
        use GateAction::*;
        let actions = [
            ("secret", Redact),
            ("card", Redact),
            ("iban", Redact),
            ("ssn", Redact),
            ("national_id", Redact),
            ("email", Redact),
            ("phone", Redact),
            ("dob", Redact),
            ("address", Redact),
            ("ip", Allow),
            ("threat", Allow),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        GatePolicy {
            detectors: DetectorSet::default(),
            actions,
            default_action: Redact,
            threat_threshold: 0.7,
            threat_action: Block,
            min_confidence: 0.5,
            max_input_bytes: 4 * 1024 * 1024,
            time_budget_ms: 2_000,
            phone_regions: vec!["US".into(), "GB".into(), "DE".into(), "FR".into()],
            allowed_hosts: Vec::new(),
            disabled_rules: Vec::new(),
        }
    }
}

impl GatePolicy {
    /// Parses a policy from TOML (missing fields take the safe defaults).
    pub fn from_toml(text: &str) -> Result<Self, GateError> {
        let p: GatePolicy = toml::from_str(text).map_err(|e| GateError::Policy(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Parses a policy from YAML (the workflow spec's `gates:` section).
    pub fn from_yaml(text: &str) -> Result<Self, GateError> {
        let p: GatePolicy = serde_yaml_ng::from_str(text).map_err(|e| GateError::Policy(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Checks ranges and region codes.
    pub fn validate(&self) -> Result<(), GateError> {
        if !(0.0..=1.0).contains(&self.threat_threshold) {
            return Err(GateError::Policy("threat_threshold must be within 0.0..=1.0".into()));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(GateError::Policy("min_confidence must be within 0.0..=1.0".into()));
        }
        for r in &self.phone_regions {
            if r.parse::<phonenumber::country::Id>().is_err() {
                return Err(GateError::Policy(format!("unknown phone region {r:?}")));
            }
        }
        Ok(())
    }

    /// Action for findings of `category` (threat categories are decided by the score instead).
    pub fn action_for(&self, category: &str) -> GateAction {
        self.actions.get(category).copied().unwrap_or(self.default_action)
    }

    pub(crate) fn rule_enabled(&self, rule_id: &str) -> bool {
        !self.disabled_rules.iter().any(|r| r == rule_id)
    }

    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('.') {
                Some(suffix) => host == suffix || host.ends_with(&h),
                None => host == h,
            }
        })
    }

    /// This policy with a step's overrides applied.
    pub fn with_override(&self, o: &GatePolicyOverride) -> GatePolicy {
        let mut p = self.clone();
        if let Some(d) = o.detectors {
            p.detectors = d;
        }
        for (k, v) in &o.actions {
            p.actions.insert(k.clone(), *v);
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { p.$f = v.clone(); } )* };
        }
        set!(
            default_action,
            threat_threshold,
            threat_action,
            min_confidence,
            max_input_bytes,
            time_budget_ms,
            phone_regions,
            allowed_hosts,
            disabled_rules
        );
        p
    }
}

/// A step's partial override of the workflow policy; absent fields keep the workflow's value,
/// `actions` entries are merged over the workflow's map.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatePolicyOverride {
    pub detectors: Option<DetectorSet>,
    pub actions: BTreeMap<String, GateAction>,
    pub default_action: Option<GateAction>,
    pub threat_threshold: Option<f32>,
    pub threat_action: Option<GateAction>,
    pub min_confidence: Option<f32>,
    pub max_input_bytes: Option<usize>,
    pub time_budget_ms: Option<u64>,
    pub phone_regions: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub disabled_rules: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_policy_file_equals_the_builtin_default() {
        let text = include_str!("../../../config/gates/policy.default.toml");
        assert_eq!(GatePolicy::from_toml(text).unwrap(), GatePolicy::default());
    }

    #[test]
    fn partial_yaml_and_json_take_defaults_and_reject_typos() {
        let p = GatePolicy::from_yaml("actions: {email: allow}\nthreat_threshold: 0.5\n").unwrap();
        assert_eq!(p.action_for("email"), GateAction::Allow);
        assert_eq!(p.action_for("secret"), GateAction::Redact);
        assert_eq!(p.threat_threshold, 0.5);
        let j: GatePolicy = serde_json::from_str(r#"{"max_input_bytes": 10}"#).unwrap();
        assert_eq!(j.max_input_bytes, 10);
        let err = GatePolicy::from_yaml("threat_treshold: 0.5\n").unwrap_err();
        assert!(err.to_string().contains("threat_treshold"), "{err}");
        let err = GatePolicy::from_toml("phone_regions = [\"XX\"]").unwrap_err();
        assert!(err.to_string().contains("XX"), "{err}");
    }

    #[test]
    fn step_override_merges_actions_and_replaces_scalars() {
        let o: GatePolicyOverride = serde_yaml_ng::from_str("actions: {secret: block}\ntime_budget_ms: 5\n").unwrap();
        let p = GatePolicy::default().with_override(&o);
        assert_eq!(p.action_for("secret"), GateAction::Block);
        assert_eq!(p.action_for("card"), GateAction::Redact);
        assert_eq!(p.time_budget_ms, 5);
    }

    #[test]
    fn allowed_hosts_match_exactly_or_by_dot_suffix() {
        let p = GatePolicy { allowed_hosts: vec!["docs.rs".into(), ".example.com".into()], ..GatePolicy::default() };
        assert!(p.host_allowed("docs.rs"));
        assert!(p.host_allowed("cdn.example.com"));
        assert!(p.host_allowed("example.com"));
        assert!(!p.host_allowed("evil-example.com"));
        assert!(!p.host_allowed("attacker.io"));
    }
}
