//! `GET /api/stream`: a live notification stream (Server-Sent Events) of what concerns the
//! caller — a new request they may decide (`request`), an escalation paging them or anyone on
//! a request they see (`paged`), a decision (`decided`), a step of a run of theirs changing
//! status (`step`), a run of theirs finishing (`run`), a `notify` step's notification for
//! them (`notification`: fetch `GET /api/notifications`). Each event's data is JSON with ids
//! (`run`, `request`, `notification`) and, for `request`, the request.
//!
//! The stream carries no history: its first event is `hello` (with a 1 s reconnection delay),
//! on which a client (the console) fetches `GET /api/requests` — when it connects and on every
//! reconnect — then applies events. A client too slow to keep up gets a `lagged` event (some
//! events were dropped) and should re-fetch the same way. The stream ends when the server
//! begins to shut down ([`Shutdown`]), so an open console never holds a graceful stop up.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tollgate_engine::ids::RequestId;

use crate::access::Caller;
use crate::http::openapi::ApiErrorDoc;
use crate::service::Tollgate;
use crate::system::RunUpdate;

/// Cancelled when the server begins to shut down: live streams end then.
#[derive(Clone, Default)]
pub struct Shutdown(pub CancellationToken);

#[utoipa::path(get, path = "/api/stream", tag = "requests",
    responses((status = 200, description = "Server-Sent Events: `hello` first, then `request`, `paged`, `decided`, `step`, `run`, `notification`, `lagged`; data is JSON", content_type = "text/event-stream", body = String), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
pub async fn stream(
    State(t): State<Tollgate>,
    caller: Caller,
    shutdown: Option<Extension<Shutdown>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stop = shutdown.map(|Extension(s)| s.0).unwrap_or_default();
    // Subscribed before `hello` is sent: whatever happens after the client's re-fetch is seen.
    let rx = t.engine.updates.subscribe();
    let hello = stream::once(async { Ok(Event::default().event("hello").retry(Duration::from_secs(1)).data("{}")) });
    let events = stream::unfold((t, caller, rx), |(t, caller, mut rx)| async move {
        loop {
            let update = match rx.recv().await {
                Ok(u) => u,
                Err(RecvError::Lagged(n)) => {
                    let e = Event::default().event("lagged").data(json!({"missed": n}).to_string());
                    return Some((Ok(e), (t, caller, rx)));
                }
                Err(RecvError::Closed) => return None,
            };
            if let Some(e) = event_for(&t, &caller, update).await {
                return Some((Ok(e), (t, caller, rx)));
            }
        }
    });
    Sse::new(hello.chain(events).take_until(stop.cancelled_owned()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The event `update` makes for `caller`, if it concerns them.
pub async fn event_for(t: &Tollgate, caller: &Caller, update: RunUpdate) -> Option<Event> {
    let visible = |id: &RequestId| {
        let id = id.clone();
        async move { t.request_as(caller, &id).await.ok() }
    };
    let (name, data) = match update {
        RunUpdate::HumanRequested { run, request } => {
            let view = visible(&request.id).await?;
            ("request", json!({"run": run, "request": view.record.request, "created_at": view.record.created_at}))
        }
        RunUpdate::HumanPaged { run, request, to } => {
            visible(&request).await?;
            ("paged", json!({"run": run, "request": request, "to": to, "you": caller.is(&to)}))
        }
        RunUpdate::Decided { run, request, by, by_policy } => {
            visible(&request).await?;
            ("decided", json!({"run": run, "request": request, "by": by, "by_policy": by_policy}))
        }
        RunUpdate::Finished { run, status } => {
            t.view_as(caller, &run).await.ok()?;
            ("run", json!({"run": run, "status": status.label()}))
        }
        RunUpdate::Step { run, step, status, attempt } => {
            // The run's owner only (one small record), not its journal: steps change often.
            let meta = t.engine.store.run_meta(&run).await.ok()?;
            if !caller.sees(meta.owner.as_str()) {
                return None;
            }
            ("step", json!({"run": run, "step": step, "status": status, "attempt": attempt}))
        }
        RunUpdate::Notified { run, notification, recipients } => {
            if !recipients.iter().any(|r| r == caller.name()) {
                return None;
            }
            ("notification", json!({"run": run, "notification": notification}))
        }
    };
    Some(Event::default().event(name).data(data.to_string()))
}
