//! Listing runs a page at a time: each run's metadata and summary record in one batched read
//! ([`Backend::get_many`]), newest first, with a cursor for the next page. No journal is read.

use serde::de::DeserializeOwned;

use crate::ids::{RunId, WorkflowId};
use crate::store::{Backend, RunMeta, RunSummary, Store, StoreError, keys};

/// One run in a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct RunListing {
    pub meta: RunMeta,
    /// `None` until the run's driver has started it.
    pub summary: Option<RunSummary>,
}

/// A page of runs, newest first, and the cursor of the next page (the last run shown) when
/// there are more.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunListing>,
    pub next: Option<RunId>,
}

impl Store {
    /// Record a run's summary (sealed with its workflow's key), replacing the previous one.
    pub async fn put_run_summary(&self, wf: &WorkflowId, run: &RunId, summary: &RunSummary) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::run_summary(run);
        let plain = serde_json::to_vec(summary).expect("summaries serialise");
        self.backend().put(&key, &k.seal(key.as_bytes(), &plain), None).await
    }

    /// A run's summary (`None` until its driver has started it): what a listing shows, and how
    /// a waiter learns cheaply whether a run is still at work (no journal is read).
    pub async fn run_summary(&self, wf: &WorkflowId, run: &RunId) -> Result<Option<RunSummary>, StoreError> {
        let key = keys::run_summary(run);
        match self.backend().get(&key).await? {
            Some(sealed) => Ok(Some(self.open_record(wf, &key, &sealed).await?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` runs created before `after` (from the newest when `None`), newest first.
    pub async fn run_page(&self, after: Option<&RunId>, limit: usize) -> Result<RunPage, StoreError> {
        let backend: &dyn Backend = self.backend().as_ref();
        let mut ids = backend.index_page_desc(keys::RUNS, after.map(RunId::as_str), limit.saturating_add(1)).await?;
        let more = ids.len() > limit;
        ids.truncate(limit);
        let record_keys: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                let run = RunId::new(id.as_str());
                [keys::run_workflow(&run), keys::run_meta(&run), keys::run_summary(&run)]
            })
            .collect();
        let values = backend.get_many(&record_keys).await?;
        let mut runs = Vec::with_capacity(ids.len());
        for (chunk, value) in record_keys.chunks(3).zip(values.chunks(3)) {
            // A run whose records are not all written yet (being created) is left out.
            let (Some(wf), Some(meta)) = (&value[0], &value[1]) else { continue };
            let wf = WorkflowId(
                String::from_utf8(wf.clone())
                    .map_err(|e| StoreError::Corrupt { key: chunk[0].clone(), reason: e.to_string() })?,
            );
            let meta: RunMeta = self.open_record(&wf, &chunk[1], meta).await?;
            let summary = match &value[2] {
                Some(sealed) => Some(self.open_record(&wf, &chunk[2], sealed).await?),
                None => None,
            };
            runs.push(RunListing { meta, summary });
        }
        let next = if more { ids.last().map(|id| RunId::new(id.as_str())) } else { None };
        Ok(RunPage { runs, next })
    }

    async fn open_record<T: DeserializeOwned>(
        &self,
        wf: &WorkflowId,
        key: &str,
        sealed: &[u8],
    ) -> Result<T, StoreError> {
        let k = self.workflow_key(wf).await?;
        let plain = k.open(key.as_bytes(), sealed).map_err(|_| StoreError::Sealed(key.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
    }
}
