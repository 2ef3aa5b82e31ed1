//! `POST /hooks/{workflow}/{trigger}`: deliveries to webhook and upload triggers. Outside the
//! admin token (each trigger checks its own signature); the body limit is the trigger's own.
//! Answers: 202 started, 200 duplicate (the sender may stop retrying), 401 bad signature,
//! 413 too large, 422 a failed fire (schema, parameters), 400 a bad upload, 404 no such
//! running trigger, 503 not recorded (retry).

use axum::Json;
use axum::body::Body as RawBody;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tollgate_engine::ids::{TriggerId, WorkflowId};
use tollgate_engine::spec::triggers::TriggerKind;

use crate::service::Tollgate;
use crate::triggers::FireResult;
use crate::triggers::upload::{UploadError, fire_upload, read_multipart};
use crate::triggers::webhook::{Delivery, deliver};

fn answer(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": code, "message": message.into()}))).into_response()
}

fn fired(result: FireResult) -> Response {
    match result {
        FireResult::Started { fire, run } => {
            (StatusCode::ACCEPTED, Json(json!({"outcome": "started", "fire": fire, "run": run}))).into_response()
        }
        FireResult::Duplicate { fire, of } => {
            (StatusCode::OK, Json(json!({"outcome": "skipped_duplicate", "fire": fire, "of": of}))).into_response()
        }
        FireResult::Failed { fire, error } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"outcome": "failed", "fire": fire, "error": "fire_failed", "message": error})),
        )
            .into_response(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "a delivery could not be recorded");
    answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the delivery could not be recorded; retry later")
}

pub async fn deliver_to(
    State(t): State<Tollgate>,
    Path((workflow, trigger)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (wf, id) = (WorkflowId::new(workflow), TriggerId::new(trigger));
    let Some(endpoint) = t.engine.triggers.endpoint(&wf, &id) else {
        return answer(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no running webhook or upload trigger `{id}` for workflow `{wf}`"),
        );
    };
    match endpoint.trigger.kind() {
        TriggerKind::Webhook(hook) => {
            let limit = hook.max_body;
            let declared = req
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|n| n > limit) {
                return too_large(limit);
            }
            let (parts, body) = req.into_parts();
            let body = match axum::body::to_bytes(body, limit).await {
                Ok(b) => b,
                Err(_) => return too_large(limit),
            };
            match deliver(&endpoint, hook, &parts.headers, &body).await {
                Delivery::Rejected(e) => answer(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()),
                Delivery::Fired(r) => fired(r),
                Delivery::Unavailable(e) => unavailable(e),
            }
        }
        TriggerKind::Upload(upload) => {
            let limit = upload.max_size;
            // The whole form may carry a little more than the file (boundaries, fields).
            let req = req.map(|b| RawBody::new(http_body_util::Limited::new(b, limit + 64 * 1024)));
            let form = match Multipart::from_request(req, &()).await {
                Ok(f) => f,
                Err(e) => return answer(StatusCode::BAD_REQUEST, "bad_upload", e.body_text()),
            };
            let upload = match read_multipart(form, limit).await {
                Ok(u) => u,
                Err(UploadError::TooLarge(n)) => return too_large(n),
                Err(UploadError::Bad(m)) if m.contains("length limit") => return too_large(limit),
                Err(e @ UploadError::Bad(_)) => return answer(StatusCode::BAD_REQUEST, "bad_upload", e.to_string()),
            };
            match fire_upload(&endpoint.context, upload, "upload").await {
                Ok(r) => fired(r),
                Err(e) => unavailable(e),
            }
        }
        // Other types register no endpoint; should one ever, it still takes no deliveries here.
        _ => answer(StatusCode::NOT_FOUND, "not_found", format!("trigger `{id}` takes no deliveries")),
    }
}

fn too_large(limit: usize) -> Response {
    answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than the trigger's limit of {limit} bytes"),
    )
}
