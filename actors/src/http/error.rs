//! How the admin API answers failures (the only place status codes are chosen): 4xx with a
//! stable `error` code and a message the caller can act on; 5xx hides details and logs them.
//! Also the JSON body extractor, whose rejections (malformed JSON, a body over the size
//! limit…) are answered the same way.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use tollgate_engine::store::{HumanDecisionRecord, StoreError};

use crate::service::ServiceError;

pub enum ApiError {
    Service(ServiceError),
    /// A request the caller can fix: status, stable code, message.
    Request(StatusCode, &'static str, String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::Request(StatusCode::BAD_REQUEST, code, message.into())
    }

    /// 404: what the caller asked for does not exist, or is not the caller's to see.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::Request(StatusCode::NOT_FOUND, "not_found", message.into())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self::Service(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Service(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = match self {
            ApiError::Request(status, code, message) => {
                return (status, Json(json!({"error": code, "message": message}))).into_response();
            }
            ApiError::Service(e) => e,
        };
        let (status, code) = match &e {
            ServiceError::Spec(_) | ServiceError::Workflows(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"),
            ServiceError::NotFound(_) | ServiceError::Store(StoreError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ServiceError::AlreadyDecided(request, first) => {
                let body = json!({
                    "error": "already_decided",
                    "message": e.to_string(),
                    "request": request,
                    "decision": decision_json(first),
                });
                return (StatusCode::CONFLICT, Json(body)).into_response();
            }
            ServiceError::SelfApproval(..) => (StatusCode::FORBIDDEN, "self_approval_forbidden"),
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ServiceError::DecisionNotAllowed { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "decision_not_allowed"),
            ServiceError::Store(StoreError::Forbidden(_)) => (StatusCode::FORBIDDEN, "forbidden"),
            _ => {
                tracing::error!("admin API internal error: {e}");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "internal", "message": "internal error"})),
                )
                    .into_response();
            }
        };
        (status, Json(json!({"error": code, "message": e.to_string()}))).into_response()
    }
}

/// A recorded decision as the API shows it: `{decision: "approve", amount?, value?, by,
/// comment?, by_policy, at}`.
pub fn decision_json(d: &HumanDecisionRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(&d.decision).unwrap_or_default();
    v["by"] = json!(d.by);
    v["comment"] = json!(d.comment);
    v["by_policy"] = json!(d.by_policy);
    v["at"] = json!(d.at);
    v
}

/// The body size limit in force, for the 413 message (set by the router).
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A JSON request body, like `axum::Json`, whose rejections are [`ApiError`]s.
pub struct Body<T>(pub T);

fn rejected(limit: Option<BodyLimit>, r: JsonRejection) -> ApiError {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = limit.map_or_else(
                || "the limit".to_owned(),
                |BodyLimit(n)| format!("the limit of {n} bytes (http_max_body_bytes)"),
            );
            ApiError::Request(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {limit}"),
            )
        }
        status => ApiError::Request(status, "bad_body", r.body_text()),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = req.extensions().get::<BodyLimit>().copied();
        match <Json<T> as FromRequest<S>>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(r) => Err(rejected(limit, r)),
        }
    }
}

/// An optional body: none when the request has no `Content-Type`.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let limit = req.extensions().get::<BodyLimit>().copied();
        match <Json<T> as OptionalFromRequest<S>>::from_request(req, state).await {
            Ok(value) => Ok(value.map(|Json(v)| Body(v))),
            Err(r) => Err(rejected(limit, r)),
        }
    }
}
