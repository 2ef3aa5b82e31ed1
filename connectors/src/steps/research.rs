//! `research` steps: a full-text search over one of the workflow owner's document collections
//! ([`crate::docs`]). The query comes from the invocation's `query` (the step's `query` with its
//! templates rendered by the engine); collection and `top_k` from the step.
//!
//! Output: `{"query", "collection", "hits": [{"id": "hit-1", "source", "chunk", "score",
//! "snippet", "text", "start", "end", "page"?}]}`, best first (BM25). Matched words are marked
//! `**like this**` in snippets. A collection that does not exist fails the step, or with
//! `if_missing: empty` gives no hits and `"missing": true`.
//!
//! With `summarize`, a model summarises the hits ([`ModelCalls::converse`], as an `llm` step
//! converses): the hits are recorded in the step's turn journal before the first call — so
//! every attempt of the conversation summarises the same hits — and appended to the rendered
//! prompt with their ids. The output adds `summary: {text, citations}` (the ids the text
//! cites, `[hit-2]`) and `usage`; the `citations` check (every cited id is a hit) is evaluated
//! with the step's checks. No hits: no call, an empty summary.
//!
//! Error codes: `collection_not_found` (`Permanent`), `bad_query` (`Permanent`: empty query),
//! `index_unavailable` (`Retryable`: the store or the index could not be read), and those of
//! an `llm` step for a summary.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use tollgate_engine::conversation::TurnEntry;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::llm::Role;
use tollgate_engine::money::Money;
use tollgate_engine::spec::{IfMissing, ResearchStep, ResearchSummary, StepKind, citations, summary_context};
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};

use crate::docs::{DocStore, DocsError, Format, SourceDoc};
use crate::steps::model::{ModelCalls, rendered_prompt};

/// Runs `research` steps against the owners' collections.
pub struct ResearchHandler {
    docs: Arc<DocStore>,
    /// The model providers a `summarize` converses with; without them a summary fails `no_provider`.
    models: Option<Arc<ModelCalls>>,
}

impl ResearchHandler {
    pub fn new(docs: Arc<DocStore>) -> Self {
        Self { docs, models: None }
    }

    /// With the model providers that summarise hits.
    pub fn with_models(mut self, models: Arc<ModelCalls>) -> Self {
        self.models = Some(models);
        self
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
        match &step.summarize {
            None => Ok(StepSuccess::new(self.search(&owner, step, query).await?, Money::ZERO)),
            Some(summary) => self.summarize(&call, &owner, step, summary, query).await,
        }
    }
}

impl ResearchHandler {
    /// `{query, collection, hits}` (and `missing: true` for a collection that does not exist,
    /// with `if_missing: empty`).
    async fn search(&self, owner: &OwnerId, step: &ResearchStep, query: &str) -> Result<Value, StepError> {
        let found = self.docs.search(owner, &step.collection, query, step.top_k as usize).await;
        let hits = match found {
            Ok(hits) => hits,
            Err(DocsError::NotFound { .. }) if step.if_missing == IfMissing::Empty => {
                return Ok(json!({ "query": query, "collection": step.collection, "hits": [], "missing": true }));
            }
            Err(e) => {
                return Err(match e {
                    DocsError::NotFound { .. } | DocsError::BadName(_) => {
                        StepError::permanent("collection_not_found", e.to_string())
                    }
                    DocsError::EmptyQuery => StepError::permanent("bad_query", e.to_string()),
                    other => StepError::retryable("index_unavailable", other.to_string()),
                });
            }
        };
        Ok(json!({ "query": query, "collection": step.collection, "hits": hits }))
    }

    /// Search (or take the hits this conversation recorded), then have the model summarise
    /// them, citing them by id.
    async fn summarize(
        &self,
        call: &StepInvocation<'_>,
        owner: &OwnerId,
        step: &ResearchStep,
        summary: &ResearchSummary,
        query: &str,
    ) -> Result<StepSuccess, StepError> {
        let models = self.models.as_ref().ok_or_else(|| {
            StepError::permanent("no_provider", "this process has no model providers for a research step's `summarize`")
        })?;
        let mut log = models.turns(call).await?;
        // The hits go into the turn journal before the first call: a later attempt (after a
        // crash, a passivation) summarises what this one did, whatever was ingested since.
        let found = match log.conversation.context() {
            Some(found) => found.clone(),
            None => {
                let found = self.search(owner, step, query).await?;
                if log.append(TurnEntry::Context { attempt: call.attempt, value: found.clone() }).await? {
                    found
                } else {
                    // Another attempt recorded its hits first: summarise those.
                    log.conversation.context().cloned().ok_or_else(|| {
                        StepError::retryable("turn_journal", "the step's turn journal changed but holds no hits")
                    })?
                }
            }
        };
        let hits = found["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            let mut output = found;
            output["summary"] = json!({ "text": "", "citations": [] });
            return Ok(StepSuccess::new(output, Money::ZERO));
        }
        let mut prompt = rendered_prompt(call)?;
        let context = summary_context(&hits);
        match prompt.iter_mut().rev().find(|m| m.role == Role::User) {
            Some(last) => last.content.push_str(&context),
            None => prompt.push(tollgate_engine::llm::ChatMessage::new(Role::User, context.trim_start())),
        }
        let shape = move |answer: Value| {
            let text = answer["text"].as_str().unwrap_or_default().to_owned();
            let mut output = found.clone();
            output["summary"] = json!({ "citations": citations(&text), "text": text });
            output
        };
        models.converse(call, &summary.llm(), prompt, &mut log, None, &shape).await
    }

    /// `ingest`: add `[{name, text}]` to the collection (created on first use). Each name is
    /// the document's `source` in hits; a name already there is replaced. A retried attempt
    /// ingests the same documents again, which changes nothing (same content).
    async fn ingest(&self, owner: &OwnerId, collection: &str, docs: &Value) -> Result<StepSuccess, StepError> {
        let bad = |m: String| StepError::permanent("bad_documents", m);
        let list = docs
            .as_array()
            .ok_or_else(|| bad(format!("`ingest` must give a list of {{name, text}} documents, not {docs}")))?;
        let mut sources = Vec::with_capacity(list.len());
        for (i, d) in list.iter().enumerate() {
            let name = d["name"]
                .as_str()
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| bad(format!("document {i} has no `name`")))?;
            let text = d["text"].as_str().ok_or_else(|| {
                bad(format!("document {i} (`{name}`) has no `text` (only text documents can be ingested by a step)"))
            })?;
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
