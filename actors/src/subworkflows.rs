//! Sub-workflows (`workflow.run`) in the running system: which spec a `workflow:` id names,
//! starting a child run for its parent, reading how a child stands back into its parent's
//! journal, and the messages between the two runs. What the parent does with them is
//! `tollgate_engine::run::subworkflow` (pure).
//!
//! A child tells its parent when it finishes or asks for budget ([`RunMsg::ChildChanged`],
//! routed through the supervisor, which wakes a passivated parent); the parent then reads the
//! child's journal. Nothing depends on that message arriving: a parent reads its children
//! when it starts (recovery, wake-up), on every reconcile tick while live, and before it
//! passivates — so a child that finished in between is found. A parent that ended first stays
//! live, reading the children it cancelled the same way, until their ends (and spend) are in
//! its journal; a child counts as ended for its parent only once it has settled its own.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ractor::ActorRef;
use serde_json::Value;
use tollgate_engine::ids::{RequestId, RunId, StepId, WorkflowId};
use tollgate_engine::money::Money;
use tollgate_engine::run::{self, ChildOutcome, Decision, Event, ParentLink, RunStatus};
use tollgate_engine::spec::{ValidatedSpec, validate};
use tollgate_engine::step::StepError;
use tollgate_engine::store::{CancelRequest, HumanDecisionRecord, RunMeta, StoreError};

use crate::catalogue::Catalogue;

use crate::run_actor::RunMsg;
use crate::supervisor::SupervisorMsg;
use crate::system::{Engine, now_ms};

/// The workflows a `workflow.run` step may name: the workflow catalogue (shipped templates,
/// `[catalogue]` files and directories) and specs added in process (by tests, or a program
/// embedding the engine), which take precedence.
#[derive(Default)]
pub struct KnownWorkflows {
    added: RwLock<HashMap<WorkflowId, Arc<ValidatedSpec>>>,
}

impl KnownWorkflows {
    /// Make `spec` the workflow its id names.
    pub fn add(&self, spec: ValidatedSpec) {
        self.added.write().expect("workflows lock").insert(spec.spec().id.clone(), Arc::new(spec));
    }

    /// The spec `id` names, if any.
    pub fn get(&self, catalogue: &Catalogue, id: &WorkflowId) -> Option<Arc<ValidatedSpec>> {
        if let Some(s) = self.added.read().expect("workflows lock").get(id) {
            return Some(s.clone());
        }
        catalogue.get(id.as_str()).ok().map(|e| e.spec.clone())
    }
}

impl Engine {
    /// The spec a `workflow.run` step's `workflow:` names, if any.
    pub fn workflow(&self, id: &WorkflowId) -> Option<Arc<ValidatedSpec>> {
        self.workflows.get(&self.catalogue, id)
    }
}

fn failed(step: &StepId, child: &RunId, error: StepError) -> Event {
    Event::ChildFinished {
        step: step.clone(),
        child: child.clone(),
        outcome: ChildOutcome::Failed { error },
        cost: Money::ZERO,
        at: now_ms(),
    }
}

/// Start the child run `child` of step `step` (or, if it exists, read how it stands): the
/// workflow from the catalogue, owned by the parent's owner, its parameters checked against its
/// declaration. What cannot start is journaled as the step's failure, naming the reason.
pub async fn start_child(
    engine: &Engine,
    supervisor: &ActorRef<SupervisorMsg>,
    parent_meta: &RunMeta,
    step: &StepId,
    child: &RunId,
    workflow: &WorkflowId,
    params: &Value,
    link: ParentLink,
) -> Result<Option<Event>, StoreError> {
    match engine.store.run_meta(child).await {
        Ok(_) => return child_event(engine, step, child).await,
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let Some(found) = engine.workflow(workflow) else {
        let e =
            StepError::permanent("workflow_not_found", format!("no workflow `{workflow}` in the workflow catalogue"));
        return Ok(Some(failed(step, child, e)));
    };
    // The child belongs to whoever owns the parent.
    let mut raw = found.spec().clone();
    raw.owner = parent_meta.owner.clone();
    let spec = match validate(raw) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Some(failed(
                step,
                child,
                StepError::permanent("workflow_not_found", format!("workflow `{workflow}` does not validate: {e}")),
            )));
        }
    };
    let given = params.as_object().cloned().unwrap_or_default();
    let bound = match spec.bind_params(&given) {
        Ok(p) => p,
        Err(e) => {
            let why = e
                .to_string()
                .replace("invalid workflow spec", &format!("sub-workflow `{workflow}`: invalid parameters"));
            return Ok(Some(failed(step, child, StepError::permanent("bad_params", why))));
        }
    };
    let digest = match engine.store.register_workflow(spec.spec()).await {
        Ok(d) => d,
        Err(StoreError::Forbidden(why)) => {
            return Ok(Some(failed(step, child, StepError::permanent("workflow_not_found", why))));
        }
        Err(e) => return Err(e),
    };
    let meta = RunMeta {
        run: child.clone(),
        workflow: workflow.clone(),
        version: spec.spec().version,
        spec_digest: digest,
        owner: parent_meta.owner.clone(),
        params: bound,
        created_at: now_ms(),
        started_by: parent_meta.started_by.clone(),
        trigger: None,
        parent: Some(link),
    };
    match engine.store.create_run(&meta).await {
        Ok(()) | Err(StoreError::Forbidden(_)) => {} // created by an earlier try of this start
        Err(e) => return Err(e),
    }
    let _ = supervisor.send_message(SupervisorMsg::Ensure { run: child.clone(), reply: None });
    Ok(None)
}

/// How the child run stands, as an event for its parent's step: finished (its output or
/// error, and what it spent), short of budget (its open request), or nothing yet.
pub async fn child_event(engine: &Engine, step: &StepId, child: &RunId) -> Result<Option<Event>, StoreError> {
    let view = match crate::service::view(engine, child).await {
        Ok(v) => v,
        Err(crate::service::ServiceError::Store(e)) => return Err(e),
        Err(crate::service::ServiceError::NotFound(_)) => return Ok(None), // not created yet
        Err(e) => return Err(StoreError::Unavailable(e.to_string())),
    };
    let spec = engine
        .spec(&view.meta.workflow, &view.meta.spec_digest)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let state = &view.state;
    let wf = &view.meta.workflow;
    if state.status.is_finished() && !state.is_settled() {
        return Ok(None); // ended, but what its own cancelled children spent is not in yet
    }
    let cost = state.budget.spent;
    let outcome = match &state.status {
        RunStatus::Succeeded => ChildOutcome::Succeeded { output: run::child_output(&spec, state) },
        RunStatus::Failed { reason } => ChildOutcome::Failed {
            error: StepError::permanent(
                "child_failed",
                format!("sub-workflow `{wf}` (run {child}) failed: {}", reason.message),
            ),
        },
        RunStatus::Cancelled { by, reason } => ChildOutcome::Failed {
            error: StepError::permanent(
                "child_cancelled",
                format!("sub-workflow `{wf}` (run {child}) was cancelled by {by}: {reason}"),
            ),
        },
        RunStatus::Pending | RunStatus::Running => {
            if let Some((request, amount)) = run::open_budget_ask(&spec, state) {
                // Granted already (the child has not applied it yet): nothing new.
                if engine.store.human_decision(wf, &request).await?.is_none() {
                    return Ok(Some(Event::ChildBudgetAsked {
                        step: step.clone(),
                        child: child.clone(),
                        request,
                        amount,
                        at: now_ms(),
                    }));
                }
            }
            return Ok(None);
        }
    };
    Ok(Some(Event::ChildFinished { step: step.clone(), child: child.clone(), outcome, cost, at: now_ms() }))
}

/// The end of child run `child`, which its parent cancelled when the parent ended, for the
/// parent's step `step` to settle what the child spent: `None` until the child has ended and
/// settled its own children. A child that was never created spent nothing.
pub async fn cancelled_child_end(engine: &Engine, step: &StepId, child: &RunId) -> Result<Option<Event>, StoreError> {
    match engine.store.run_meta(child).await {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => {
            let e = StepError::permanent("child_cancelled", format!("sub-workflow run {child} was never started"));
            return Ok(Some(failed(step, child, e)));
        }
        Err(e) => return Err(e),
    }
    Ok(child_event(engine, step, child).await?.filter(|e| matches!(e, Event::ChildFinished { .. })))
}

/// Cancel a child run because its parent ended (recorded first, so whichever process drives
/// the child applies it).
pub async fn cancel_child(
    engine: &Engine,
    supervisor: &ActorRef<SupervisorMsg>,
    parent: &RunId,
    child: &RunId,
    reason: &str,
) -> Result<(), StoreError> {
    let meta = match engine.store.run_meta(child).await {
        Ok(m) => m,
        Err(StoreError::NotFound(_)) => return Ok(()), // never created
        Err(e) => return Err(e),
    };
    let by = format!("run {parent}");
    engine
        .store
        .request_cancel(&meta.workflow, child, &CancelRequest { by: by.clone(), reason: reason.into(), at: now_ms() })
        .await?;
    let _ = supervisor
        .send_message(SupervisorMsg::Route { run: child.clone(), msg: RunMsg::Cancel { by, reason: reason.into() } });
    Ok(())
}

/// Grant a child `amount` more budget from its parent's: decide the child's budget request.
pub async fn grant_child(
    engine: &Engine,
    supervisor: &ActorRef<SupervisorMsg>,
    parent: &RunId,
    child: &RunId,
    request: &RequestId,
    amount: Money,
) -> Result<(), StoreError> {
    let meta = engine.store.run_meta(child).await?;
    let d = HumanDecisionRecord {
        decision: Decision::Extend { amount },
        by: format!("run {parent}"),
        comment: Some("granted from the parent run's budget".into()),
        by_policy: false,
        at: now_ms(),
    };
    engine.store.decide(&meta.workflow, request, &d).await?;
    if let Some(d) = engine.store.human_decision(&meta.workflow, request).await? {
        let _ = supervisor.send_message(SupervisorMsg::Route {
            run: child.clone(),
            msg: RunMsg::HumanDecided { request: request.clone(), decision: d },
        });
    }
    Ok(())
}

/// Tell a parent run that its child changed (finished, or asks for budget) — unless the parent
/// has finished and settled (a parent that ended first waits to journal what the child it
/// cancelled spent; one that has done so has nothing to do).
pub async fn tell_parent(
    engine: &Engine,
    supervisor: &ActorRef<SupervisorMsg>,
    parent: &ParentLink,
) -> Result<(), StoreError> {
    if engine.store.run_closed(&parent.workflow, &parent.run).await?.is_none_or(|c| c.settling) {
        let _ = supervisor.send_message(SupervisorMsg::Route { run: parent.run.clone(), msg: RunMsg::ChildChanged });
    }
    Ok(())
}

/// Check, before a run starts, that every `workflow.run` step of `spec` names a workflow the
/// catalogue knows, and that no chain of sub-workflows leads back to `spec` (`a` → `b` → `a`;
/// `a` naming itself is refused by validation already). Problems are listed with their place.
pub fn check_refs(engine: &Engine, spec: &ValidatedSpec) -> Result<(), String> {
    check_refs_in(&|w| engine.workflow(w), spec)
}

/// [`check_refs`] against any lookup of workflows by id (`tollgate validate` uses the catalogue).
pub fn check_refs_in(
    lookup: &dyn Fn(&WorkflowId) -> Option<Arc<ValidatedSpec>>,
    spec: &ValidatedSpec,
) -> Result<(), String> {
    let root = spec.spec().id.clone();
    let mut problems = Vec::new();
    for (i, step) in spec.spec().steps.iter().enumerate() {
        let Some(w) = step_workflow(step) else { continue };
        let at = format!("steps[{i}] ({}).with.workflow", step.id);
        match lookup(&w) {
            None => problems.push(format!("{at}: no workflow `{w}` in the workflow catalogue")),
            Some(child) => {
                if let Some(path) = path_back(lookup, &child, &root, vec![root.clone(), w.clone()]) {
                    let chain: Vec<String> = path.iter().map(|p| p.to_string()).collect();
                    problems.push(format!("{at}: sub-workflows call each other in a cycle: {}", chain.join(" → ")));
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

fn step_workflow(step: &tollgate_engine::spec::StepSpec) -> Option<WorkflowId> {
    match &step.kind {
        tollgate_engine::spec::StepKind::Platform(p) => p.workflow_run().map(|w| w.workflow),
        _ => None,
    }
}

/// The chain from `spec` back to `root` through the catalogue, if there is one (depth-bounded).
fn path_back(
    lookup: &dyn Fn(&WorkflowId) -> Option<Arc<ValidatedSpec>>,
    spec: &ValidatedSpec,
    root: &WorkflowId,
    path: Vec<WorkflowId>,
) -> Option<Vec<WorkflowId>> {
    let mut stack = vec![(spec.spec().steps.iter().filter_map(step_workflow).collect::<Vec<_>>(), path)];
    while let Some((next, path)) = stack.pop() {
        for w in next {
            let mut p = path.clone();
            p.push(w.clone());
            if &w == root {
                return Some(p);
            }
            if path.contains(&w) || p.len() > tollgate_engine::spec::steps::MAX_WORKFLOW_DEPTH as usize + 1 {
                continue; // a cycle not through root, or too deep to matter (the run bounds it)
            }
            if let Some(s) = lookup(&w) {
                stack.push((s.spec().steps.iter().filter_map(step_workflow).collect(), p));
            }
        }
    }
    None
}
