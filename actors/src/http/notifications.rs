//! `GET /api/notifications?limit=`: the caller's console notifications (from `notify` steps),
//! newest first (`limit` 1–200, default 50). The live stream's `notification` event says when
//! to fetch again.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::Caller;
use crate::http::error::ApiError;
use crate::service::Tollgate;

#[derive(Deserialize)]
pub struct Page {
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn list(State(t): State<Tollgate>, caller: Caller, Query(page): Query<Page>) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    let notifications = t.engine.store.notifications(caller.name(), limit).await?;
    Ok(Json(json!({ "notifications": notifications })))
}
