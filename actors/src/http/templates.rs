//! `/api/templates`: the workflow catalogue (shipped templates and configured specs) with each
//! workflow's parameters, and starting a run of one by id with parameters — what
//! `tollgate templates list|show` and `tollgate run NAME --set …` do, and what the console's
//! "Start a run" form uses.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Caller;
use crate::catalogue::Entry;
use crate::http::error::{ApiError, Body};
use crate::http::openapi::{ApiErrorDoc, RunCreatedDoc, TemplateDoc, TemplateListDoc};
use crate::service::Tollgate;

/// An entry as the caller sees it: with whether the caller may start it.
fn entry_json(caller: &Caller, e: &Entry) -> Value {
    let mut v = e.to_json();
    v["can_start"] = json!(caller.is_admin() || caller.is(e.spec.spec().owner.as_str()));
    v
}

#[utoipa::path(get, path = "/api/templates", tag = "templates",
    responses((status = 200, body = TemplateListDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/templates`: every workflow of the catalogue, by id, with its parameters and
/// whether the caller may start it (it owns the workflow's owner, or is an admin).
pub async fn list(State(t): State<Tollgate>, caller: Caller) -> Json<Value> {
    let all: Vec<Value> = t.engine.catalogue.entries().map(|e| entry_json(&caller, e)).collect();
    Json(json!({ "templates": all }))
}

#[utoipa::path(get, path = "/api/templates/{name}", tag = "templates", params(("name" = String, Path)),
    responses((status = 200, body = TemplateDoc), (status = 404, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/templates/{name}`: one workflow of the catalogue.
pub async fn show(
    State(t): State<Tollgate>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = t.engine.catalogue.get(&name).map_err(|e| ApiError::not_found(e.to_string()))?;
    Ok(Json(entry_json(&caller, e)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct StartTemplate {
    /// Parameter values by name; strings are coerced to the parameter's type (`"3"` for an
    /// integer, `"[\"a\"]"` for an array), as `--set` does. Omitted: the defaults.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: serde_json::Map<String, Value>,
}

#[utoipa::path(post, path = "/api/templates/{name}/runs", tag = "templates", params(("name" = String, Path)), request_body(content = Option<StartTemplate>),
    responses((status = 201, body = RunCreatedDoc), (status = 403, body = ApiErrorDoc), (status = 404, body = ApiErrorDoc), (status = 422, description = "a parameter is missing, unknown or of the wrong type", body = ApiErrorDoc),
        (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `POST /api/templates/{name}/runs`: start a run of the catalogue's workflow `name` with
/// `params`, as the caller (who must own the workflow's owner, or be an admin).
pub async fn start(
    State(t): State<Tollgate>,
    caller: Caller,
    Path(name): Path<String>,
    body: Option<Body<StartTemplate>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let e = t.engine.catalogue.get(&name).map_err(|e| ApiError::not_found(e.to_string()))?;
    let params = body.map(|b| b.0.params).unwrap_or_default();
    let run = t.start_run_as(&caller, &e.spec, &params).await?;
    Ok((StatusCode::CREATED, Json(json!({ "run": run, "workflow": name }))))
}
