//! [`Store`]: typed records over any [`Backend`], sealed with the owning workflow's key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::conversation::TurnEntry;
use crate::crypto::{MasterKey, RecordKey, new_salt};
use crate::gates::RedactionMap;
use crate::ids::{OwnerId, RequestId, RunId, StepId, WorkflowId};
use crate::run::Event;
use crate::spec::WorkflowSpec;
use crate::store::chain::{self, ChainLink, ChainedEntry, JournalHead};
use crate::store::{
    AttemptAbandoned, AttemptClaim, AttemptPreflight, Backend, CancelRequest, HumanDecisionRecord, HumanRequestRecord,
    Lease, RunClosed, RunMeta, StepOutcome, StoreError, WorkflowKeyInfo, keys,
};

/// The current key version for new workflows.
const KEY_VERSION: u32 = 1;

pub struct Store {
    backend: Arc<dyn Backend>,
    master: MasterKey,
    service: RecordKey,
    keys: RwLock<HashMap<WorkflowId, RecordKey>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>, master: MasterKey) -> Self {
        let service = master.service_key();
        Self { backend, master, service, keys: RwLock::new(HashMap::new()) }
    }

    /// A MAC key derived from the master key for `purpose` (see `MasterKey::mac_key`).
    pub fn mac_key(&self, purpose: &str) -> zeroize::Zeroizing<[u8; 32]> {
        self.master.mac_key(purpose)
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The key of records that belong to no workflow (workflow key descriptors, users).
    pub(crate) fn service_key(&self) -> &RecordKey {
        &self.service
    }

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).expect("records serialise to JSON")
    }

    fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
    }

    async fn get_sealed<T: DeserializeOwned>(&self, k: &RecordKey, key: &str) -> Result<Option<T>, StoreError> {
        match self.backend.get(key).await? {
            None => Ok(None),
            Some(sealed) => {
                let plain = k.open(key.as_bytes(), &sealed).map_err(|_| StoreError::Sealed(key.to_string()))?;
                Self::decode(key, &plain).map(Some)
            }
        }
    }

    /// The key sealing one owner's records of one `purpose` (see [`MasterKey::owner_key`]).
    pub fn owner_key(&self, owner: &OwnerId, purpose: &str) -> RecordKey {
        self.master.owner_key(owner, purpose)
    }

    /// The workflow's record key (derived once, then cached).
    pub async fn workflow_key(&self, wf: &WorkflowId) -> Result<RecordKey, StoreError> {
        if let Some(k) = self.keys.read().expect("key cache lock").get(wf) {
            return Ok(k.clone());
        }
        let key = keys::workflow_keyinfo(wf);
        let info: WorkflowKeyInfo =
            self.get_sealed(&self.service, &key).await?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let salt = hex::decode(&info.salt).map_err(|e| StoreError::Corrupt { key, reason: e.to_string() })?;
        let k = self.master.workflow_key(&salt, &info.owner, wf, info.key_version);
        self.keys.write().expect("key cache lock").insert(wf.clone(), k.clone());
        Ok(k)
    }

    /// The owner a workflow's key is bound to.
    pub async fn workflow_owner(&self, wf: &WorkflowId) -> Result<OwnerId, StoreError> {
        let key = keys::workflow_keyinfo(wf);
        let info: WorkflowKeyInfo = self.get_sealed(&self.service, &key).await?.ok_or(StoreError::NotFound(key))?;
        Ok(info.owner)
    }

    /// Register a spec, creating the workflow's key on first sight; returns the spec's content
    /// digest, under which it is stored (so an edited spec with an unchanged `version` is a
    /// different spec, never confused with the old one). A workflow id owned by someone else
    /// is refused.
    pub async fn register_workflow(&self, spec: &WorkflowSpec) -> Result<String, StoreError> {
        let key = keys::workflow_keyinfo(&spec.id);
        let info =
            WorkflowKeyInfo { owner: spec.owner.clone(), salt: hex::encode(new_salt()), key_version: KEY_VERSION };
        let sealed = self.service.seal(key.as_bytes(), &Self::encode(&info));
        if !self.backend.put_if_absent(&key, &sealed, None).await? {
            let owner = self.workflow_owner(&spec.id).await?;
            if owner != spec.owner {
                return Err(StoreError::Forbidden(format!("workflow `{}` belongs to another owner", spec.id)));
            }
        }
        let k = self.workflow_key(&spec.id).await?;
        let encoded = Self::encode(spec);
        let digest = Self::digest_of(&encoded);
        let spec_key = keys::workflow_spec(&spec.id, &digest);
        self.backend.put(&spec_key, &k.seal(spec_key.as_bytes(), &encoded), None).await?;
        let latest = keys::workflow_latest(&spec.id);
        self.backend.put(&latest, &k.seal(latest.as_bytes(), &Self::encode(&digest)), None).await?;
        Ok(digest)
    }

    /// The content digest a spec is stored under (what [`Store::register_workflow`] returns).
    pub fn spec_digest(spec: &WorkflowSpec) -> String {
        Self::digest_of(&Self::encode(spec))
    }

    fn digest_of(encoded: &[u8]) -> String {
        hex::encode(&Sha256::digest(encoded)[..16])
    }

    /// Whether (and how) a run has finished, from its closed record.
    pub async fn run_closed(&self, wf: &WorkflowId, run: &RunId) -> Result<Option<RunClosed>, StoreError> {
        let k = self.workflow_key(wf).await?;
        self.get_sealed(&k, &keys::run_closed(run)).await
    }

    pub async fn load_spec(&self, wf: &WorkflowId, digest: &str) -> Result<WorkflowSpec, StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::workflow_spec(wf, digest);
        self.get_sealed(&k, &key).await?.ok_or(StoreError::NotFound(key))
    }

    pub async fn create_run(&self, meta: &RunMeta) -> Result<(), StoreError> {
        let k = self.workflow_key(&meta.workflow).await?;
        let ptr = keys::run_workflow(&meta.run);
        if !self.backend.put_if_absent(&ptr, meta.workflow.as_str().as_bytes(), None).await? {
            return Err(StoreError::Forbidden(format!("run {} already exists", meta.run)));
        }
        let key = keys::run_meta(&meta.run);
        self.backend.put(&key, &k.seal(key.as_bytes(), &Self::encode(meta)), None).await?;
        self.backend.index_add(keys::ACTIVE_RUNS, meta.run.as_str()).await?;
        self.backend.index_add(keys::RUNS, meta.run.as_str()).await
    }

    /// The workflow a run belongs to (a plaintext id pointer).
    pub async fn run_workflow(&self, run: &RunId) -> Result<WorkflowId, StoreError> {
        let key = keys::run_workflow(run);
        let bytes = self.backend.get(&key).await?.ok_or(StoreError::NotFound(format!("run {run}")))?;
        String::from_utf8(bytes).map(WorkflowId).map_err(|e| StoreError::Corrupt { key, reason: e.to_string() })
    }

    pub async fn run_meta(&self, run: &RunId) -> Result<RunMeta, StoreError> {
        let wf = self.run_workflow(run).await?;
        let k = self.workflow_key(&wf).await?;
        let key = keys::run_meta(run);
        self.get_sealed(&k, &key).await?.ok_or(StoreError::NotFound(key))
    }

    /// Append events to a run's journal after `head` (its length and last link, which the
    /// caller keeps) and, in the same write, the inputs of the attempts they dispatch — only
    /// while `lease` (the run's, see [`keys::run_lease`]) is still the caller's current grant;
    /// otherwise [`StoreError::Fenced`] and nothing is written. Each entry carries the link it
    /// follows (see [`chain`](crate::store::chain)); the new head is returned.
    pub async fn append_events(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        head: &JournalHead,
        events: &[Event],
        inputs: &[(StepId, u32, &Value)],
        lease: &Lease,
    ) -> Result<JournalHead, StoreError> {
        let k = self.workflow_key(wf).await?;
        let log = keys::run_journal(run);
        let mut link = head.link;
        let sealed: Vec<Vec<u8>> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (plain, next) =
                    chain::frame(&link, |buf| serde_json::to_writer(buf, e).expect("events serialise to JSON"));
                link = next;
                k.seal(journal_aad(&log, head.len + i as u64).as_bytes(), &plain)
            })
            .collect();
        self.backend.append_with(&log, head.len, &sealed, &seal_inputs(&k, run, inputs), Some(lease)).await?;
        Ok(JournalHead { len: head.len + events.len() as u64, link })
    }

    /// A run's journal, its chain checked: an entry that does not follow the one before it
    /// (re-sealed with other content, or out of place) is [`StoreError::Corrupt`], naming it.
    pub async fn read_journal(&self, wf: &WorkflowId, run: &RunId) -> Result<Vec<Event>, StoreError> {
        Ok(self.read_chained_journal(wf, run).await?.0)
    }

    /// A run's journal with each entry's place in the chain (what a receipt is made of).
    pub async fn read_chained_journal(
        &self,
        wf: &WorkflowId,
        run: &RunId,
    ) -> Result<(Vec<Event>, Vec<ChainedEntry>), StoreError> {
        let k = self.workflow_key(wf).await?;
        let log = keys::run_journal(run);
        let sealed = self.backend.read_log(&log, 0).await?;
        let mut events = Vec::with_capacity(sealed.len());
        let mut chained = Vec::with_capacity(sealed.len());
        let mut link = ChainLink::genesis(run);
        for (i, sealed) in sealed.iter().enumerate() {
            let aad = journal_aad(&log, i as u64);
            let plain = k.open(aad.as_bytes(), sealed).map_err(|_| StoreError::Sealed(aad.clone()))?;
            let (prev, json) = chain::unframe(&plain).map_err(|reason| corrupt(&aad, reason))?;
            let event: Event = Self::decode(&aad, json)?;
            if prev != link {
                let before = events.last().map(Event::kind).unwrap_or("the run's start");
                return Err(corrupt(
                    &aad,
                    format!(
                        "the hash chain breaks before entry {i} ({}): entry {} ({before}) was altered at rest",
                        event.kind(),
                        i.saturating_sub(1)
                    ),
                ));
            }
            let digest = chain::event_digest(json);
            let next = prev.next(&digest);
            chained.push(ChainedEntry { prev, digest, link: next });
            events.push(event);
            link = next;
        }
        Ok((events, chained))
    }

    /// Check a finished run's journal (as [`Store::read_chained_journal`] read it) against the
    /// length and last link recorded when the run closed: the chain shows an altered entry by
    /// the one after it, and this covers the last entry and entries cut off the end.
    pub async fn check_closed_journal(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        events: &[Event],
        chained: &[ChainedEntry],
    ) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::run_closed(run);
        let closed: Option<RunClosed> = self.get_sealed(&k, &key).await?;
        let Some((len, link)) = closed.and_then(|c| c.journal) else { return Ok(()) };
        let log = keys::run_journal(run);
        if (chained.len() as u64) < len {
            return Err(corrupt(
                &log,
                format!(
                    "the run closed with {len} journal entries and {} are left: entries were removed at rest",
                    chained.len()
                ),
            ));
        }
        let last = len.checked_sub(1).map(|i| i as usize);
        if let Some(i) = last {
            if chained[i].link.to_hex() != link {
                return Err(corrupt(
                    &journal_aad(&log, i as u64),
                    format!(
                        "entry {i} ({}) was altered at rest: it is not the entry the run closed with",
                        events[i].kind()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Several attempts' inputs in one write.
    pub async fn put_step_inputs(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        inputs: &[(StepId, u32, &Value)],
    ) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        self.backend.put_many(&seal_inputs(&k, run, inputs)).await
    }

    pub async fn step_input(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
    ) -> Result<Option<Value>, StoreError> {
        let k = self.workflow_key(wf).await?;
        self.get_sealed(&k, &keys::step_input(run, step, attempt)).await
    }

    /// An attempt's recorded outcome (if any) and its input, in one read: what a worker needs
    /// before it runs a step.
    pub async fn step_outcome_and_input(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
    ) -> Result<(Option<StepOutcome>, Option<Value>), StoreError> {
        let k = self.workflow_key(wf).await?;
        let keys = [keys::step_outcome(run, step, attempt), keys::step_input(run, step, attempt)];
        let mut values = self.backend.get_many(&keys).await?.into_iter();
        let open = |key: &str, sealed: Option<Vec<u8>>| -> Result<Option<Vec<u8>>, StoreError> {
            sealed.map(|s| k.open(key.as_bytes(), &s).map_err(|_| StoreError::Sealed(key.to_string()))).transpose()
        };
        let outcome = open(&keys[0], values.next().flatten())?.map(|p| Self::decode(&keys[0], &p)).transpose()?;
        let input = open(&keys[1], values.next().flatten())?.map(|p| Self::decode(&keys[1], &p)).transpose()?;
        Ok((outcome, input))
    }

    /// Everything a worker reads before it runs an attempt, in one read: the attempt's outcome
    /// (a duplicate delivery), its input, its claim, and whether the run was cancelled or closed.
    pub async fn attempt_preflight(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
    ) -> Result<AttemptPreflight, StoreError> {
        let k = self.workflow_key(wf).await?;
        let keys = [
            keys::step_outcome(run, step, attempt),
            keys::step_input(run, step, attempt),
            keys::step_claim(run, step, attempt),
            keys::run_cancel(run),
            keys::run_closed(run),
        ];
        let mut v = self.backend.get_many(&keys).await?.into_iter();
        let outcome: Option<StepOutcome> = open_decode(&k, &keys[0], v.next().flatten())?;
        let input: Option<Value> = open_decode(&k, &keys[1], v.next().flatten())?;
        let claim: Option<AttemptClaim> = open_decode(&k, &keys[2], v.next().flatten())?;
        let cancel: Option<CancelRequest> = open_decode(&k, &keys[3], v.next().flatten())?;
        let closed: Option<RunClosed> = open_decode(&k, &keys[4], v.next().flatten())?;
        let stop = stop_reason(cancel, closed);
        Ok(AttemptPreflight { outcome, input, claim, stop })
    }

    /// Why an attempt that is running must stop, if it must: its run was cancelled or has
    /// finished, or the run's driver gave up on the attempt. What a worker polls while it runs.
    pub async fn attempt_stop_reason(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
    ) -> Result<Option<String>, StoreError> {
        let k = self.workflow_key(wf).await?;
        let keys = [keys::run_cancel(run), keys::run_closed(run), keys::attempt_abandoned(run, step, attempt)];
        let mut values = self.backend.get_many(&keys).await?.into_iter();
        let cancel: Option<CancelRequest> = open_decode(&k, &keys[0], values.next().flatten())?;
        let closed: Option<RunClosed> = open_decode(&k, &keys[1], values.next().flatten())?;
        let abandoned: Option<AttemptAbandoned> = open_decode(&k, &keys[2], values.next().flatten())?;
        Ok(stop_reason(cancel, closed)
            .or_else(|| abandoned.map(|a| format!("the run gave up on this attempt ({})", a.reason))))
    }

    /// Tell a worker still running `attempt` to stop: the run has moved on without it.
    pub async fn abandon_attempt(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
        why: &AttemptAbandoned,
    ) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::attempt_abandoned(run, step, attempt);
        self.backend.put(&key, &k.seal(key.as_bytes(), &Self::encode(why)), None).await
    }

    /// Claim an attempt (first writer wins). `Ok(None)`: this claim won; otherwise the claim
    /// that was there first.
    pub async fn claim_attempt(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
        claim: &AttemptClaim,
    ) -> Result<Option<AttemptClaim>, StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::step_claim(run, step, attempt);
        if self.backend.put_if_absent(&key, &k.seal(key.as_bytes(), &Self::encode(claim)), None).await? {
            return Ok(None);
        }
        // Claims are never deleted, so the winner is there to read.
        Ok(Some(self.get_sealed(&k, &key).await?.ok_or(StoreError::NotFound(key))?))
    }

    /// The claims and outcomes of several attempts of a run, in one read: what the run driver
    /// checks for attempts in flight (started? by whom? finished?).
    pub async fn attempt_states(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        attempts: &[(StepId, u32)],
    ) -> Result<Vec<(Option<AttemptClaim>, Option<StepOutcome>)>, StoreError> {
        let k = self.workflow_key(wf).await?;
        let keys: Vec<String> = attempts
            .iter()
            .flat_map(|(step, attempt)| {
                [keys::step_claim(run, step, *attempt), keys::step_outcome(run, step, *attempt)]
            })
            .collect();
        let values = self.backend.get_many(&keys).await?;
        let mut out = Vec::with_capacity(attempts.len());
        let mut it = keys.iter().zip(values);
        while let (Some((ck, cv)), Some((ok, ov))) = (it.next(), it.next()) {
            out.push((open_decode(&k, ck, cv)?, open_decode(&k, ok, ov)?));
        }
        Ok(out)
    }

    /// Mark a run finished for workers: none of its attempts start any more and running ones
    /// are abandoned.
    pub async fn close_run(&self, wf: &WorkflowId, run: &RunId, closed: &RunClosed) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::run_closed(run);
        self.backend.put(&key, &k.seal(key.as_bytes(), &Self::encode(closed)), None).await
    }

    /// Record an attempt's outcome; the first recorded outcome of an attempt wins.
    pub async fn record_outcome(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        outcome: &StepOutcome,
    ) -> Result<bool, StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::step_outcome(run, &outcome.step, outcome.attempt);
        self.backend.put_if_absent(&key, &k.seal(key.as_bytes(), &Self::encode(outcome)), None).await
    }

    pub async fn step_outcome(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
    ) -> Result<Option<StepOutcome>, StoreError> {
        let k = self.workflow_key(wf).await?;
        self.get_sealed(&k, &keys::step_outcome(run, step, attempt)).await
    }

    /// Hold an output the gate mesh blocked (sealed), outside the run's reach.
    pub async fn quarantine(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
        output: &Value,
    ) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::step_quarantine(run, step, attempt);
        self.backend.put(&key, &k.seal(key.as_bytes(), &Self::encode(output)), None).await
    }

    pub async fn quarantined(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        attempt: u32,
    ) -> Result<Option<Value>, StoreError> {
        let k = self.workflow_key(wf).await?;
        self.get_sealed(&k, &keys::step_quarantine(run, step, attempt)).await
    }

    pub async fn discard_quarantined(&self, run: &RunId, step: &StepId, attempt: u32) -> Result<(), StoreError> {
        self.backend.delete(&keys::step_quarantine(run, step, attempt)).await
    }

    /// The run's redaction map and the length of its log (for [`Store::save_redactions`]).
    pub async fn redactions(&self, wf: &WorkflowId, run: &RunId) -> Result<(u64, Option<RedactionMap>), StoreError> {
        let k = self.workflow_key(wf).await?;
        let log = keys::run_redactions(run);
        // Only the latest snapshot matters.
        let n = self.backend.log_len(&log).await?;
        if n == 0 {
            return Ok((0, None));
        }
        let entries = self.backend.read_log(&log, n - 1).await?;
        match entries.last() {
            None => Ok((0, None)),
            Some(sealed) => {
                let aad = journal_aad(&log, n - 1);
                let plain = k.open(aad.as_bytes(), sealed).map_err(|_| StoreError::Sealed(aad.clone()))?;
                Ok((n, Some(Self::decode(&aad, &plain)?)))
            }
        }
    }

    /// Save a new redaction map if the log still has `expected_len` snapshots; otherwise
    /// [`StoreError::Conflict`] (another worker updated it: reload and redo).
    pub async fn save_redactions(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        expected_len: u64,
        map: &RedactionMap,
    ) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let log = keys::run_redactions(run);
        let sealed = k.seal(journal_aad(&log, expected_len).as_bytes(), &Self::encode(map));
        self.backend.append(&log, expected_len, &[sealed]).await
    }

    /// The turn journal of an `llm` step, in order.
    pub async fn turns(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        conversation: u32,
    ) -> Result<Vec<TurnEntry>, StoreError> {
        let k = self.workflow_key(wf).await?;
        let log = keys::step_turns(run, step, conversation);
        self.backend
            .read_log(&log, 0)
            .await?
            .iter()
            .enumerate()
            .map(|(i, sealed)| {
                let aad = journal_aad(&log, i as u64);
                let plain = k.open(aad.as_bytes(), sealed).map_err(|_| StoreError::Sealed(aad.clone()))?;
                Self::decode(&aad, &plain)
            })
            .collect()
    }

    /// Append `entry` to the step's turn journal if it still holds `expected_len` entries;
    /// otherwise [`StoreError::Conflict`] (another attempt wrote first: the caller re-reads).
    pub async fn append_turn(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        step: &StepId,
        conversation: u32,
        expected_len: u64,
        entry: &TurnEntry,
    ) -> Result<(), StoreError> {
        let k = self.workflow_key(wf).await?;
        let log = keys::step_turns(run, step, conversation);
        let sealed = k.seal(journal_aad(&log, expected_len).as_bytes(), &Self::encode(entry));
        self.backend.append(&log, expected_len, &[sealed]).await
    }

    /// Ask for a run to be cancelled. Returns false if it already was asked.
    pub async fn request_cancel(
        &self,
        wf: &WorkflowId,
        run: &RunId,
        request: &CancelRequest,
    ) -> Result<bool, StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::run_cancel(run);
        self.backend.put_if_absent(&key, &k.seal(key.as_bytes(), &Self::encode(request)), None).await
    }

    pub async fn cancel_request(&self, wf: &WorkflowId, run: &RunId) -> Result<Option<CancelRequest>, StoreError> {
        let k = self.workflow_key(wf).await?;
        self.get_sealed(&k, &keys::run_cancel(run)).await
    }

    /// Persist a human request (idempotent) and list it as pending unless already decided.
    pub async fn put_human_request(&self, record: &HumanRequestRecord) -> Result<(), StoreError> {
        let k = self.workflow_key(&record.workflow).await?;
        let key = keys::human_request(&record.request.id);
        self.backend.put_if_absent(&key, &k.seal(key.as_bytes(), &Self::encode(record)), None).await?;
        if self.backend.get(&keys::human_decision(&record.request.id)).await?.is_none() {
            self.backend.index_add(keys::PENDING_HUMAN, record.request.id.as_str()).await?;
        }
        Ok(())
    }

    pub async fn human_request(&self, req: &RequestId) -> Result<HumanRequestRecord, StoreError> {
        let run = RunId::new(req.as_str().split('.').next().unwrap_or_default());
        let wf = self.run_workflow(&run).await.map_err(|_| StoreError::NotFound(format!("request {req}")))?;
        let k = self.workflow_key(&wf).await?;
        self.get_sealed(&k, &keys::human_request(req)).await?.ok_or(StoreError::NotFound(format!("request {req}")))
    }

    /// Record a decision. Returns false if the request was already decided (nothing changes).
    pub async fn decide(
        &self,
        wf: &WorkflowId,
        req: &RequestId,
        decision: &HumanDecisionRecord,
    ) -> Result<bool, StoreError> {
        let k = self.workflow_key(wf).await?;
        let key = keys::human_decision(req);
        let won = self.backend.put_if_absent(&key, &k.seal(key.as_bytes(), &Self::encode(decision)), None).await?;
        if won {
            self.backend.index_remove(keys::PENDING_HUMAN, req.as_str()).await?;
        }
        Ok(won)
    }

    pub async fn human_decision(
        &self,
        wf: &WorkflowId,
        req: &RequestId,
    ) -> Result<Option<HumanDecisionRecord>, StoreError> {
        let k = self.workflow_key(wf).await?;
        self.get_sealed(&k, &keys::human_decision(req)).await
    }

    /// A request that no longer needs an answer.
    pub async fn withdraw_human_request(&self, req: &RequestId) -> Result<(), StoreError> {
        self.backend.index_remove(keys::PENDING_HUMAN, req.as_str()).await
    }

    pub async fn pending_requests(&self) -> Result<Vec<RequestId>, StoreError> {
        Ok(self.backend.index_members(keys::PENDING_HUMAN).await?.into_iter().map(RequestId).collect())
    }

    pub async fn mark_run_finished(&self, run: &RunId) -> Result<(), StoreError> {
        self.backend.index_remove(keys::ACTIVE_RUNS, run.as_str()).await
    }

    pub async fn active_runs(&self) -> Result<Vec<RunId>, StoreError> {
        Ok(self.backend.index_members(keys::ACTIVE_RUNS).await?.into_iter().map(RunId).collect())
    }

    pub async fn list_runs(&self) -> Result<Vec<RunId>, StoreError> {
        Ok(self.backend.index_members(keys::RUNS).await?.into_iter().map(RunId).collect())
    }
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { key: key.to_string(), reason: e.to_string() }
}

fn stop_reason(cancel: Option<CancelRequest>, closed: Option<RunClosed>) -> Option<String> {
    match (cancel, closed) {
        (_, Some(c)) => Some(format!("the run has finished ({})", c.status)),
        (Some(c), None) => Some(format!("the run was cancelled by {}: {}", c.by, c.reason)),
        (None, None) => None,
    }
}

/// Open and decode a sealed value read under `key`, if there was one.
fn open_decode<T: DeserializeOwned>(
    k: &RecordKey,
    key: &str,
    sealed: Option<Vec<u8>>,
) -> Result<Option<T>, StoreError> {
    sealed
        .map(|s| {
            let plain = k.open(key.as_bytes(), &s).map_err(|_| StoreError::Sealed(key.to_string()))?;
            serde_json::from_slice(&plain).map_err(|e| corrupt(key, e))
        })
        .transpose()
}

/// Attempts' inputs as sealed records under their keys.
fn seal_inputs(k: &RecordKey, run: &RunId, inputs: &[(StepId, u32, &Value)]) -> Vec<(String, Vec<u8>)> {
    inputs
        .iter()
        .map(|(step, attempt, input)| {
            let key = keys::step_input(run, step, *attempt);
            let sealed = k.seal(key.as_bytes(), &Store::encode(input));
            (key, sealed)
        })
        .collect()
}

/// Journal entries are bound to their position, so entries cannot be reordered or spliced.
fn journal_aad(log: &str, seq: u64) -> String {
    format!("{log}/{seq}")
}
