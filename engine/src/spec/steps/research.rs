//! `research` steps: a full-text search over one of the owner's document collections (ingested
//! with `tollgate docs ingest`), run as a job by the `research` handler (`tollgate-connectors`).
//! The query may hold `${{ … }}` templates, resolved into the attempt's input before dispatch;
//! the top hits (source, chunk, score, snippet) are the output, gated like every output.
//!
//! With `summarize`, a model then summarises the hits, citing them by id (`[hit-2]`): the
//! same conversation machinery as an `llm` step (provider, prompt gate, turn journal, usage,
//! reservation), its prompt rendered by the run like an `llm` step's, and the hits appended to
//! it by the handler ([`summary_context`], whose size is bounded so the reservation covers it).
//! Whether every id the summary cites is one of the hits is a deterministic check
//! ([`citation_check`]), evaluated and recorded with the step's `checks`.
//!
//! With `ingest` instead of `query`, the step adds documents to the collection (what a workflow
//! that receives documents does: an upload, a batch): a list of `{name, text}` — or a `${{ … }}`
//! template that gives one — each indexed under its name (its format from the name's
//! extension: Markdown, HTML, else plain text). A name already in the collection is replaced.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checks::CheckResult;
use crate::conversation::bounded;
use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::steps::llm::{LlmStep, OnInjection};
use crate::spec::validate::problem;

/// The most hits a `research` step may ask for.
pub const MAX_TOP_K: u32 = 50;

/// `research`: search a document collection of the workflow's owner; the output is
/// `{ query, collection, hits: [{ id, source, chunk, score, snippet, text, start, end, page }] }`,
/// best first, plus `summary: { text, citations }` and `usage` with `summarize`.
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
    /// A collection nobody has ingested into yet: `fail` (default: the step fails
    /// `collection_not_found`) or `empty` (no hits, and the output says `missing: true`).
    #[serde(default, skip_serializing_if = "is_fail")]
    pub if_missing: IfMissing,
    /// Have a model summarise the hits, citing them by id; the output adds
    /// `summary: {text, citations}` and `usage`. No hits, no call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summarize: Option<ResearchSummary>,
}

/// What a search of a collection that does not exist gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IfMissing {
    #[default]
    Fail,
    Empty,
}

fn is_fail(m: &IfMissing) -> bool {
    *m == IfMissing::Fail
}

/// `summarize:` — the model that summarises a `research` step's hits, and how it is asked. The
/// fields mean what they mean on an `llm` step; `system` and `prompt` are minijinja templates
/// over `params`, `steps`, `inputs` and `query` (the rendered query). The hits follow the
/// prompt, each under its id, with the instruction to cite them as `[hit-1]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResearchSummary {
    /// A provider named in the configuration; default `llm.default_provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model; default the provider's `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// System prompt template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// What to summarise the hits for (a template); the hits are appended to it.
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The longest summary, in tokens (also what the reservation assumes); default the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// What a prompt injection found in the prompt or in the hits does, as on an `llm` step.
    #[serde(default, skip_serializing_if = "is_block")]
    pub on_injection: OnInjection,
}

fn is_block(o: &OnInjection) -> bool {
    *o == OnInjection::Block
}

impl ResearchSummary {
    /// The summary's model conversation as an `llm` step (no tools, no schema): what the run
    /// renders, quotes and reserves, and what the handler converses with.
    pub fn llm(&self) -> LlmStep {
        LlmStep {
            provider: self.provider.clone(),
            model: self.model.clone(),
            system: self.system.clone(),
            prompt: Some(self.prompt.clone()),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            on_injection: self.on_injection,
            ..LlmStep::default()
        }
    }
}

impl ResearchStep {
    pub const FIELDS: &'static [&'static str] = &["query", "ingest", "collection", "top_k", "if_missing", "summarize"];

    /// The most bytes [`summary_context`] adds to the prompt for this step's hits.
    pub fn summary_context_bound(&self) -> u64 {
        (CONTEXT_HEAD.len() + CONTEXT_TAIL.len()) as u64 + u64::from(self.top_k) * HIT_CONTEXT_BOUND
    }
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
            (None, true) => {
                p.push(problem(format!("{at}.query"), "must not be empty (or give `ingest` to add documents instead)"))
            }
            (Some(_), false) => p.push(problem(
                at,
                "a `research` step either searches (`query`) or adds documents (`ingest`), not both",
            )),
            (Some(Value::Array(_)), true) => {}
            (Some(Value::String(t)), true) if t.contains("${{") => {}
            (Some(_), true) => p.push(problem(
                format!("{at}.ingest"),
                "must be a list of `{name, text}` documents, or a `${{ … }}` template that gives one",
            )),
            (None, false) => {}
        }
        if !is_collection_name(&self.collection) {
            p.push(problem(format!("{at}.collection"), "must be 1 to 64 characters of letters, digits, `_`, `.`, `-`"));
        }
        if !(1..=MAX_TOP_K).contains(&self.top_k) {
            p.push(problem(format!("{at}.top_k"), format!("must be between 1 and {MAX_TOP_K}")));
        }
        if let Some(summary) = &self.summarize {
            if self.ingest.is_some() {
                p.push(problem(
                    format!("{at}.summarize"),
                    "summarises the hits of a search: it needs `query`, not `ingest`",
                ));
            }
            if summary.prompt.trim().is_empty() {
                p.push(problem(
                    format!("{at}.summarize.prompt"),
                    "must not be empty: say what the hits are summarised for",
                ));
            }
            summary.llm().check(&format!("{at}.summarize"), p);
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

/// The longest hit id, source and text [`summary_context`] shows (longer ones are cut).
const MAX_HIT_ID: usize = 16;
const MAX_HIT_SOURCE: usize = 256;
const MAX_HIT_TEXT: usize = 2048;
/// The most bytes one hit adds to the summary's prompt: its id, source, page and text, and
/// the frame around them.
const HIT_CONTEXT_BOUND: u64 = (MAX_HIT_ID + MAX_HIT_SOURCE + MAX_HIT_TEXT + 64) as u64;
const CONTEXT_HEAD: &str = "\n\nSearch results, best first. Each starts with its id in square brackets:\n";
const CONTEXT_TAIL: &str = "\nAnswer with the summary only. Cite every result you use by its id in square brackets, \
like [hit-1], right after what it supports. Cite only the ids above.";

/// What the handler appends to a summary's rendered prompt: the hits (`[{id, source, page?,
/// text}]`), each under its id, and how to cite them. At most
/// [`ResearchStep::summary_context_bound`] bytes for `top_k` hits.
pub fn summary_context(hits: &[Value]) -> String {
    let mut out = String::from(CONTEXT_HEAD);
    for hit in hits {
        let field = |k: &str, max: usize| bounded(hit[k].as_str().unwrap_or_default().to_owned(), max);
        let page = hit["page"].as_u64().map(|p| format!(" (page {p})")).unwrap_or_default();
        out.push_str(&format!(
            "\n[{}] {}{page}\n{}\n",
            field("id", MAX_HIT_ID),
            field("source", MAX_HIT_SOURCE),
            field("text", MAX_HIT_TEXT)
        ));
    }
    out.push_str(CONTEXT_TAIL);
    out
}

/// What a summary cites, in order, each once: every `[…]` group's comma- or
/// semicolon-separated parts that start with `hit` (`[hit-2]`, `[hit-1, hit-3]`), as written —
/// an id that is not one of the hits included, so that the check can name it.
pub fn citations(text: &str) -> Vec<String> {
    static GROUP: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let group = GROUP.get_or_init(|| Regex::new(r"\[([^\[\]\n]{1,200})\]").expect("the citation pattern compiles"));
    let mut out: Vec<String> = Vec::new();
    for m in group.captures_iter(text) {
        for part in m[1].split([',', ';']) {
            let part = part.trim();
            if part.len() >= 3 && part[..3].eq_ignore_ascii_case("hit") && !out.iter().any(|c| c == part) {
                out.push(part.to_owned());
            }
        }
    }
    out
}

/// The check every summarised `research` output must pass, named `citations`: when there are
/// hits, the summary cites at least one, and only ids of the hits returned. Evaluated with
/// the step's `checks` (and, like them, sent back to the model once with `on_block: retry`).
pub fn citation_check(output: &Value) -> CheckResult {
    let ids: Vec<&str> = output["hits"].as_array().into_iter().flatten().filter_map(|h| h["id"].as_str()).collect();
    let mut evidence = Vec::new();
    if !ids.is_empty() {
        match output.pointer("/summary/text").and_then(Value::as_str) {
            None => evidence.push("there are hits but no summary text".to_owned()),
            Some(text) => {
                let cited = citations(text);
                if cited.is_empty() {
                    evidence.push(format!(
                        "the summary cites none of the hits ({}); cite each one used as [hit-1]",
                        ids.join(", ")
                    ));
                }
                for c in cited.iter().filter(|c| !ids.contains(&c.as_str())) {
                    evidence.push(format!(
                        "the summary cites [{c}], which is not one of the hits returned ({})",
                        ids.join(", ")
                    ));
                }
            }
        }
    }
    CheckResult { name: CITATIONS_CHECK.into(), passed: evidence.is_empty(), evidence }
}

/// The name a summary's citation check has among the step's check results.
pub const CITATIONS_CHECK: &str = "citations";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hits(ids: &[&str]) -> Value {
        json!(ids.iter().map(|id| json!({"id": id, "source": "a.md", "text": "t"})).collect::<Vec<_>>())
    }

    #[test]
    fn citations_are_read_from_square_brackets_in_order_each_once() {
        assert_eq!(
            citations("Fees were fixed [hit-2]; liability capped [hit-1, hit-2]. See [note] and [Hit 3]."),
            ["hit-2", "hit-1", "Hit 3"]
        );
        assert!(citations("No citation here, [a link](http://x) neither.").is_empty());
    }

    #[test]
    fn the_citation_check_names_an_invented_id_and_a_summary_citing_nothing() {
        let ok = json!({"hits": hits(&["hit-1", "hit-2"]), "summary": {"text": "Capped at the fee [hit-2]."}});
        assert!(citation_check(&ok).passed);
        let invented =
            json!({"hits": hits(&["hit-1", "hit-2"]), "summary": {"text": "Capped [hit-2], fixed fee [hit-7]."}});
        let r = citation_check(&invented);
        assert!(!r.passed);
        assert_eq!(r.name, "citations");
        assert_eq!(r.evidence, ["the summary cites [hit-7], which is not one of the hits returned (hit-1, hit-2)"]);
        let uncited = json!({"hits": hits(&["hit-1"]), "summary": {"text": "Capped at the fee."}});
        assert!(
            citation_check(&uncited).evidence[0].contains("cites none of the hits"),
            "{:?}",
            citation_check(&uncited)
        );
        // No hits: nothing to cite, no summary needed.
        assert!(citation_check(&json!({"hits": [], "summary": {"text": "", "citations": []}})).passed);
    }

    #[test]
    fn the_context_holds_every_hit_under_its_id_within_its_bound() {
        let step = ResearchStep {
            query: "q".into(),
            ingest: None,
            collection: "c".into(),
            top_k: 3,
            if_missing: IfMissing::Fail,
            summarize: None,
        };
        let long = |n: usize| "é".repeat(n);
        let big: Vec<Value> = (1..=3)
            .map(|i| json!({"id": format!("hit-{i}"), "source": long(400), "page": u32::MAX, "text": long(5000)}))
            .collect();
        let context = summary_context(&big);
        assert!(
            context.len() as u64 <= step.summary_context_bound(),
            "{} > {}",
            context.len(),
            step.summary_context_bound()
        );
        let small =
            summary_context(&[json!({"id": "hit-1", "source": "fees.md", "page": 2, "text": "A fixed fee of 8 %."})]);
        assert!(small.contains("\n[hit-1] fees.md (page 2)\nA fixed fee of 8 %.\n"), "{small}");
        assert!(small.contains("like [hit-1]"), "{small}");
    }

    #[test]
    fn a_summary_needs_a_query_and_a_prompt_whose_template_parses() {
        let step: ResearchStep =
            serde_json::from_value(json!({"ingest": [], "summarize": {"prompt": "{% if %}"}})).unwrap();
        let mut p = Vec::new();
        step.check("steps[0] (find)", &mut p);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains("steps[0] (find).summarize") && t.contains("needs `query`")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("steps[0] (find).summarize.prompt") && t.contains("does not parse")),
            "{text:?}"
        );
    }
}
