//! Who may see and decide what: every read and decision on behalf of a [`Caller`] goes
//! through here, for the HTTP API and the CLI alike. What a caller may not see does not
//! exist for them (`NotFound`, so a 404 — never a 403 that confirms the run is there).
//!
//! A workflow is owned by its spec's `owner`: a user or a group. A user sees (and decides)
//! the runs and requests of workflows owned by them or by one of their groups, and requests
//! assigned (or escalated) to them or one of their groups; an admin sees everything.

use serde::Serialize;
use serde_json::Value;
use tollgate_engine::ids::{RequestId, RunId};
use tollgate_engine::run::Decision;
use tollgate_engine::spec::ValidatedSpec;
use tollgate_engine::store::{HumanDecisionRecord, HumanRequestRecord, RunPage};
use tollgate_engine::users::{Role, User};

use crate::service::{RunView, ServiceError, Tollgate};
use crate::system::now_ms;

/// Who is asking.
#[derive(Clone, Debug)]
pub enum Caller {
    /// An authenticated user.
    User(User),
    /// The local operator: the CLI before any user exists, or the admin API in its
    /// loopback-only development mode (no `admin_token`). Sees everything.
    Local(String),
}

impl Caller {
    /// The name recorded as the decider, the canceller, the starter.
    pub fn name(&self) -> &str {
        match self {
            Caller::User(u) => &u.name,
            Caller::Local(n) => n,
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Caller::User(u) => u.role == Role::Admin,
            Caller::Local(_) => true,
        }
    }

    /// Whether the caller sees what `owner` owns.
    pub fn sees(&self, owner: &str) -> bool {
        match self {
            Caller::User(u) => u.sees(owner),
            Caller::Local(_) => true,
        }
    }

    /// Whether `who` (an assignee: a user or group) names the caller.
    pub fn is(&self, who: &str) -> bool {
        match self {
            Caller::User(u) => u.acts_for(who),
            Caller::Local(n) => n == who,
        }
    }

    /// Whether the caller may see and decide `request` of a workflow owned by `owner`.
    pub fn may_decide(&self, owner: &str, request: &HumanRequestRecord) -> bool {
        self.sees(owner)
            || request.request.assignee.as_deref().is_some_and(|a| self.is(a))
            || request.escalated_to.iter().any(|a| self.is(a))
    }
}

/// A request as its assignees see it: the record, and its decision once there is one.
#[derive(Clone, Debug, Serialize)]
pub struct RequestView {
    #[serde(flatten)]
    pub record: HumanRequestRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<HumanDecisionRecord>,
    /// The request's escalation, if its step (or the budget) declares one: each level, when
    /// it is due, whom it pages or which default it applies, and whether it has fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Value>,
}

impl Tollgate {
    /// Start a run of `spec` on the caller's behalf: the spec's owner must be the caller or one
    /// of their groups (an admin may start any).
    pub async fn start_run_as(
        &self,
        caller: &Caller,
        spec: &ValidatedSpec,
        params: &serde_json::Map<String, Value>,
    ) -> Result<RunId, ServiceError> {
        let owner = spec.spec().owner.as_str();
        if !caller.is_admin() && !caller.is(owner) {
            return Err(ServiceError::Forbidden(format!(
                "workflow `{}` is owned by `{owner}`; you ({}) may start workflows owned by yourself or one of your groups",
                spec.spec().id,
                caller.name()
            )));
        }
        self.start_run_by(spec, params, Some(caller.name())).await
    }

    /// Publish an event on the caller's behalf (`POST /api/events`) in `owner`'s scope — by
    /// default the caller's own. Only the owner's runs and triggers hear it, so the caller must
    /// act for that owner (be it, or be in its group), as for starting its workflows; an admin
    /// may publish in any scope.
    pub async fn emit_event_as(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        name: &str,
        payload: &Value,
        dedup: Option<&str>,
    ) -> Result<tollgate_engine::events::Published, ServiceError> {
        let owner = owner.unwrap_or(caller.name());
        if !caller.is_admin() && !caller.is(owner) {
            return Err(ServiceError::Forbidden(format!(
                "events of `{owner}` reach its workflows only; you ({}) may publish as yourself or one of your groups",
                caller.name()
            )));
        }
        self.emit_event(owner, name, payload, dedup).await
    }

    /// The run, if the caller may see it; otherwise `NotFound`, as for a run that does not exist.
    pub async fn view_as(&self, caller: &Caller, run: &RunId) -> Result<RunView, ServiceError> {
        let v = self.view(run).await?;
        if !caller.sees(v.meta.owner.as_str()) {
            return Err(ServiceError::NotFound(run.to_string()));
        }
        Ok(v)
    }

    /// The run's audit trail (`crate::audit`), if the caller may see the run.
    pub async fn audit_as(&self, caller: &Caller, run: &RunId) -> Result<Vec<Value>, ServiceError> {
        let v = self.view_as(caller, run).await?;
        let spec = self
            .engine
            .spec(&v.meta.workflow, &v.meta.spec_digest)
            .await
            .map_err(|e| ServiceError::Engine(e.to_string()))?;
        let journal = self.engine.store.read_journal(&v.meta.workflow, run).await?;
        Ok(crate::audit::audit_events(&spec, &journal))
    }

    /// The run's signed receipt (`crate::receipt`), if the caller may see the run.
    pub async fn receipt_as(
        &self,
        caller: &Caller,
        run: &RunId,
    ) -> Result<tollgate_engine::receipt::Receipt, ServiceError> {
        self.view_as(caller, run).await?;
        crate::receipt::build(&self.engine, run).await
    }

    pub async fn cancel_as(&self, caller: &Caller, run: &RunId, reason: &str) -> Result<(), ServiceError> {
        let meta = self.engine.store.run_meta(run).await.map_err(|_| ServiceError::NotFound(run.to_string()))?;
        if !caller.sees(meta.owner.as_str()) {
            return Err(ServiceError::NotFound(run.to_string()));
        }
        self.cancel(run, caller.name(), reason).await
    }

    /// A page of the runs the caller sees, newest first (pages are filled across the index,
    /// so a user with few runs among many still gets full pages).
    pub async fn run_page_as(
        &self,
        caller: &Caller,
        after: Option<&RunId>,
        limit: usize,
    ) -> Result<RunPage, ServiceError> {
        let mut out = Vec::new();
        let mut cursor = after.cloned();
        loop {
            let page = self.engine.store.run_page(cursor.as_ref(), limit).await?;
            let exhausted = page.next.is_none();
            for l in page.runs {
                if out.len() == limit {
                    let next = out.last().map(|l: &tollgate_engine::store::RunListing| l.meta.run.clone());
                    return Ok(RunPage { runs: out, next });
                }
                cursor = Some(l.meta.run.clone());
                if caller.sees(l.meta.owner.as_str()) {
                    out.push(l);
                }
            }
            if exhausted {
                return Ok(RunPage { runs: out, next: None });
            }
            if out.len() == limit {
                return Ok(RunPage { runs: out, next: cursor });
            }
        }
    }

    /// One request, if the caller may see it.
    pub async fn request_as(&self, caller: &Caller, id: &RequestId) -> Result<RequestView, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("request {id}"));
        let record = self.engine.store.human_request(id).await.map_err(|_| not_found())?;
        let owner = self.engine.store.workflow_owner(&record.workflow).await?;
        if !caller.may_decide(owner.as_str(), &record) {
            return Err(not_found());
        }
        let decision = self.engine.store.human_decision(&record.workflow, id).await?;
        let escalation = crate::service::view(&self.engine, &record.run)
            .await?
            .escalations
            .into_iter()
            .find(|e| e["request"] == serde_json::json!(id));
        Ok(RequestView { record, decision, escalation })
    }

    /// The pending requests the caller may decide, oldest first.
    pub async fn pending_for(&self, caller: &Caller) -> Result<Vec<HumanRequestRecord>, ServiceError> {
        let mut out = Vec::new();
        for r in self.pending().await? {
            let owner = self.engine.store.workflow_owner(&r.workflow).await?;
            if caller.may_decide(owner.as_str(), &r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Decide a request as the caller: it must be one they may see (else `NotFound`); the
    /// decider recorded is the caller, never a name the request carries.
    pub async fn decide_as(
        &self,
        caller: &Caller,
        id: &RequestId,
        decision: Decision,
        comment: Option<String>,
    ) -> Result<HumanRequestRecord, ServiceError> {
        let view = self.request_as(caller, id).await?;
        let d =
            HumanDecisionRecord { decision, by: caller.name().to_string(), comment, by_policy: false, at: now_ms() };
        self.record_decision(view.record, d).await
    }
}
