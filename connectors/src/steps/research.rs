//! `research` steps: a full-text search over one of the workflow owner's document collections
//! ([`crate::docs`]). The query comes from the invocation's `query` (the step's `query` with its
//! templates rendered by the engine); collection and `top_k` from the step.
//!
//! Output: `{"query", "collection", "hits": [{"id": "hit-1", "source", "chunk", "score",
//! "snippet", "text", "start", "end", "page"?}]}`, best first (BM25). Matched words are marked
//! `**like this**` in snippets.
//!
//! Error codes: `collection_not_found` (`Permanent`), `bad_query` (`Permanent`: empty query),
//! `index_unavailable` (`Retryable`: the store or the index could not be read).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use tollgate_engine::money::Money;
use tollgate_engine::spec::StepKind;
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};

use crate::docs::{DocStore, DocsError, Format, SourceDoc};

/// Runs `research` steps against the owners' collections.
pub struct ResearchHandler {
    docs: Arc<DocStore>,
}

impl ResearchHandler {
    pub fn new(docs: Arc<DocStore>) -> Self {
        Self { docs }
    }
}

#[async_trait]
impl StepHandler for ResearchHandler {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError> {
        let StepKind::Research(step) = &call.step.kind else {
            return Err(StepError::permanent("bad_spec", "not a research step"));
        };
        let owner = self
            .docs
            .workflow_owner(call.workflow)
            .await
            .map_err(|e| StepError::retryable("index_unavailable", e.to_string()))?;
        if let Some(docs) = call.inputs.get("ingest") {
            return self.ingest(&owner, &step.collection, docs).await;
        }
        let query = call.inputs["query"]
            .as_str()
            .ok_or_else(|| StepError::permanent("bad_spec", "the attempt's input has no rendered `query`"))?;
        let hits = self.docs.search(&owner, &step.collection, query, step.top_k as usize).await.map_err(|e| match e {
            DocsError::NotFound { .. } | DocsError::BadName(_) => StepError::permanent("collection_not_found", e.to_string()),
            DocsError::EmptyQuery => StepError::permanent("bad_query", e.to_string()),
            other => StepError::retryable("index_unavailable", other.to_string()),
        })?;
        Ok(StepSuccess::new(json!({ "query": query, "collection": step.collection, "hits": hits }), Money::ZERO))
    }
}

impl ResearchHandler {
    /// `ingest`: add `[{name, text}]` to the collection (created on first use). Each name is
    /// the document's `source` in hits; a name already there is replaced. A retried attempt
    /// ingests the same documents again, which changes nothing (same content).
    async fn ingest(&self, owner: &tollgate_engine::ids::OwnerId, collection: &str, docs: &serde_json::Value) -> Result<StepSuccess, StepError> {
        let bad = |m: String| StepError::permanent("bad_documents", m);
        let list = docs.as_array().ok_or_else(|| bad(format!("`ingest` must give a list of {{name, text}} documents, not {docs}")))?;
        let mut sources = Vec::with_capacity(list.len());
        for (i, d) in list.iter().enumerate() {
            let name = d["name"].as_str().filter(|n| !n.trim().is_empty()).ok_or_else(|| bad(format!("document {i} has no `name`")))?;
            let text = d["text"].as_str().ok_or_else(|| bad(format!("document {i} (`{name}`) has no `text` (only text documents can be ingested by a step)")))?;
            let format = match Format::from_path(std::path::Path::new(name)) {
                Some(f @ (Format::Markdown | Format::Html)) => f,
                _ => Format::Text,
            };
            sources.push(SourceDoc { source: name.to_string(), format, bytes: text.as_bytes().to_vec() });
        }
        let report = self.docs.ingest(owner, collection, sources).await.map_err(|e| match e {
            DocsError::BadName(_) => StepError::permanent("collection_not_found", e.to_string()),
            DocsError::Unreadable { .. } => StepError::permanent("bad_documents", e.to_string()),
            other => StepError::retryable("index_unavailable", other.to_string()),
        })?;
        Ok(StepSuccess::new(json!(report), Money::ZERO))
    }
}
