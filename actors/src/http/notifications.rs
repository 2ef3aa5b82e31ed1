//! `GET /api/notifications?limit=`: the caller's console notifications (from `notify` steps),
//! newest first (`limit` 1–200, default 50). The live stream's `notification` event says when
//! to fetch again.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::http::error::ApiError;
use crate::http::openapi::{ApiErrorDoc, NotificationsDoc};
use crate::service::Tollgate;

#[derive(Deserialize)]
pub struct Page {
    #[serde(default)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/notifications", tag = "notifications",
    params(("limit" = Option<usize>, Query, description = "1–200 (default 50)")),
    responses((status = 200, body = NotificationsDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/notifications`: the caller's console notifications, newest first.
pub async fn list(
    State(t): State<Tollgate>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    let notifications = t.engine.store.notifications(caller.name(), limit).await?;
    Ok(Json(json!({ "notifications": notifications })))
}
