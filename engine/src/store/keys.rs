//! The key layout. Keys hold ids only; every value under them is sealed, except three that
//! hold only ids and numbers: the run → workflow pointer (needed to find the run's key), run
//! leases (holder id, token, expiry) and process heartbeats (boot id, PID namespace, pid,
//! start time), which the lease and liveness code read below the sealing `Store`.

use crate::ids::{FireId, OwnerId, RequestId, RunId, StepId, TriggerId, WorkflowId};

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
/// The driver gave up on a claimed attempt (see `AttemptAbandoned`).
pub fn attempt_abandoned(run: &RunId, step: &StepId, attempt: u32) -> String {
    format!("run/{run}/abandoned/{step}/{attempt}")
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
/// The turn journal of an `llm` step's (or `for_each` item's: `step` is its slot id) conversation number `conversation` (a new one after
/// each permanent failure): `conversation::TurnEntry`s, one per log entry, shared by the
/// attempts that continue it.
pub fn step_turns(run: &RunId, step: &StepId, conversation: u32) -> String {
    format!("run/{run}/turns/{step}/{conversation}")
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
/// A named secret of an owner (an API key), sealed with the owner's key.
pub fn secret(owner: &crate::ids::OwnerId, name: &str) -> String {
    format!("secret/{owner}/{name}")
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

/// One memory note of an owner (sealed with the owner's `memory` key); `id` is a keyed hash
/// of the note's key or a ULID, never the key itself.
pub fn memory_note(owner: &OwnerId, id: &str) -> String {
    format!("memory/{owner}/{id}")
}
/// Index of an owner's memory notes (members: note ids).
pub fn memory_notes(owner: &OwnerId) -> String {
    format!("idx/memory/{owner}")
}

/// A console notification (sealed with the service key).
pub fn notification(id: &str) -> String {
    format!("notify/{id}")
}
/// Index of a user's notifications (members: notification ids, ULIDs).
pub fn notifications_of(user: &str) -> String {
    format!("idx/notify/{user}")
}

/// Index of all runs (members: run ids, which sort by creation time).
pub const RUNS: &str = "idx/runs";
/// Index of runs that have not finished (rehydrated on start).
pub const ACTIVE_RUNS: &str = "idx/runs-active";
/// Index of human requests waiting for a decision (members: request ids).
pub const PENDING_HUMAN: &str = "idx/hitl-pending";

/// A user (name, role, groups, email), sealed with the service key.
pub fn user(name: &str) -> String {
    format!("user/{name}")
}
/// The hash of one API token (its id is the token's public part), sealed with the service key.
pub fn user_token(id: &str) -> String {
    format!("user-token/{id}")
}
/// The service's receipt signing key (Ed25519 seed), sealed with the service key; created once.
pub const RECEIPT_KEY: &str = "service/receipt-key";
/// Index of users (members: user names).
pub const USERS: &str = "idx/users";
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

/// A named connection of an owner (settings, never its credential), sealed with the owner's
/// `connections` key.
pub fn connection(owner: &OwnerId, name: &str) -> String {
    format!("conn/{owner}/{name}")
}
/// Index of an owner's connections (members: connection names).
pub fn connections(owner: &OwnerId) -> String {
    format!("idx/conn/{owner}")
}
/// The record that a step's email was sent (or is being sent), keyed by a workflow-keyed digest
/// of the step's idempotency key (see `store::connections`).
pub fn email_sent(wf: &WorkflowId, digest: &str) -> String {
    format!("wf/{wf}/sent/{digest}")
}
