//! Evaluation on a labelled corpus: precision and recall per category.
//!
//! The corpus is a directory of JSONL files; each line is a [`Sample`]: a text and the values it
//! contains per category (`{"category": "email", "value": "a@b.io"}`). A value is located by
//! substring search, so hand-written samples need no byte offsets. A label without a value is a
//! document-level label, used for `threat` (the verdict's threat score must reach the policy
//! threshold). A finding counts as a true positive when it overlaps a labelled span of its
//! category; a labelled span is recalled when some finding of its category overlaps it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::gates::error::GateError;
use crate::gates::{GateMesh, GatePolicy, RedactionMap, Span};

/// One labelled text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub id: String,
    pub text: String,
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Where the sample comes from (hand-written, generated from a public format, …).
    #[serde(default)]
    pub source: String,
}

/// What a sample contains.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub category: String,
    /// The exact substring; absent for document-level labels.
    #[serde(default)]
    pub value: Option<String>,
}

/// Scores of one category.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CategoryScore {
    pub category: String,
    /// Labelled items.
    pub labelled: usize,
    /// Labelled items that were found.
    pub recalled: usize,
    /// Findings (spans, or documents for document-level categories).
    pub predicted: usize,
    /// Findings that match a label.
    pub correct: usize,
    pub precision: f64,
    pub recall: f64,
}

/// Result of an evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub samples: usize,
    pub categories: Vec<CategoryScore>,
    /// One line per miss or false alarm, to debug rules.
    pub mistakes: Vec<String>,
}

/// Loads every `*.jsonl` file of `dir` (sorted by name).
pub fn load_corpus(dir: &Path) -> Result<Vec<Sample>, GateError> {
    let io = |source| GateError::Io { path: dir.to_path_buf(), source };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let text = std::fs::read_to_string(&path).map_err(|source| GateError::Io { path: path.clone(), source })?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let s: Sample = serde_json::from_str(line).map_err(|e| GateError::Parse {
                file: format!("{}:{}", path.display(), n + 1),
                message: e.to_string(),
            })?;
            for l in &s.labels {
                if let Some(v) = &l.value
                    && !s.text.contains(v.as_str())
                {
                    return Err(GateError::Parse {
                        file: format!("{}:{}", path.display(), n + 1),
                        message: format!("label value of {} not in text", l.category),
                    });
                }
            }
            out.push(s);
        }
    }
    Ok(out)
}

fn spans_of(text: &str, value: &str) -> Vec<Span> {
    text.match_indices(value).map(|(i, v)| Span::new(i, i + v.len())).collect()
}

#[derive(Default)]
struct Tally {
    labelled: usize,
    recalled: usize,
    predicted: usize,
    correct: usize,
}

/// Scans every sample with `policy` and scores each category.
pub fn evaluate(mesh: &GateMesh, samples: &[Sample], policy: &GatePolicy) -> EvalReport {
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut mistakes = Vec::new();
    for s in samples {
        let mut map = RedactionMap::with_key([0; 32]);
        let out = mesh.scan_text(&s.text, policy, &mut map);
        let v = &out.verdict;
        let doc_cats: Vec<&str> = s.labels.iter().filter(|l| l.value.is_none()).map(|l| l.category.as_str()).collect();
        // Document-level: threat.
        let threat_hit = v.threat.as_ref().is_some_and(|t| t.score >= policy.threat_threshold);
        let t = tally.entry("threat".into()).or_default();
        let labelled = doc_cats.contains(&"threat");
        t.labelled += labelled as usize;
        t.predicted += threat_hit as usize;
        t.correct += (labelled && threat_hit) as usize;
        t.recalled += (labelled && threat_hit) as usize;
        if labelled != threat_hit {
            let signals = v.threat.as_ref().map(|t| format!("{:.2} {:?}", t.score, t.signals)).unwrap_or_default();
            mistakes.push(format!("{} threat: labelled={labelled} predicted={threat_hit} {signals}", s.id));
        }
        // Span-level: everything else.
        let mut labels: Vec<(&str, Span, &str)> = Vec::new();
        for l in &s.labels {
            if let Some(val) = &l.value {
                labels.extend(spans_of(&s.text, val).into_iter().map(|sp| (l.category.as_str(), sp, val.as_str())));
            }
        }
        let preds: Vec<_> = v.findings.iter().filter(|f| f.category != "threat" && f.category != "mesh").collect();
        for (cat, span, val) in &labels {
            let t = tally.entry(cat.to_string()).or_default();
            t.labelled += 1;
            if preds.iter().any(|f| f.category == *cat && f.span.overlaps(span)) {
                t.recalled += 1;
            } else {
                mistakes.push(format!("{} missed {cat}: {val:?}", s.id));
            }
        }
        for f in &preds {
            let t = tally.entry(f.category.clone()).or_default();
            t.predicted += 1;
            if labels.iter().any(|(c, sp, _)| *c == f.category && f.span.overlaps(sp)) {
                t.correct += 1;
            } else {
                let text = &s.text[f.span.start..f.span.end];
                mistakes.push(format!("{} false {} ({}): {text:?}", s.id, f.category, f.rule_id));
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let categories = tally
        .into_iter()
        .filter(|(_, t)| t.labelled + t.predicted > 0)
        .map(|(category, t)| CategoryScore {
            category,
            labelled: t.labelled,
            recalled: t.recalled,
            predicted: t.predicted,
            correct: t.correct,
            precision: ratio(t.correct, t.predicted),
            recall: ratio(t.recalled, t.labelled),
        })
        .collect();
    EvalReport { samples: samples.len(), categories, mistakes }
}

impl EvalReport {
    /// A fixed-width table: category, labelled, predicted, precision, recall.
    pub fn table(&self) -> String {
        let mut s =
            format!("{:<12} {:>8} {:>9} {:>9} {:>7}\n", "category", "labelled", "predicted", "precision", "recall");
        for c in &self.categories {
            let _ = writeln!(
                s,
                "{:<12} {:>8} {:>9} {:>9.3} {:>7.3}",
                c.category, c.labelled, c.predicted, c.precision, c.recall
            );
        }
        let _ = writeln!(s, "{} samples", self.samples);
        s
    }

    pub fn category(&self, name: &str) -> Option<&CategoryScore> {
        self.categories.iter().find(|c| c.category == name)
    }
}
