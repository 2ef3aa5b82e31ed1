//! `/api/requests`: the human requests the caller may decide, one request with its decision,
//! and deciding. The decider recorded is the authenticated caller; a `by` in the body is
//! ignored. A second decision is refused (409) with the first one in the answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_engine::ids::RequestId;
use tollgate_engine::money::Money;
use tollgate_engine::run::Decision;

use crate::access::Caller;
use crate::http::error::{ApiError, Body};
use crate::http::openapi::{AlreadyDecidedDoc, ApiErrorDoc, DecisionRecordedDoc, RequestDoc};
use crate::service::Tollgate;

#[utoipa::path(get, path = "/api/requests", tag = "requests", responses((status = 200, body = Vec<RequestDoc>), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/requests`: pending requests the caller may decide (assigned or escalated to
/// them or their groups, or of workflows they own), oldest first.
pub async fn pending(State(t): State<Tollgate>, caller: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(t.pending_for(&caller).await?).unwrap_or_default()))
}

#[utoipa::path(get, path = "/api/requests/{request}", tag = "requests", params(("request" = String, Path)),
    responses((status = 200, body = RequestDoc), (status = 404, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/requests/{request}`: the request, its times and assignees, and its decision once
/// made (404 for a request the caller may not see).
pub async fn show(
    State(t): State<Tollgate>,
    caller: Caller,
    Path(request): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(t.request_as(&caller, &RequestId(request)).await?).unwrap_or_default()))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DecisionBody {
    /// `approve`, `reject`, `extend` (with `amount`), `modify` (with `value`), `abort`; for a
    /// tool authorisation: `allow_once`, `allow_for_run`, `deny` (with `reason`), `abort`.
    decision: String,
    #[serde(default)]
    /// An exact decimal: a JSON string (`"0.50"`) or number.
    #[schema(value_type = Option<String>)]
    amount: Option<Money>,
    /// The corrected output (any JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    value: Option<Value>,
    #[serde(default)]
    comment: Option<String>,
    /// For `deny` (tool authorisation): why, returned to the model as the tool's result.
    #[serde(default)]
    reason: Option<String>,
}

/// Parse a decision word with its argument.
pub fn parse_decision(
    word: &str,
    amount: Option<Money>,
    value: Option<Value>,
    reason: Option<String>,
) -> Result<Decision, ApiError> {
    if word == "deny" {
        return match reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()) {
            Some(reason) => Ok(Decision::Deny { reason }),
            None => Err(ApiError::Request(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_decision",
                "`deny` needs a `reason`: the model receives it".into(),
            )),
        };
    }
    Ok(match (word, amount, value) {
        ("approve", _, _) => Decision::Approve,
        ("reject", _, _) => Decision::Reject,
        ("abort", _, _) => Decision::Abort,
        ("allow_once", _, _) => Decision::AllowOnce,
        ("allow_for_run", _, _) => Decision::AllowForRun,
        ("extend", Some(a), _) if !a.is_zero() => Decision::Extend { amount: a },
        ("modify", _, Some(v)) => Decision::Modify { value: v },
        (d, _, _) => {
            let msg = format!(
                "decision `{d}` is unknown or lacks its argument (extend needs amount > 0, modify needs value; known: approve, reject, extend, modify, abort, allow_once, allow_for_run, deny)"
            );
            return Err(ApiError::Request(StatusCode::UNPROCESSABLE_ENTITY, "bad_decision", msg));
        }
    })
}

#[utoipa::path(post, path = "/api/requests/{request}/decision", tag = "requests", params(("request" = String, Path)), request_body = DecisionBody,
    responses((status = 200, body = DecisionRecordedDoc), (status = 403, description = "self-approval forbidden", body = ApiErrorDoc), (status = 404, body = ApiErrorDoc),
        (status = 409, description = "already decided: the first decision", body = AlreadyDecidedDoc), (status = 422, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `POST /api/requests/{request}/decision`.
pub async fn decide(
    State(t): State<Tollgate>,
    caller: Caller,
    Path(request): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    let decision = parse_decision(&b.decision, b.amount, b.value, b.reason)?;
    let record = t.decide_as(&caller, &RequestId(request), decision, b.comment).await?;
    Ok(Json(json!({"request": record.request.id, "run": record.run, "recorded": true, "by": caller.name()})))
}
