//! `POST /api/events` `{name, owner?, payload?, dedup?}`: publish an event on the internal bus,
//! in the scope of `owner` (a user or group; by default the caller). The runs of that owner's
//! workflows waiting for it (an `event` step's `wait`) and its event triggers receive it;
//! `dedup` makes a retried post publish once. 202 with the event's id (`duplicate: true` when
//! the dedup key was used already), 403 for a scope the caller does not act for, 422 for an
//! invalid name, 503 while the bus is unavailable.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_engine::spec::steps::valid_event_name;
use tollgate_engine::store::StoreError;

use crate::access::Caller;
use crate::http::error::{ApiError, Body};
use crate::http::openapi::{ApiErrorDoc, EventBodyDoc, EventPublishedDoc};
use crate::service::{ServiceError, Tollgate};

/// Longest dedup key accepted.
const MAX_DEDUP: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    name: String,
    /// Whose workflows hear the event (a user or group the caller acts for); the caller by default.
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    dedup: Option<String>,
}

#[utoipa::path(post, path = "/api/events", tag = "events", request_body = EventBodyDoc,
    responses(
        (status = 202, body = EventPublishedDoc),
        (status = 403, description = "a scope the caller does not act for", body = ApiErrorDoc),
        (status = 422, description = "not an event name, or a bad dedup key", body = ApiErrorDoc),
        (status = 503, description = "the event bus is unavailable", body = ApiErrorDoc),
        (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `POST /api/events`: publish an event in the caller's scope (or `owner`'s).
pub async fn publish(
    State(t): State<Tollgate>,
    caller: Caller,
    Body(b): Body<EventBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !valid_event_name(&b.name) {
        let msg = format!(
            "`{}` is not an event name (1–200 letters, digits or `._:-/`)",
            b.name.chars().take(80).collect::<String>()
        );
        return Err(ApiError::Request(StatusCode::UNPROCESSABLE_ENTITY, "bad_event", msg));
    }
    if b.dedup.as_ref().is_some_and(|d| d.is_empty() || d.len() > MAX_DEDUP) {
        return Err(ApiError::Request(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_event",
            format!("`dedup` must be 1–{MAX_DEDUP} bytes"),
        ));
    }
    match t.emit_event_as(&caller, b.owner.as_deref(), &b.name, &b.payload, b.dedup.as_deref()).await {
        Ok(p) => Ok((StatusCode::ACCEPTED, Json(json!({"id": p.id, "at": p.at, "duplicate": p.duplicate})))),
        Err(ServiceError::Store(StoreError::Unavailable(e))) => {
            tracing::warn!("event not published, the bus is unavailable: {e}");
            Err(ApiError::Request(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the event bus is unavailable; try again".into(),
            ))
        }
        Err(e) => Err(e.into()),
    }
}
