//! `research` steps: a full-text search over one of the owner's document collections (ingested
//! with `tollgate docs ingest`), run as a job by the `research` handler (`tollgate-connectors`).
//! The query may hold `${{ … }}` templates, resolved into the attempt's input before dispatch;
//! the top hits (source, chunk, score, snippet) are the output, gated like every output.
//!
//! With `ingest` instead of `query`, the step adds documents to the collection (what a workflow
//! that receives documents does: an upload, a batch): a list of `{name, text}` — or a `${{ … }}`
//! template that gives one — each indexed under its name (its format from the name's
//! extension: Markdown, HTML, else plain text). A name already in the collection is replaced.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::validate::problem;

/// The most hits a `research` step may ask for.
pub const MAX_TOP_K: u32 = 50;

/// `research`: search a document collection of the workflow's owner; the output is
/// `{ query, collection, hits: [{ id, source, chunk, score, snippet, text, start, end, page }] }`,
/// best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResearchStep {
    /// The search query (words, `"phrases"`, `+required`, `-excluded`); may hold `${{ … }}` templates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// Instead of a query: documents to add to the collection, `[{name, text}]`, or a
    /// `${{ … }}` template that gives such a list. The output is the ingest's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<Value>,
    /// The collection to search (`tollgate docs ingest --collection NAME`).
    #[serde(default = "default_collection")]
    pub collection: String,
    /// How many hits to return, best first (1..=50).
    #[serde(default = "default_top_k")]
    pub top_k: u32,
}

impl ResearchStep {
    pub const FIELDS: &'static [&'static str] = &["query", "ingest", "collection", "top_k"];
}

/// The collection `tollgate docs ingest` writes to when none is named.
pub const DEFAULT_COLLECTION: &str = "default";

fn default_collection() -> String {
    DEFAULT_COLLECTION.into()
}

fn default_top_k() -> u32 {
    5
}

/// Whether `name` can name a collection: `[A-Za-z0-9_.-]`, 1..=64 characters, not `.`/`..`
/// (collection names are part of store keys, which hold ids only).
pub fn is_collection_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name != "."
        && name != ".."
}

impl StepShape for ResearchStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        match (&self.ingest, self.query.trim().is_empty()) {
            (None, true) => p.push(problem(format!("{at}.query"), "must not be empty (or give `ingest` to add documents instead)")),
            (Some(_), false) => p.push(problem(at, "a `research` step either searches (`query`) or adds documents (`ingest`), not both")),
            (Some(Value::Array(_)), true) => {}
            (Some(Value::String(t)), true) if t.contains("${{") => {}
            (Some(_), true) => p.push(problem(format!("{at}.ingest"), "must be a list of `{name, text}` documents, or a `${{ … }}` template that gives one")),
            (None, false) => {}
        }
        if !is_collection_name(&self.collection) {
            p.push(problem(
                format!("{at}.collection"),
                "must be 1 to 64 characters of letters, digits, `_`, `.`, `-`",
            ));
        }
        if !(1..=MAX_TOP_K).contains(&self.top_k) {
            p.push(problem(format!("{at}.top_k"), format!("must be between 1 and {MAX_TOP_K}")));
        }
    }

    fn templates(&self, at: &str) -> Vec<(String, Value)> {
        let mut out = vec![(format!("{at}.query"), Value::String(self.query.clone()))];
        if let Some(docs) = &self.ingest {
            out.push((format!("{at}.ingest"), docs.clone()));
        }
        out
    }
}
