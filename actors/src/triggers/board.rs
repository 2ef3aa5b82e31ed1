//! [`TriggerBoard`]: what this process knows about its triggers — each one's health and
//! cursor (saved to the store by the supervisor's flush), and the HTTP endpoints of webhook and
//! upload triggers, which the `/hooks` routes look up. It lives in the engine's shared context.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tollgate_engine::ids::{TriggerId, WorkflowId};
use tollgate_engine::spec::ValidatedSpec;
use tollgate_engine::spec::triggers::{BodySchema, TriggerSpec};
use tollgate_engine::trigger::{TriggerHealth, TriggerStateRecord};

use crate::system::now_ms;
use crate::triggers::fire::FireResult;
use crate::triggers::source::TriggerContext;

/// A webhook or upload trigger as its HTTP route needs it.
pub struct Endpoint {
    pub spec: Arc<ValidatedSpec>,
    pub trigger: TriggerSpec,
    /// The trigger's secret (webhook signatures).
    pub secret: Vec<u8>,
    /// The webhook's body schema, compiled.
    pub schema: Option<Arc<BodySchema>>,
    /// The running trigger (fires go through it).
    pub context: TriggerContext,
}

/// One trigger's status, as `GET /api/triggers` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TriggerStatus {
    pub workflow: WorkflowId,
    pub trigger: TriggerId,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub health: TriggerHealth,
}

struct Entry {
    kind: String,
    health: TriggerHealth,
    cursor: Value,
    /// Changed since the last flush to the store.
    dirty: bool,
    endpoint: Option<Arc<Endpoint>>,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<(WorkflowId, TriggerId), Entry>,
    history_ttl: Option<Duration>,
}

#[derive(Clone, Default)]
pub struct TriggerBoard {
    inner: Arc<RwLock<Inner>>,
}

impl TriggerBoard {
    fn with<R>(&self, wf: &WorkflowId, trigger: &TriggerId, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let mut inner = self.inner.write().expect("trigger board lock");
        inner.entries.get_mut(&(wf.clone(), trigger.clone())).map(|e| {
            e.dirty = true;
            f(e)
        })
    }

    /// The fire history's retention, set when triggers start.
    pub fn history_ttl(&self) -> Duration {
        self.inner.read().expect("trigger board lock").history_ttl.unwrap_or(Duration::from_secs(7 * 24 * 3600))
    }

    pub fn set_history_ttl(&self, ttl: Duration) {
        self.inner.write().expect("trigger board lock").history_ttl = Some(ttl);
    }

    /// Enter a trigger, starting from its saved state (counters, cursor) if it has one.
    pub fn register(&self, wf: &WorkflowId, trigger: &TriggerId, kind: &str, saved: Option<TriggerStateRecord>) {
        let mut inner = self.inner.write().expect("trigger board lock");
        let (health, cursor) = saved.map(|s| (s.health, s.cursor)).unwrap_or_default();
        let health = TriggerHealth { connected: false, ..health };
        inner.entries.entry((wf.clone(), trigger.clone())).or_insert(Entry {
            kind: kind.to_string(),
            health,
            cursor,
            dirty: true,
            endpoint: None,
        });
    }

    pub fn set_connected(&self, wf: &WorkflowId, trigger: &TriggerId, connected: bool) {
        self.with(wf, trigger, |e| e.health.connected = connected);
    }

    pub fn error(&self, wf: &WorkflowId, trigger: &TriggerId, error: &str) {
        self.with(wf, trigger, |e| e.health.last_error = Some((now_ms(), error.to_string())));
    }

    pub fn restarted(&self, wf: &WorkflowId, trigger: &TriggerId) {
        self.with(wf, trigger, |e| e.health.restarts += 1);
    }

    /// A delivery refused before any fire (bad signature): counted, nothing else recorded.
    pub fn rejected(&self, wf: &WorkflowId, trigger: &TriggerId) {
        self.with(wf, trigger, |e| e.health.rejected += 1);
    }

    pub(crate) fn fired(&self, wf: &WorkflowId, trigger: &TriggerId, result: &FireResult) {
        self.with(wf, trigger, |e| {
            e.health.last_success = Some(now_ms());
            match result {
                FireResult::Started { .. } => e.health.started += 1,
                FireResult::Duplicate { .. } => e.health.duplicates += 1,
                FireResult::Failed { error, .. } => {
                    e.health.failed += 1;
                    e.health.last_error = Some((now_ms(), error.clone()));
                }
            }
        });
    }

    /// The source's resume point (a cron's last slot…), as last set or saved.
    pub fn cursor(&self, wf: &WorkflowId, trigger: &TriggerId) -> Value {
        let inner = self.inner.read().expect("trigger board lock");
        inner.entries.get(&(wf.clone(), trigger.clone())).map(|e| e.cursor.clone()).unwrap_or(Value::Null)
    }

    pub fn set_cursor(&self, wf: &WorkflowId, trigger: &TriggerId, cursor: Value) {
        self.with(wf, trigger, |e| e.cursor = cursor);
    }

    pub fn set_endpoint(&self, wf: &WorkflowId, trigger: &TriggerId, endpoint: Option<Arc<Endpoint>>) {
        self.with(wf, trigger, |e| e.endpoint = endpoint);
    }

    /// The HTTP endpoint of a running webhook or upload trigger.
    pub fn endpoint(&self, wf: &WorkflowId, trigger: &TriggerId) -> Option<Arc<Endpoint>> {
        let inner = self.inner.read().expect("trigger board lock");
        inner.entries.get(&(wf.clone(), trigger.clone())).and_then(|e| e.endpoint.clone())
    }

    pub fn health(&self, wf: &WorkflowId, trigger: &TriggerId) -> Option<TriggerHealth> {
        let inner = self.inner.read().expect("trigger board lock");
        inner.entries.get(&(wf.clone(), trigger.clone())).map(|e| e.health.clone())
    }

    /// Every trigger of this process.
    pub fn list(&self) -> Vec<TriggerStatus> {
        let inner = self.inner.read().expect("trigger board lock");
        inner
            .entries
            .iter()
            .map(|((w, t), e)| TriggerStatus {
                workflow: w.clone(),
                trigger: t.clone(),
                kind: e.kind.clone(),
                health: e.health.clone(),
            })
            .collect()
    }

    /// The states changed since the last call, to save.
    pub fn take_dirty(&self, holder: &str) -> Vec<TriggerStateRecord> {
        let mut inner = self.inner.write().expect("trigger board lock");
        inner
            .entries
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|((w, t), e)| {
                e.dirty = false;
                TriggerStateRecord {
                    workflow: w.clone(),
                    trigger: t.clone(),
                    kind: e.kind.clone(),
                    health: e.health.clone(),
                    cursor: e.cursor.clone(),
                    holder: holder.to_string(),
                    updated_at: now_ms(),
                }
            })
            .collect()
    }

    /// Mark states dirty again (their save failed).
    pub fn mark_dirty(&self, states: &[TriggerStateRecord]) {
        for s in states {
            self.with(&s.workflow, &s.trigger, |_| ());
        }
    }
}
