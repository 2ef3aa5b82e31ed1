//! Gate-policy replay: what a new policy would have done to an output that was recorded under
//! another one — from what the journal holds, never from the original output.
//!
//! The journal holds the gated output (the original where the old policy allowed, with
//! placeholders where it redacted; only the redacted form of a blocked one) and the old
//! verdict's findings (rule, category, confidence — no values). Replay combines two views:
//! the recorded output scanned again under the new policy (what the old policy let through in
//! clear and the new one catches), and the recorded findings re-decided under the new policy
//! (what the old policy redacted or blocked that the new one treats otherwise). Both are exact
//! for a policy that changes actions, thresholds, disabled rules or detectors on text that was
//! let through; a new finding that would have overlapped a span the old policy already
//! replaced cannot be seen, and that text is not kept anywhere to look at.

use serde::Serialize;
use serde_json::Value;

use crate::gates::{Detector, GateAction, GateMesh, GatePolicy, GateVerdict, RedactionMap};

/// What replay found for one recorded output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayedVerdict {
    /// The recorded verdict's action.
    pub recorded: GateAction,
    /// What the new policy would have done.
    pub replayed: GateAction,
    /// Categories whose action changes (sorted, distinct), with the rules behind them.
    pub categories: Vec<String>,
    pub rules: Vec<String>,
    /// `false` when the output itself was not recorded (a block that failed its step): only
    /// the recorded findings were re-decided.
    pub output_rescanned: bool,
}

impl ReplayedVerdict {
    pub fn changed(&self) -> bool {
        self.recorded != self.replayed
    }
}

/// Replay one recorded output (`None` when it was not kept) with its recorded verdict under
/// `policy` (the step's full policy: the new workflow policy with the step's overrides).
pub fn replay(
    mesh: &GateMesh,
    policy: &GatePolicy,
    recorded_output: Option<&Value>,
    recorded: &GateVerdict,
) -> ReplayedVerdict {
    let mut replayed = GateAction::Allow;
    let mut changed: Vec<(String, String)> = Vec::new();
    // The recorded findings, decided again.
    for f in &recorded.findings {
        let threat_hit = recorded.threat.as_ref().is_some_and(|t| t.score >= policy.threat_threshold);
        let action = match (f.detector, mesh.rule_action(&f.rule_id)) {
            // Oversize and time budget: fail closed whatever the policy says.
            (Detector::Mesh, _) => GateAction::Block,
            _ if !policy.rule_enabled(&f.rule_id) || f.confidence < policy.min_confidence => GateAction::Allow,
            // A user rule's own action, which no policy overrides.
            (_, Some(own)) => own,
            (Detector::Threat, None) if threat_hit => policy.threat_action,
            _ => policy.action_for(&f.category),
        };
        if !detector_on(policy, f.detector) {
            continue;
        }
        replayed = replayed.max(action);
        if action != f.action {
            changed.push((f.category.clone(), f.rule_id.clone()));
        }
    }
    // The recorded text, scanned again: what was let through in clear.
    if let Some(output) = recorded_output {
        let (verdict, _) = mesh.scan_json(output, policy, &mut RedactionMap::new());
        for f in &verdict.findings {
            if f.action > GateAction::Allow {
                changed.push((f.category.clone(), f.rule_id.clone()));
            }
        }
        replayed = replayed.max(verdict.action);
    }
    if replayed == recorded.action {
        changed.clear();
    }
    let mut categories: Vec<String> = changed.iter().map(|(c, _)| c.clone()).collect();
    categories.sort();
    categories.dedup();
    let mut rules: Vec<String> = changed.into_iter().map(|(_, r)| r).collect();
    rules.sort();
    rules.dedup();
    ReplayedVerdict {
        recorded: recorded.action,
        replayed,
        categories,
        rules,
        output_rescanned: recorded_output.is_some(),
    }
}

fn detector_on(policy: &GatePolicy, d: Detector) -> bool {
    match d {
        Detector::Regex => policy.detectors.regex,
        Detector::Pii => policy.detectors.pii,
        Detector::Secrets => policy.detectors.secrets,
        Detector::Threat => policy.detectors.threat,
        Detector::Mesh => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gates::RegexRule;

    fn recorded(mesh: &GateMesh, policy: &GatePolicy, output: &Value) -> (GateVerdict, Value) {
        let (verdict, rewritten) = mesh.scan_json(output, policy, &mut RedactionMap::new());
        let kept = if verdict.action == GateAction::Allow { output.clone() } else { rewritten.unwrap() };
        (verdict, kept)
    }

    #[test]
    fn tightening_finds_what_was_let_through_and_loosening_what_was_replaced() {
        let mesh = GateMesh::builtin();
        let old = GatePolicy::from_toml("[actions]\nemail = \"allow\"\n").unwrap();
        let (verdict, kept) =
            recorded(&mesh, &old, &json!({"note": "mail jane@corp.example.org, card 4111 1111 1111 1111"}));
        assert_eq!(verdict.action, GateAction::Redact);
        // Same policy: nothing changes.
        assert!(!replay(&mesh, &old, Some(&kept), &verdict).changed());
        // Stricter on addresses: the address, in clear in the recorded output, is what changes.
        let strict = GatePolicy::from_toml("[actions]\nemail = \"block\"\n").unwrap();
        let r = replay(&mesh, &strict, Some(&kept), &verdict);
        assert_eq!(
            (r.recorded, r.replayed, r.categories.as_slice()),
            (GateAction::Redact, GateAction::Block, ["email".to_string()].as_slice())
        );
        // Looser on cards: only the recorded finding says a card was there.
        let loose = GatePolicy::from_toml("[actions]\nemail = \"allow\"\ncard = \"allow\"\n").unwrap();
        let r = replay(&mesh, &loose, Some(&kept), &verdict);
        assert_eq!((r.replayed, r.rules.as_slice()), (GateAction::Allow, ["pii.card".to_string()].as_slice()));
        // A rule switched off counts as not found.
        let mut off = old.clone();
        off.disabled_rules.push("pii.card".into());
        assert_eq!(replay(&mesh, &off, Some(&kept), &verdict).replayed, GateAction::Allow);
    }

    #[test]
    fn a_user_rule_keeps_its_own_action_whatever_the_policy() {
        let rule: RegexRule = serde_json::from_value(json!({
            "id": "codename", "category": "codename", "action": "block", "pattern": "\\bPROJECT-[A-Z]{4}\\b",
            "positive": ["launch PROJECT-LYNX"], "negative": ["project lynx"]
        }))
        .unwrap();
        let mesh = GateMesh::builtin().with_extra_rules(vec![rule]).unwrap();
        let (verdict, kept) = recorded(&mesh, &GatePolicy::default(), &json!("launch PROJECT-LYNX"));
        assert_eq!(verdict.action, GateAction::Block);
        let lenient = GatePolicy::from_toml("default_action = \"allow\"\n[actions]\ncodename = \"allow\"\n").unwrap();
        let r = replay(&mesh, &lenient, Some(&kept), &verdict);
        assert_eq!(r.replayed, GateAction::Block, "{r:?}");
        assert!(!r.changed());
    }
}
