//! `/api/requests`: the human requests waiting for a decision, and deciding them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_engine::ids::RequestId;
use tollgate_engine::money::Money;
use tollgate_engine::run::Decision;

use crate::http::error::{ApiError, Body};
use crate::http::session::Session;
use crate::service::Tollgate;

pub async fn pending(State(t): State<Tollgate>) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(t.pending().await?).unwrap_or_default()))
}

#[derive(Deserialize)]
pub struct DecisionBody {
    decision: String,
    #[serde(default)]
    /// An exact decimal: a JSON string (`"0.50"`) or number.
    amount: Option<Money>,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    comment: Option<String>,
    /// Who decides; a console session's user instead, whatever this says.
    #[serde(default)]
    by: Option<String>,
}

pub async fn decide(
    State(t): State<Tollgate>,
    session: Option<Extension<Session>>,
    Path(request): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    let by = match (session, b.by) {
        (Some(Extension(s)), _) => s.user,
        (None, Some(by)) if !by.trim().is_empty() => by,
        _ => return Err(ApiError::Request(StatusCode::UNPROCESSABLE_ENTITY, "bad_decision", "`by` (who decides) is required".into())),
    };
    let decision = match (b.decision.as_str(), b.amount, b.value) {
        ("approve", _, _) => Decision::Approve,
        ("reject", _, _) => Decision::Reject,
        ("abort", _, _) => Decision::Abort,
        ("extend", Some(a), _) if !a.is_zero() => Decision::Extend { amount: a },
        ("modify", _, Some(v)) => Decision::Modify { value: v },
        (d, _, _) => {
            let msg = format!("decision `{d}` is unknown or lacks its argument (extend needs amount > 0, modify needs value)");
            return Err(ApiError::Request(StatusCode::UNPROCESSABLE_ENTITY, "bad_decision", msg));
        }
    };
    let record = t.decide(&RequestId(request), decision, &by, b.comment).await?;
    Ok(Json(json!({"request": record.request.id, "run": record.run, "recorded": true})))
}
