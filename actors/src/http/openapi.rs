//! `GET /api/openapi.json`: the admin API's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the shapes below (utoipa). The shapes describe the JSON
//! the handlers build; `tests/tests/openapi.rs` validates the running server's answers
//! against this document, so the two cannot drift apart unnoticed.

use axum::Json;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::http::{health, receipt, requests, runs, stream, templates, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", description = "Runs, workflow templates, human requests and decisions, users. Every /api route needs `Authorization: Bearer <user token>`."),
    paths(
        runs::list, runs::start, runs::show, runs::cancel, runs::audit,
        receipt::show, receipt::key,
        templates::list, templates::show, templates::start,
        requests::pending, requests::show, requests::decide,
        stream::stream,
        users::add, users::list, users::me,
        health::healthz,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The document (built once per call; it is small).
pub async fn document() -> Json<Value> {
    Json(serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises"))
}

/// Every 4xx/5xx answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ApiErrorDoc {
    /// A stable code: `unauthorized`, `not_found`, `forbidden`, `self_approval_forbidden`, `already_decided`, `bad_decision`, `invalid_spec`, `body_too_large`…
    pub error: String,
    pub message: String,
}

/// 409 on a second decision: the first one, as recorded.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AlreadyDecidedDoc {
    pub error: String,
    pub message: String,
    pub request: String,
    pub decision: DecisionDoc,
}

/// A recorded decision.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DecisionDoc {
    /// `approve`, `reject`, `extend` (with `amount`), `modify` (with `value`), `abort`; for a
    /// tool authorisation `allow_once`, `allow_for_run`, `deny` (with `reason`).
    pub decision: String,
    /// For `deny`: the reason the model received.
    pub reason: Option<String>,
    pub by: String,
    pub comment: Option<String>,
    /// Applied by an escalation's `default`, not by a person.
    pub by_policy: bool,
    pub at: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RunListingDoc {
    pub run: String,
    pub workflow: String,
    pub version: u32,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    #[schema(value_type = Option<Object>)]
    pub reason: Option<Value>,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RunPageDoc {
    pub runs: Vec<RunListingDoc>,
    /// The `after` of the next page; null on the last.
    pub next: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RunCreatedDoc {
    pub run: String,
    /// For a run started from the catalogue: the workflow's id.
    pub workflow: Option<String>,
}

/// `GET /api/templates`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TemplateListDoc {
    pub templates: Vec<TemplateDoc>,
}

/// A workflow of the catalogue.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TemplateDoc {
    /// The id `tollgate run NAME` and `POST /api/templates/{name}/runs` take.
    pub id: String,
    pub version: u32,
    pub owner: String,
    pub description: String,
    /// `shipped templates/NAME.yaml`, or the configured file's path.
    pub source: String,
    pub shipped: bool,
    /// How many steps it has.
    pub steps: u32,
    /// Its trigger types (`cron`, `webhook`, `upload`…).
    pub triggers: Vec<String>,
    pub parameters: Vec<TemplateParameterDoc>,
    /// Whether the caller may start it (owns its owner, or is an admin).
    pub can_start: bool,
}

/// A declared parameter.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TemplateParameterDoc {
    pub name: String,
    /// `string`, `number`, `integer`, `boolean`, `object`, `array`.
    #[schema(rename = "type")]
    pub ty: String,
    pub required: bool,
    /// The default value (any JSON), or null.
    pub default: Option<Value>,
    pub description: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StepDoc {
    pub id: String,
    #[schema(rename = "type")]
    pub ty: String,
    pub status: String,
    pub attempts: u32,
    #[schema(value_type = Vec<Object>)]
    pub attempt_log: Vec<Value>,
    pub duration_ms: Option<u64>,
    /// An exact decimal, as a string.
    pub cost: String,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub decision: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub gate: Option<Value>,
    /// A `for_each` step's items (`STEP.K`), each with its status, attempts, cost, error,
    /// decision and gate verdict; null for other steps.
    #[schema(value_type = Option<Vec<Object>>)]
    pub items: Option<Vec<Value>>,
    /// A `workflow.run` step's sub-workflow run.
    pub child: Option<String>,
}

/// A run step by step.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RunDoc {
    pub run: String,
    pub workflow: String,
    pub version: u32,
    /// `running`, `waiting`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    #[schema(value_type = Option<Object>)]
    pub reason: Option<Value>,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    #[schema(value_type = Object)]
    pub budget: Value,
    /// A sub-workflow's run: `{run, workflow, step, depth, budget}` of the run that started it.
    #[schema(value_type = Option<Object>)]
    pub parent: Option<Value>,
    pub steps: Vec<StepDoc>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CancellingDoc {
    pub run: String,
    pub cancelling: bool,
}

/// One audit event; other fields depend on `kind`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuditEventDoc {
    pub at: u64,
    /// `run.started`, `step.succeeded`, `step.failed`, `step.blocked`, `request.approved`, `request.rejected`, `request.modified`, `request.extended`, `request.aborted`, `tool.authorisation_asked`, `tool.allowed_once`, `tool.allowed_for_run`, `tool.denied`, `escalation.paged`, `escalation.default`, `run.cancelled`…
    pub kind: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuditDoc {
    pub run: String,
    pub events: Vec<AuditEventDoc>,
}

/// One journal entry of a receipt: its place in the hash chain, its audit record, its signature.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReceiptEntryDoc {
    pub index: u64,
    /// The journal event: `run_started`, `step_succeeded`, `step_failed`, `step_blocked`, `human_decided`, `timer_fired`…
    pub kind: String,
    pub at: u64,
    /// The link this entry follows (hex SHA-256).
    pub prev: String,
    /// SHA-256 of the journaled event (hex).
    pub digest: String,
    /// SHA-256("tollgate/v1/journal\0" ‖ prev ‖ digest) (hex).
    pub link: String,
    /// The detailed audit event (redacted): who, timings, cost, output, error, gate and check verdicts.
    #[schema(value_type = Object)]
    pub record: Value,
    /// Ed25519 signature of the entry (hex).
    pub signature: String,
}

/// A run's signed record (`tollgate receipt verify` checks it).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReceiptDoc {
    /// `tollgate.receipt/v1`.
    pub format: String,
    /// Run, workflow, spec digest, owner, who started it, trigger fire, parameters (redacted), status, cost, steps, chain length and head.
    #[schema(value_type = Object)]
    pub header: Value,
    pub entries: Vec<ReceiptEntryDoc>,
    /// The service's Ed25519 public key (hex).
    pub key: String,
    /// Ed25519 signature of the header (hex).
    pub signature: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReceiptKeyDoc {
    /// `ed25519`.
    pub algorithm: String,
    /// The public key receipts are signed with (64 hex characters).
    pub key: String,
}

/// What a human is asked.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RequestSpecDoc {
    pub id: String,
    /// `approval`, `budget_extension`, `guidance`, `tool_authorisation`.
    pub mode: String,
    pub step: Option<String>,
    pub question: String,
    /// What the human needs to answer: the step's inputs, named upstream outputs (redacted), the gate trail, budget figures;
    /// for a tool authorisation `tool`, `description`, `arguments` (redacted), `reason` (the model's), `call_id`, `turn`.
    #[schema(value_type = Object)]
    pub context: Value,
    /// A user or group.
    pub assignee: Option<String>,
    pub forbid_self_approval: Option<bool>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RequestDoc {
    pub workflow: String,
    pub run: String,
    pub request: RequestSpecDoc,
    pub created_at: u64,
    /// Users or groups paged by escalation since.
    pub escalated_to: Option<Vec<String>>,
    /// Once decided (`GET /api/requests/{request}` only).
    #[schema(value_type = Option<Object>)]
    pub decision: Option<Value>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DecisionRecordedDoc {
    pub request: String,
    pub run: String,
    pub recorded: bool,
    /// The authenticated caller, recorded as the decider.
    pub by: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UserDoc {
    pub name: String,
    /// `admin` or `operator`.
    pub role: String,
    pub groups: Vec<String>,
    pub email: Option<String>,
    pub created_at: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UserCreatedDoc {
    pub user: UserDoc,
    /// The API token, shown this once.
    pub token: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsersDoc {
    pub users: Vec<UserDoc>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HealthDoc {
    pub healthy: bool,
    #[schema(value_type = Object)]
    pub checks: Value,
}
