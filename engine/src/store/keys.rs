//! The key layout. Keys hold ids only; every value under them is sealed, except three that
//! hold only ids and numbers: the run → workflow pointer (needed to find the run's key), run
//! leases (holder id, token, expiry) and process heartbeats (boot id, PID namespace, pid,
//! start time), which the lease and liveness code read below the sealing `Store`.

use crate::ids::{OwnerId, RequestId, RunId, StepId, WorkflowId};

/// Workflow key descriptor (salt, owner, key version), sealed with the service key.
pub fn workflow_keyinfo(wf: &WorkflowId) -> String {
    format!("wf/{wf}/key")
}
/// A workflow's spec, by the digest of its content (runs name the exact spec they ran).
pub fn workflow_spec(wf: &WorkflowId, digest: &str) -> String {
    format!("wf/{wf}/spec/{digest}")
}
/// The digest of the latest registered spec of a workflow.
pub fn workflow_latest(wf: &WorkflowId) -> String {
    format!("wf/{wf}/latest")
}
/// Plaintext pointer from a run to its workflow id.
pub fn run_workflow(run: &RunId) -> String {
    format!("run/{run}/wf")
}
pub fn run_meta(run: &RunId) -> String {
    format!("run/{run}/meta")
}
pub fn run_journal(run: &RunId) -> String {
    format!("run/{run}/journal")
}
/// A run's status for listings (sealed), rewritten when the run starts and when it finishes.
pub fn run_summary(run: &RunId) -> String {
    format!("run/{run}/summary")
}
/// The resolved input of one attempt of a step, written before the job is enqueued.
pub fn step_input(run: &RunId, step: &StepId, attempt: u32) -> String {
    format!("run/{run}/in/{step}/{attempt}")
}
/// The recorded outcome of one attempt of a step (first writer wins).
pub fn step_outcome(run: &RunId, step: &StepId, attempt: u32) -> String {
    format!("run/{run}/out/{step}/{attempt}")
}
/// Who runs one attempt of a step: the first worker to claim it, or the run driver's fence
/// (first writer wins), so an attempt executes at most once and never after it was fenced.
pub fn step_claim(run: &RunId, step: &StepId, attempt: u32) -> String {
    format!("run/{run}/claim/{step}/{attempt}")
}
/// Written once a run has finished (any outcome): workers start none of its attempts and
/// abandon the ones they are running.
pub fn run_closed(run: &RunId) -> String {
    format!("run/{run}/closed")
}
/// An output the gate mesh blocked, held until a human decides (deleted afterwards).
pub fn step_quarantine(run: &RunId, step: &StepId, attempt: u32) -> String {
    format!("run/{run}/held/{step}/{attempt}")
}
/// The run's redaction map, as a log of snapshots (appending with the expected length makes
/// concurrent updates from several workers safe).
pub fn run_redactions(run: &RunId) -> String {
    format!("run/{run}/redactions")
}
/// The run's lease (holder, fencing token, expiry; see `store::lease`): one driver per run.
pub fn run_lease(run: &RunId) -> String {
    format!("run/{run}/lease")
}
/// A process's heartbeat (its liveness id; the value says where it runs), with a TTL.
pub fn process(id: &str) -> String {
    format!("proc/{id}")
}
/// A request to cancel a run (first one wins); read by whichever process drives the run.
pub fn run_cancel(run: &RunId) -> String {
    format!("run/{run}/cancel")
}
pub fn human_request(req: &RequestId) -> String {
    format!("hitl/{req}")
}
pub fn human_decision(req: &RequestId) -> String {
    format!("hitl/{req}/decision")
}

/// A document collection's manifest (sealed with the owner's `docs` key): its documents and
/// the files of its full-text index.
pub fn docs_manifest(owner: &OwnerId, collection: &str) -> String {
    format!("docs/{owner}/{collection}/manifest")
}
/// One immutable file of a collection's full-text index (sealed with the owner's `docs` key).
pub fn docs_file(owner: &OwnerId, collection: &str, file: &str) -> String {
    format!("docs/{owner}/{collection}/file/{file}")
}
/// The lease held while a collection is written (ingest, delete): one writer at a time.
pub fn docs_lease(owner: &OwnerId, collection: &str) -> String {
    format!("docs/{owner}/{collection}/lease")
}
/// Index of an owner's collections (members: collection names).
pub fn docs_collections(owner: &OwnerId) -> String {
    format!("idx/docs/{owner}")
}

/// Index of all runs (members: run ids, which sort by creation time).
pub const RUNS: &str = "idx/runs";
/// Index of runs that have not finished (rehydrated on start).
pub const ACTIVE_RUNS: &str = "idx/runs-active";
/// Index of human requests waiting for a decision (members: request ids).
pub const PENDING_HUMAN: &str = "idx/hitl-pending";
