//! `GET /api/openapi.json`: the admin API's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the shapes below (utoipa). The shapes describe the JSON
//! the handlers build; `tests/tests/openapi.rs` validates the running server's answers
//! against this document, so the two cannot drift apart unnoticed.

use axum::Json;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::http::{
    events, health, notifications, receipt, requests, runs, stream, templates, timeline, triggers, users,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate admin API", description = "Runs and their timelines, workflow templates, human requests and decisions, events, triggers, users. Every /api route needs `Authorization: Bearer <user token>`."),
    paths(
        runs::list, runs::start, runs::show, runs::cancel, runs::audit, timeline::show,
        receipt::show, receipt::key,
        templates::list, templates::show, templates::start,
        requests::pending, requests::show, requests::decide,
        stream::stream,
        events::publish,
        triggers::list, triggers::history,
        notifications::list,
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
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
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
    /// Its escalation, where the step (or the budget) declares one (`GET
    /// /api/requests/{request}` only): `mode`, `asked_at`, `open`, and `levels` — each with
    /// `after`, `due_at`, `to` (paged) or `default` (applied), and `fired`.
    #[schema(value_type = Option<Object>)]
    pub escalation: Option<Value>,
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

/// The console's run view: the DAG and, per step, status, attempts, timings, cost, the output as
/// the gates let it through, error, decision, and the gate trail located on the redacted text.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TimelineDoc {
    pub run: String,
    pub workflow: String,
    pub version: u32,
    /// `pending`, `running`, `waiting`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    #[schema(value_type = Option<Object>)]
    pub reason: Option<Value>,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub budget: TimelineBudgetDoc,
    pub steps: Vec<TimelineStepDoc>,
}

/// Budget figures (exact decimals as strings; null without a budget).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TimelineBudgetDoc {
    pub cap: Value,
    pub extended: Value,
    pub limit: Value,
    pub spent: Value,
    pub reserved: Value,
    pub currency: Option<String>,
    /// The open budget-extension request, if any.
    pub request: Value,
}

/// One step of the timeline.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TimelineStepDoc {
    pub id: String,
    #[schema(rename = "type")]
    pub ty: String,
    /// The steps it needs (the DAG's edges).
    pub needs: Vec<String>,
    pub join: Value,
    pub status: String,
    pub skip_reason: Value,
    /// The open request the step waits on.
    pub waiting_request: Option<String>,
    /// Every attempt, interrupted and superseded ones too.
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<Value>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub duration_ms: Option<u64>,
    pub cost: Value,
    /// The output as recorded, or its redacted form when the gates held it (`output_redacted`).
    pub output: Value,
    pub output_redacted: bool,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub decision: Option<Value>,
    /// `{action, ruleset, threat, findings: [{rule_id, category, path, message, redacted: {span, excerpt}…}]}`.
    #[schema(value_type = Option<Object>)]
    pub gate: Option<Value>,
}

/// `POST /api/events`: the body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventBodyDoc {
    /// 1–200 letters, digits or `._:-/`.
    pub name: String,
    /// Whose workflows hear it (a user or group the caller acts for); the caller by default.
    pub owner: Option<String>,
    pub payload: Value,
    /// A key that makes a retried post publish once (1–256 bytes).
    pub dedup: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventPublishedDoc {
    pub id: String,
    pub at: u64,
    /// The dedup key was used already: nothing new was published; `id` is the first event's.
    pub duplicate: bool,
}

/// A running trigger and its health.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TriggerDoc {
    pub workflow: String,
    pub trigger: String,
    /// `cron`, `webhook`, `upload`, `event`, `imap`.
    #[schema(rename = "type")]
    pub ty: String,
    pub connected: bool,
    pub last_success: Option<u64>,
    /// `[unix ms, message]`.
    pub last_error: Option<Value>,
    pub started: u64,
    pub failed: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub restarts: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TriggersDoc {
    pub triggers: Vec<TriggerDoc>,
}

/// One fire of a trigger.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FireDoc {
    pub fire: String,
    pub workflow: String,
    pub trigger: String,
    pub kind: String,
    pub key: String,
    pub at: u64,
    pub recorded_at: u64,
    pub source: String,
    /// `started` (with `run`), `failed` (with `error`), `skipped_duplicate`.
    pub outcome: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FiresDoc {
    /// Newest first.
    pub fires: Vec<FireDoc>,
}

/// A console notification (from a `notify` step).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NotificationDoc {
    pub id: String,
    /// The user or group it was addressed to.
    pub to: String,
    pub subject: String,
    pub message: String,
    pub workflow: String,
    pub run: String,
    pub step: String,
    pub at: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NotificationsDoc {
    /// Newest first.
    pub notifications: Vec<NotificationDoc>,
}
