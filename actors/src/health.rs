//! What a process says about its health: healthy while every part it watches is. A process
//! can look alive — answering HTTP, logging — while doing nothing useful, e.g. when its queue
//! worker died with a Redis restart; `/healthz` (see `http/health.rs`) answers from here so
//! that an orchestrator can tell.
//!
//! Today the watched part is the step worker set ([`WorkerHealth`]): a process without a
//! registered queue worker executes no steps. Run actors need no entry: a failed one is
//! restarted by the supervisor for as long as the store is away.

use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::queue::WorkerHealth;

/// This process's health; cheap to clone, shared by whoever serves it.
#[derive(Clone, Default)]
pub struct Health {
    workers: Arc<RwLock<Option<watch::Receiver<WorkerHealth>>>>,
}

/// The answer to a health check.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    /// Each watched part's own report (`step_workers`: [`WorkerHealth`]).
    pub checks: serde_json::Map<String, Value>,
}

impl Health {
    /// Watch the process's step worker set (see `queue::WorkerSet::watch_health`).
    pub fn watch_workers(&self, workers: watch::Receiver<WorkerHealth>) {
        *self.workers.write().unwrap_or_else(|e| e.into_inner()) = Some(workers);
    }

    /// Healthy when every watched part is; a process that watches nothing is healthy.
    pub fn report(&self) -> HealthReport {
        let mut checks = serde_json::Map::new();
        let mut healthy = true;
        if let Some(workers) = self.workers.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let w = workers.borrow().clone();
            healthy &= w.running;
            checks.insert("step_workers".into(), serde_json::to_value(&w).expect("health serialises"));
        }
        HealthReport { healthy, checks }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::Health;
    use crate::queue::WorkerHealth;

    #[test]
    fn healthy_only_while_the_step_workers_run() {
        let health = Health::default();
        assert!(health.report().healthy, "a process that watches nothing");
        let (workers, watched) = watch::channel(WorkerHealth::default());
        health.watch_workers(watched);
        let report = health.report();
        assert!(!report.healthy, "no worker registered yet");
        assert_eq!(report.checks["step_workers"]["running"], false);
        workers.send_modify(|w| {
            w.running = true;
            w.restarts = 1;
            w.last_error = Some("broken pipe".into());
        });
        let report = health.report();
        assert!(report.healthy);
        assert_eq!(report.checks["step_workers"]["restarts"], 1);
        assert_eq!(report.checks["step_workers"]["last_error"], "broken pipe");
    }
}
