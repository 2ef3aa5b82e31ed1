//! `Tollgate`: the operations the CLI, the admin HTTP API and tests call — start a run,
//! decide a human request, cancel, inspect — over the engine and its supervisor.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use serde::Serialize;
use serde_json::Value;
use tollgate_engine::ids::{RequestId, RunId};
use tollgate_engine::run::{self, Decision, HumanMode, RunState};
use tollgate_engine::spec::{SpecError, ValidatedSpec};
use tollgate_engine::store::{CancelRequest, HumanDecisionRecord, HumanRequestRecord, RunMeta, StoreError};

use crate::run_actor::RunMsg;
use crate::supervisor::SupervisorMsg;
use crate::system::{Engine, RunUpdate, now_ms};
use crate::users::UserDirectory;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Engine(String),
    #[error("request {0} was already decided: {decision} by {by}", decision = decision_word(&.1.decision), by = .1.by)]
    AlreadyDecided(RequestId, Box<HumanDecisionRecord>),
    #[error("{0} started this run, and step `{1}` forbids its starter to approve it (they may reject or abort)")]
    SelfApproval(String, String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("decision `{decision}` does not fit a {mode:?} request (allowed: {allowed})")]
    DecisionNotAllowed { decision: String, mode: HumanMode, allowed: &'static str },
    #[error("the run was not found: {0}")]
    NotFound(String),
    /// A `workflow.run` step names an unknown workflow, or sub-workflows call each other in a cycle.
    #[error("{0}")]
    Workflows(String),
}

/// A run as shown to people: its metadata and its state folded from the journal.
#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub meta: RunMeta,
    pub state: RunState,
    /// Step ids in spec order (state.steps is by the same index).
    pub step_ids: Vec<String>,
    pub step_types: Vec<&'static str>,
    /// The escalation of each request with a ladder (`tollgate_engine::run::escalations`).
    pub escalations: Vec<serde_json::Value>,
}

#[derive(Clone)]
pub struct Tollgate {
    pub engine: Arc<Engine>,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Users and token checks (`crate::users`).
    pub users: Arc<UserDirectory>,
}

impl Tollgate {
    pub fn new(engine: Arc<Engine>, supervisor: ActorRef<SupervisorMsg>) -> Self {
        let users = Arc::new(UserDirectory::new(engine.store.clone()));
        Self { engine, supervisor, users }
    }

    /// Register the spec, bind parameters, create the run and start its actor.
    pub async fn start_run(
        &self,
        spec: &ValidatedSpec,
        params: &serde_json::Map<String, Value>,
    ) -> Result<RunId, ServiceError> {
        self.start_run_by(spec, params, None).await
    }

    /// [`Tollgate::start_run`], recording who started it (see `RunMeta::started_by`).
    pub async fn start_run_by(
        &self,
        spec: &ValidatedSpec,
        params: &serde_json::Map<String, Value>,
        started_by: Option<&str>,
    ) -> Result<RunId, ServiceError> {
        let run = RunId::generate();
        self.create_run(spec, params, &run, None, started_by).await?;
        self.ensure(&run).await?;
        Ok(run)
    }

    /// Register the spec, bind parameters and record the run `run` (naming the trigger and
    /// fire that started it, if one did, and the user who started it, if one did) without
    /// starting its actor. A run id that exists already is refused ([`StoreError::Forbidden`]):
    /// the fire path relies on it.
    pub async fn create_run(
        &self,
        spec: &ValidatedSpec,
        params: &serde_json::Map<String, Value>,
        run: &RunId,
        trigger: Option<tollgate_engine::trigger::RunTrigger>,
        started_by: Option<&str>,
    ) -> Result<(), ServiceError> {
        let params = spec.bind_params(params)?;
        crate::subworkflows::check_refs(&self.engine, spec).map_err(ServiceError::Workflows)?;
        let store = &self.engine.store;
        // A spec this process already loaded from the store is registered: skip the writes
        // (triggers start many runs of one spec).
        let known = tollgate_engine::store::Store::spec_digest(spec.spec());
        let spec_digest = if self.engine.has_spec(&spec.spec().id, &known) {
            known
        } else {
            store.register_workflow(spec.spec()).await?
        };
        let meta = RunMeta {
            run: run.clone(),
            workflow: spec.spec().id.clone(),
            version: spec.spec().version,
            spec_digest,
            owner: spec.spec().owner.clone(),
            params,
            created_at: now_ms(),
            started_by: started_by.map(String::from),
            trigger,
            parent: None,
        };
        store.create_run(&meta).await?;
        Ok(())
    }

    /// Make sure the run has a live actor here (resume, recover).
    pub async fn ensure(&self, run: &RunId) -> Result<(), ServiceError> {
        let r = ractor::call_t!(
            self.supervisor,
            |reply| SupervisorMsg::Ensure { run: run.clone(), reply: Some(reply) },
            30_000
        )
        .map_err(|e| ServiceError::Engine(e.to_string()))?;
        r.map_err(ServiceError::Engine)
    }

    /// How many run actors are live in this process (waiting runs are passivated, not live).
    pub async fn live_runs(&self) -> Result<usize, ServiceError> {
        ractor::call_t!(self.supervisor, SupervisorMsg::LiveCount, 5_000)
            .map_err(|e| ServiceError::Engine(e.to_string()))
    }

    /// Start actors for every unfinished run (after a restart), a few at a time in the
    /// background: new starts and decisions go first.
    pub async fn recover_all(&self) -> Result<usize, ServiceError> {
        let runs = self.engine.store.active_runs().await?;
        for run in &runs {
            let _ = self.supervisor.send_message(SupervisorMsg::Recover { run: run.clone() });
        }
        Ok(runs.len())
    }

    /// Record a human decision (first one wins; a second is refused with the first) and
    /// deliver it to the run. A step that forbids self-approval refuses `by` approving a run
    /// they started, whichever path the decision comes by.
    pub async fn decide(
        &self,
        request: &RequestId,
        decision: Decision,
        by: &str,
        comment: Option<String>,
    ) -> Result<HumanRequestRecord, ServiceError> {
        let store = &self.engine.store;
        let record = store.human_request(request).await?;
        self.record_decision(
            record,
            HumanDecisionRecord { decision, by: by.to_string(), comment, by_policy: false, at: now_ms() },
        )
        .await
    }

    pub(crate) async fn record_decision(
        &self,
        record: HumanRequestRecord,
        d: HumanDecisionRecord,
    ) -> Result<HumanRequestRecord, ServiceError> {
        let store = &self.engine.store;
        let request = &record.request.id;
        check_decision(record.request.mode, &d.decision)?;
        if let Some(first) = store.human_decision(&record.workflow, request).await? {
            return Err(ServiceError::AlreadyDecided(request.clone(), Box::new(first)));
        }
        let approving = d.decision.is_approving();
        if record.request.forbid_self_approval && approving && !d.by_policy {
            let meta = store.run_meta(&record.run).await?;
            if meta.started_by.as_deref() == Some(d.by.as_str()) {
                let step = record.request.step.as_ref().map(|s| s.to_string()).unwrap_or_default();
                return Err(ServiceError::SelfApproval(d.by.clone(), step));
            }
        }
        if !store.decide(&record.workflow, request, &d).await? {
            let first = store
                .human_decision(&record.workflow, request)
                .await?
                .ok_or_else(|| ServiceError::Engine("decision vanished".into()))?;
            return Err(ServiceError::AlreadyDecided(request.clone(), Box::new(first)));
        }
        self.engine.publish(RunUpdate::Decided {
            run: record.run.clone(),
            request: request.clone(),
            by: d.by.clone(),
            by_policy: d.by_policy,
        });
        let msg = RunMsg::HumanDecided { request: request.clone(), decision: d };
        let _ = self.supervisor.send_message(SupervisorMsg::Route { run: record.run.clone(), msg });
        Ok(record)
    }

    /// Cancel a run: the request is recorded first, so the process driving the run applies it
    /// even if that is another process, or the run is passivated.
    pub async fn cancel(&self, run: &RunId, by: &str, reason: &str) -> Result<(), ServiceError> {
        let meta = self.engine.store.run_meta(run).await?;
        let request = CancelRequest { by: by.into(), reason: reason.into(), at: now_ms() };
        self.engine.store.request_cancel(&meta.workflow, run, &request).await?;
        let msg = RunMsg::Cancel { by: by.into(), reason: reason.into() };
        let _ = self.supervisor.send_message(SupervisorMsg::Route { run: run.clone(), msg });
        Ok(())
    }

    /// The run's current state, folded from its journal.
    pub async fn view(&self, run: &RunId) -> Result<RunView, ServiceError> {
        view(&self.engine, run).await
    }

    /// Pending human requests, oldest first.
    pub async fn pending(&self) -> Result<Vec<HumanRequestRecord>, ServiceError> {
        let mut out = Vec::new();
        for id in self.engine.store.pending_requests().await? {
            if let Ok(r) = self.engine.store.human_request(&id).await {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Wait until the run finishes or waits on a human; returns its view then.
    pub async fn wait_settled(&self, run: &RunId, poll: Duration) -> Result<RunView, ServiceError> {
        let mut updates = self.engine.updates.subscribe();
        let meta = self.engine.store.run_meta(run).await.map_err(|e| match e {
            StoreError::NotFound(_) => ServiceError::NotFound(run.to_string()),
            e => e.into(),
        })?;
        loop {
            // The run's summary is rewritten when the run starts or stops waiting and when it
            // finishes: while it says running, the run is at work and its journal (long, for a
            // wide run) is not worth reading and replaying.
            let summary = self.engine.store.run_summary(&meta.workflow, run).await?;
            if summary.is_some_and(|s| s.status.is_finished() || s.waiting) {
                let v = self.view(run).await?;
                if v.state.is_settled()
                    || v.state.is_waiting()
                        && !has_near_timer(&v)
                        && !self.between_states(&v).await?
                        && !self.children_busy(&v).await?
                {
                    return Ok(v);
                }
            }
            // Wake on this run's next update, or poll (updates from other processes are not seen here).
            let _ = tokio::time::timeout(poll, async {
                while let Ok(u) = updates.recv().await {
                    if u.run() == run && !matches!(u, RunUpdate::Step { .. }) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

impl Tollgate {
    /// Whether a sub-workflow the run waits for is still at work (or has finished and the run
    /// is about to move on): only a run whose children all wait too has settled. A child
    /// waiting for budget from its parent waits only while that parent has a budget request
    /// open (to a person, or to its own parent): before the parent has taken the ask up, or
    /// once it has answered (its grant is written after its own journal entry), the two runs
    /// are still moving.
    async fn children_busy(&self, v: &RunView) -> Result<bool, ServiceError> {
        // Each child, and whether its parent has a budget request open.
        let children = |v: &RunView| -> Vec<(RunId, bool)> {
            let asking = v.state.budget_request.is_some();
            v.state
                .steps
                .iter()
                .filter_map(|s| match &s.status {
                    run::StepStatus::WaitingChild { run } => Some((run.clone(), asking)),
                    _ => None,
                })
                .collect()
        };
        let mut stack = children(v);
        while let Some((child, parent_asking)) = stack.pop() {
            let cv = match self.view(&child).await {
                Ok(cv) => cv,
                Err(ServiceError::NotFound(_)) => return Ok(true), // about to be created
                Err(e) => return Err(e),
            };
            if cv.state.status.is_finished()
                || !cv.state.is_waiting()
                || has_near_timer(&cv)
                || self.between_states(&cv).await?
            {
                return Ok(true);
            }
            if !parent_asking {
                let spec = self
                    .engine
                    .spec(&cv.meta.workflow, &cv.meta.spec_digest)
                    .await
                    .map_err(|e| ServiceError::Engine(e.to_string()))?;
                if run::open_budget_ask(&spec, &cv.state).is_some() {
                    return Ok(true);
                }
            }
            stack.extend(children(&cv));
        }
        Ok(false)
    }

    /// Whether a run whose journal says it waits on a human is still between states: a request
    /// it opened is not listed as pending yet (its record follows the journal entry), or a
    /// decision recorded in the store is not in its journal yet (the run is about to move on).
    /// A sub-workflow's budget request goes to its parent, never to the pending list.
    async fn between_states(&self, v: &RunView) -> Result<bool, ServiceError> {
        let to_parent = match &v.meta.parent {
            Some(_) => {
                let spec = self
                    .engine
                    .spec(&v.meta.workflow, &v.meta.spec_digest)
                    .await
                    .map_err(|e| ServiceError::Engine(e.to_string()))?;
                run::open_budget_ask(&spec, &v.state).map(|(r, _)| r)
            }
            None => None,
        };
        // Steps and the items of `for_each` steps.
        let open: Vec<&RequestId> = v
            .state
            .slots()
            .filter_map(|(_, s)| match &s.status {
                run::StepStatus::WaitingHuman { request } => Some(request),
                _ => None,
            })
            .chain(v.state.budget_request.as_ref().filter(|r| Some(*r) != to_parent.as_ref()))
            .collect();
        // Granted by the parent, not applied yet.
        if let Some(r) = &to_parent {
            if self.engine.store.human_decision(&v.meta.workflow, r).await?.is_some() {
                return Ok(true);
            }
        }
        if open.is_empty() {
            return Ok(false);
        }
        let pending = self.engine.store.pending_requests().await?;
        for request in open {
            if self.engine.store.human_decision(&v.meta.workflow, request).await?.is_some()
                || !pending.contains(request)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn has_near_timer(v: &RunView) -> bool {
    v.state.steps.iter().any(|s| matches!(s.status, run::StepStatus::Delaying { .. }))
}

pub async fn view(engine: &Engine, run: &RunId) -> Result<RunView, ServiceError> {
    let meta = engine.store.run_meta(run).await.map_err(|e| match e {
        StoreError::NotFound(_) => ServiceError::NotFound(run.to_string()),
        e => e.into(),
    })?;
    let spec = engine.spec(&meta.workflow, &meta.spec_digest).await.map_err(|e| ServiceError::Engine(e.to_string()))?;
    let journal = engine.store.read_journal(&meta.workflow, run).await?;
    let state = run::replay(&spec, run.clone(), &journal);
    Ok(RunView {
        step_ids: spec.spec().steps.iter().map(|s| s.id.to_string()).collect(),
        step_types: spec.spec().steps.iter().map(|s| s.ty().name()).collect(),
        escalations: run::escalations(&spec, &state),
        meta,
        state,
    })
}

/// A decision's name, as the API and the audit show it (`approve`, `extend`…).
pub fn decision_word(d: &Decision) -> String {
    serde_json::to_value(d).ok().and_then(|v| v["decision"].as_str().map(String::from)).unwrap_or_default()
}

fn check_decision(mode: HumanMode, d: &Decision) -> Result<(), ServiceError> {
    let (ok, allowed) = match mode {
        HumanMode::Approval => (
            matches!(d, Decision::Approve | Decision::Reject | Decision::Modify { .. } | Decision::Abort),
            "approve, reject, modify, abort",
        ),
        HumanMode::BudgetExtension => (
            matches!(d, Decision::Approve | Decision::Extend { .. } | Decision::Reject | Decision::Abort),
            "approve, extend, reject, abort",
        ),
        HumanMode::Guidance => {
            (matches!(d, Decision::Approve | Decision::Modify { .. } | Decision::Abort), "approve, modify, abort")
        }
        HumanMode::ToolAuthorisation => (
            matches!(d, Decision::AllowOnce | Decision::AllowForRun | Decision::Deny { .. } | Decision::Abort),
            "allow_once, allow_for_run, deny (with a reason), abort",
        ),
    };
    if ok {
        Ok(())
    } else {
        let decision =
            serde_json::to_value(d).ok().and_then(|v| v["decision"].as_str().map(String::from)).unwrap_or_default();
        Err(ServiceError::DecisionNotAllowed { decision, mode, allowed })
    }
}
