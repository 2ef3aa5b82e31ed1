//! How an idle worker learns that a job may be due: wake signals plus a short poll interval.
//!
//! Measured here: an apalis 1.0 worker whose fetch came back empty only looks again at its
//! 30 s heartbeat (28 s vs 7 ms pickup) unless something polls it. apalis's answer is
//! `poll_with_interval` / `poll_with_strategy` (`PollWith`), and the apalis-sqlite README feeds
//! its update-hook stream into such a strategy. We keep that idea but not `PollWith` itself:
//! `PollWith` drains one wake signal *before* polling the backend, so a signal that arrives
//! while a fetch is already in flight is consumed by that fetch, which may have started before
//! the new job was visible; the fetch comes back empty and the job waits a whole poll interval.
//! [`Wakeable`] instead turns each signal into "make sure a fetch *starts* after now": it
//! re-polls the backend once more on each of the next two polls that come back empty, which
//! both finishes an in-flight fetch and starts a fresh one (see `kicks`).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::{Backend, BackendConfig, WireFormatBackend};
use apalis_core::worker::context::WorkerContext;
use futures::StreamExt;
use futures::channel::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

/// Fans "a job may be due" out to every local worker. Cheap and non-blocking, so it can be
/// called from SQLite's update hook (which runs on the connection's thread).
#[derive(Clone, Debug, Default)]
pub(crate) struct WakeHub {
    subscribers: Arc<Mutex<Vec<mpsc::Sender<()>>>>,
}

impl WakeHub {
    /// A receiver that yields at least once after each `notify` (signals coalesce: a worker
    /// that has not looked yet needs one wake-up, not many).
    pub(crate) fn subscribe(&self) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel(0);
        self.lock().push(tx);
        rx
    }

    pub(crate) fn notify(&self) {
        // A full channel already holds a pending wake-up; a closed one belongs to a worker that
        // has stopped.
        self.lock().retain_mut(|tx| match tx.try_send(()) {
            Ok(()) => true,
            Err(e) => e.is_full(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::Sender<()>>> {
        // The lock is never held across a panic-prone call, but a poisoned Vec of senders is
        // still a valid Vec.
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many empty polls after a wake signal get an extra backend poll: one to finish a fetch
/// that was already in flight, one to start a fetch that is sure to see the new job.
const KICKS_PER_WAKE: u8 = 2;

/// An apalis backend that also looks for jobs when woken by a [`WakeHub`] or when the poll
/// interval elapses.
pub(crate) struct Wakeable<B> {
    inner: B,
    wake: mpsc::Receiver<()>,
    interval: Interval,
    kicks: u8,
}

impl<B> Wakeable<B> {
    pub(crate) fn new(inner: B, wake: mpsc::Receiver<()>, poll_interval: Duration) -> Self {
        let mut interval = tokio::time::interval(poll_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            inner,
            wake,
            interval,
            kicks: 0,
        }
    }
}

impl<B: Backend> Backend for Wakeable<B> {
    type Task = B::Task;
    type Error = B::Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx, worker)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        // Drain (and re-register interest in) both wake sources. The interval needs no kick:
        // waking the worker is enough, because an idle apalis `Persisted` backend starts a
        // fetch on every `poll_next`.
        while let Poll::Ready(Some(())) = self.wake.poll_next_unpin(cx) {
            self.kicks = KICKS_PER_WAKE;
        }
        while self.interval.poll_tick(cx).is_ready() {}

        match self.inner.poll_next(cx, worker) {
            Poll::Pending if self.kicks > 0 => {
                self.kicks -= 1;
                self.inner.poll_next(cx, worker)
            }
            other => other,
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_close(cx, worker)
    }
}

impl<B: BackendConfig> BackendConfig for Wakeable<B> {
    type Args = B::Args;
    type Id = B::Id;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = B::Layer;

    fn config(&self) -> &Self::Config {
        self.inner.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        self.inner.middleware(worker)
    }
}

impl<B: WireFormatBackend> WireFormatBackend for Wakeable<B> {
    type Codec = B::Codec;
    type Compact = B::Compact;

    fn codec(&self) -> &Self::Codec {
        self.inner.codec()
    }
}
