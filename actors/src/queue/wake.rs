//! How an idle worker learns that a job may be due: wake signals plus a short poll interval.
//!
//! Measured here: an apalis 1.0 worker whose fetch came back empty only looks again at its
//! 30 s heartbeat (28 s vs 7 ms pickup) unless something polls it. apalis's answer is
//! `poll_with_interval` / `poll_with_strategy` (`PollWith`), and the apalis-sqlite README feeds
//! its update-hook stream into such a strategy. We keep that idea but not `PollWith` itself:
//! `PollWith` drains one wake signal *before* polling the backend, so a signal that arrives
//! while a fetch is already in flight is consumed by that fetch, which may have started before
//! the new job was visible; the fetch comes back empty and the job waits a whole poll interval.
//!
//! A fetch that was sent before the new job became visible must therefore be *finished* when
//! the signal is handled; then the poll that drains the signal either completes that fetch
//! (it comes back empty: [`Wakeable`] polls once more, which starts a fresh fetch) or starts a
//! fresh one itself, and a fresh fetch sees the job. apalis's backends do not say whether a
//! fetch is in flight, so the guarantee comes from where signals are sent:
//! - Redis, same process: the producer pushes on the connection the worker fetches on, and
//!   signals once the push's reply is back. Replies on one connection come in request order,
//!   so every fetch sent before the push has its reply by then.
//! - Redis, another process: the relay (`redis.rs`) receives the published signal on its own
//!   connection, so it first sends a `PING` on the fetch connection and signals once that
//!   reply is back — the same ordering, as a barrier.
//! - SQLite: the update hook fires while the writer holds the pool's only connection; a fetch
//!   (one transaction on that connection) has either finished, connection released, or not
//!   yet begun, and then runs after the insert commits.
//!
//! A signal therefore gets at most one extra poll, in the same call that drains it. Counting
//! "kicks" across calls (an earlier version) lost wake-ups: polls of an in-flight fetch that
//! the worker made for other reasons (a job finishing) used the kicks up before the fetch came
//! back empty — `queue::tests::redis::wake_up_crosses_processes` failed with "job 7 not woken".

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

/// An apalis backend that also looks for jobs when woken by a [`WakeHub`] or when the poll
/// interval elapses.
pub(crate) struct Wakeable<B> {
    inner: B,
    wake: mpsc::Receiver<()>,
    interval: Interval,
}

impl<B> Wakeable<B> {
    pub(crate) fn new(inner: B, wake: mpsc::Receiver<()>, poll_interval: Duration) -> Self {
        let mut interval = tokio::time::interval(poll_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { inner, wake, interval }
    }
}

impl<B: Backend> Backend for Wakeable<B> {
    type Task = B::Task;
    type Error = B::Error;

    fn poll_ready(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx, worker)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        // Drain (and re-register interest in) both wake sources. The interval needs no extra
        // poll: waking the worker is enough, because an idle apalis `Persisted` backend starts
        // a fetch on every `poll_next`.
        let mut signalled = false;
        while let Poll::Ready(Some(())) = self.wake.poll_next_unpin(cx) {
            signalled = true;
        }
        while self.interval.poll_tick(cx).is_ready() {}

        match self.inner.poll_next(cx, worker) {
            // Either a fetch is in flight that was sent after the job became visible (see the
            // module doc), and this is a no-op, or the poll above completed an earlier fetch
            // that came back empty, and this starts a fresh one.
            Poll::Pending if signalled => self.inner.poll_next(cx, worker),
            other => other,
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
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
