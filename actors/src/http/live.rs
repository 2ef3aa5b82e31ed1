//! `GET /api/live`: server-sent events for consoles — `request` (a run asks a human), `decided`
//! (a decision was recorded), `step` (a step changed status), `run` (a run finished), and
//! `resync` when this stream fell behind and skipped updates. Events carry ids and statuses,
//! never outputs; they say what changed, and the console re-reads what it shows. The stream's
//! first event is `hello` (with a 1 s reconnection delay): a console re-fetches everything on
//! every (re)connection, so nothing missed while it was away is lost. It ends when the server
//! shuts down, so it never holds a graceful shutdown up.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures::stream::{self, Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::service::Tollgate;
use crate::system::RunUpdate;

/// Cancelled when the server begins to shut down: live streams end then.
#[derive(Clone, Default)]
pub struct Shutdown(pub CancellationToken);

fn event_for(u: &RunUpdate) -> Event {
    let (name, data) = match u {
        RunUpdate::HumanRequested { run, request } => ("request", json!({"run": run, "request": request.id, "mode": request.mode, "step": request.step})),
        RunUpdate::HumanDecided { run, request, by } => ("decided", json!({"run": run, "request": request, "by": by})),
        RunUpdate::Step { run, step, status, attempt } => ("step", json!({"run": run, "step": step, "status": status, "attempt": attempt})),
        RunUpdate::Finished { run, status } => ("run", json!({"run": run, "status": status.label()})),
    };
    Event::default().event(name).data(data.to_string())
}

pub async fn stream(State(t): State<Tollgate>, shutdown: Option<Extension<Shutdown>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stop = shutdown.map(|Extension(s)| s.0).unwrap_or_default();
    let updates = t.engine.updates.subscribe();
    let hello = stream::once(async { Ok(Event::default().event("hello").retry(Duration::from_secs(1)).data("{}")) });
    let events = stream::unfold(updates, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(u) => event_for(&u),
            Err(RecvError::Lagged(n)) => Event::default().event("resync").data(json!({"skipped": n}).to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    let events = hello.chain(events).take_until(stop.cancelled_owned());
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
