//! Human requests beyond their creation and decision (`typed.rs`): who escalation paged.

use crate::ids::{RequestId, WorkflowId};
use crate::store::{Store, StoreError, keys};

impl Store {
    /// Add `to` to the request's `escalated_to` (once), rewriting its sealed record.
    pub async fn add_request_assignee(&self, wf: &WorkflowId, req: &RequestId, to: &str) -> Result<(), StoreError> {
        let mut record = self.human_request(req).await?;
        if record.escalated_to.iter().any(|t| t == to) {
            return Ok(());
        }
        record.escalated_to.push(to.to_string());
        let k = self.workflow_key(wf).await?;
        let key = keys::human_request(req);
        self.backend()
            .put(&key, &k.seal(key.as_bytes(), &serde_json::to_vec(&record).expect("records serialise")), None)
            .await
    }
}
