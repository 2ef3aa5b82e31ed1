//! `research` steps: a full-text search over one of the owner's document collections (ingested
//! with `tollgate docs ingest`), run as a job by the `research` handler (`tollgate-connectors`).
//! The query may hold `${{ … }}` templates, resolved into the attempt's input before dispatch;
//! the top hits (source, chunk, score, snippet) are the output, gated like every output.

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
    pub query: String,
    /// The collection to search (`tollgate docs ingest --collection NAME`).
    #[serde(default = "default_collection")]
    pub collection: String,
    /// How many hits to return, best first (1..=50).
    #[serde(default = "default_top_k")]
    pub top_k: u32,
}

impl ResearchStep {
    pub const FIELDS: &'static [&'static str] = &["query", "collection", "top_k"];
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
        if self.query.trim().is_empty() {
            p.push(problem(format!("{at}.query"), "must not be empty"));
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
        vec![(format!("{at}.query"), Value::String(self.query.clone()))]
    }
}
