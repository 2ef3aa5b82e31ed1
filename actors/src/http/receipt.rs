//! `GET /api/runs/{run}/receipt`: the run's signed receipt, as a download (404 as for the run
//! itself); `GET /api/receipt/key`: the public key receipts are signed with.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;
use tollgate_engine::ids::RunId;

use crate::access::Caller;
use crate::http::error::ApiError;
use crate::http::openapi::{ApiErrorDoc, ReceiptDoc, ReceiptKeyDoc};
use crate::service::{ServiceError, Tollgate};

#[utoipa::path(get, path = "/api/runs/{run}/receipt", tag = "runs", params(("run" = String, Path)),
    responses((status = 200, body = ReceiptDoc), (status = 404, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// The run's record, signed with the service's Ed25519 key; `tollgate receipt verify` checks it.
pub async fn show(
    State(t): State<Tollgate>,
    caller: Caller,
    Path(run): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let receipt = t.receipt_as(&caller, &RunId(run.clone())).await?;
    let disposition = format!(
        "attachment; filename=\"receipt-{}.json\"",
        run.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
    );
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(receipt)))
}

#[utoipa::path(get, path = "/api/receipt/key", tag = "runs",
    responses((status = 200, body = ReceiptKeyDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// The public key receipts are signed with.
pub async fn key(State(t): State<Tollgate>, _caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    let signer = t.engine.store.receipt_signer().await.map_err(ServiceError::from)?;
    Ok(Json(json!({"algorithm": "ed25519", "key": signer.public().to_string()})))
}
