//! The key layout. Keys hold ids only; every value under them is sealed, except three that
//! hold only ids and numbers: the run → workflow pointer (needed to find the run's key), run
//! leases (holder id, token, expiry) and process heartbeats (boot id, PID namespace, pid,
//! start time), which the lease and liveness code read below the sealing `Store`.

use crate::ids::{FireId, RequestId, RunId, StepId, TriggerId, WorkflowId};

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

/// Index of all runs (members: run ids, which sort by creation time).
pub const RUNS: &str = "idx/runs";
/// Index of runs that have not finished (rehydrated on start).
pub const ACTIVE_RUNS: &str = "idx/runs-active";
/// Index of human requests waiting for a decision (members: request ids).
pub const PENDING_HUMAN: &str = "idx/hitl-pending";

/// The claim on a fire's dedup key (first writer wins, expires after the dedup window).
/// `digest` is the workflow-keyed digest of the key, so the key itself is not in the store key.
pub fn fire_claim(wf: &WorkflowId, trigger: &TriggerId, digest: &str) -> String {
    format!("trig/{wf}/{trigger}/claim/{digest}")
}
/// One entry of a workflow's fire history (expires after the history's retention).
pub fn fire_record(wf: &WorkflowId, fire: &FireId) -> String {
    format!("trig/{wf}/fire/{fire}")
}
/// The prefix of a workflow's fire history.
pub fn fire_history(wf: &WorkflowId) -> String {
    format!("trig/{wf}/fire/")
}
/// A trigger's persisted state: health, counters and its own cursor (a cron's last slot…).
pub fn trigger_state(wf: &WorkflowId, trigger: &TriggerId) -> String {
    format!("trig/{wf}/{trigger}/state")
}
/// A trigger's secret (a webhook's signing secret).
pub fn trigger_secret(wf: &WorkflowId, trigger: &TriggerId) -> String {
    format!("trig/{wf}/{trigger}/secret")
}
/// Content a fire carries by reference (an uploaded file, an attachment), by keyed digest.
pub fn fire_blob(wf: &WorkflowId, digest: &str) -> String {
    format!("trig/{wf}/blob/{digest}")
}

/// Index of every trigger ever started (members: `workflow/trigger`).
pub const TRIGGERS: &str = "idx/triggers";
