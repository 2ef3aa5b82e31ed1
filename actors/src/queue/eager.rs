//! Eager dispatch: a job enqueued through this process's backend also goes straight to a free
//! slot of this process's workers, so the step starts without a queue round trip (the idea of
//! Temporal's eager activity dispatch).
//!
//! The job is enqueued all the same: the queue stays the delivery that survives this process,
//! and the attempt's claim (first writer wins, see `worker.rs` in the crate root) makes the two
//! deliveries one execution — whichever claims first runs the attempt, the other finds it
//! claimed and does nothing. A job is started eagerly only when a slot is free at that moment
//! (the same slots the queue's workers take, so the process's concurrency bound holds) and the
//! workers are not stopping; otherwise the queue delivers it as before.

use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_engine::queue::StepJob;

use crate::queue::JobHandler;
use crate::queue::service::run_job;

/// A running worker set's way in for eager jobs.
#[derive(Clone)]
pub(crate) struct EagerLane {
    pub(crate) handler: Arc<dyn JobHandler>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl EagerLane {
    /// Starts `job` on a free slot as one of the set's tracked tasks; false if no slot is free
    /// or the set is stopping.
    fn try_start(&self, job: &StepJob) -> bool {
        if self.shutdown.is_cancelled() {
            return false;
        }
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            return false;
        };
        let handler = Arc::clone(&self.handler);
        let job = job.clone();
        self.tasks.spawn(async move {
            let _slot = slot;
            // Logged inside; the queue's copy of the job is deleted by whoever takes it.
            let _ = run_job(handler.as_ref(), job).await;
        });
        true
    }
}

/// Where a backend finds the lane of its process's running workers, if eager dispatch is on.
#[derive(Clone, Default)]
pub(crate) struct EagerSlot(Arc<RwLock<Option<EagerLane>>>);

impl EagerSlot {
    pub(crate) fn set(&self, lane: EagerLane) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(lane);
    }

    /// Starts as many of `jobs` as there are free slots; returns how many.
    pub(crate) fn start(&self, jobs: &[StepJob]) -> usize {
        let guard = self.0.read().unwrap_or_else(|e| e.into_inner());
        let Some(lane) = guard.as_ref() else { return 0 };
        jobs.iter().take_while(|job| lane.try_start(job)).count()
    }
}

impl std::fmt::Debug for EagerLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EagerLane").field("free_slots", &self.slots.available_permits()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EagerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = self.0.read().map(|l| l.is_some()).unwrap_or(false);
        f.debug_tuple("EagerSlot").field(&on).finish()
    }
}
