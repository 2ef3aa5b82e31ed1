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

use crate::docs::{DocStore, DocsError};

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
        let query = call.inputs["query"]
            .as_str()
            .ok_or_else(|| StepError::permanent("bad_spec", "the attempt's input has no rendered `query`"))?;
        let owner = self
            .docs
            .workflow_owner(call.workflow)
            .await
            .map_err(|e| StepError::retryable("index_unavailable", e.to_string()))?;
        let hits = self.docs.search(&owner, &step.collection, query, step.top_k as usize).await.map_err(|e| match e {
            DocsError::NotFound { .. } | DocsError::BadName(_) => StepError::permanent("collection_not_found", e.to_string()),
            DocsError::EmptyQuery => StepError::permanent("bad_query", e.to_string()),
            other => StepError::retryable("index_unavailable", other.to_string()),
        })?;
        Ok(StepSuccess::new(json!({ "query": query, "collection": step.collection, "hits": hits }), Money::ZERO))
    }
}
