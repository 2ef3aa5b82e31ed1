//! `/api/users`: create a user (the shared admin token's one use, or an admin user's), list
//! users (admins), and `GET /api/me` (who the caller is).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_engine::users::{Role, User};

use crate::access::Caller;
use crate::http::auth::Authenticated;
use crate::http::error::{ApiError, Body};
use crate::http::openapi::{ApiErrorDoc, UserCreatedDoc, UserDoc, UsersDoc};
use crate::service::Tollgate;
use crate::users::UserError;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewUserBody {
    name: String,
    /// `admin` or `operator` (the default).
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    email: Option<String>,
}

fn forbidden(message: &str) -> ApiError {
    ApiError::Request(StatusCode::FORBIDDEN, "forbidden", message.into())
}

pub fn user_json(u: &User) -> Value {
    json!({"name": u.name, "role": u.role.label(), "groups": u.groups, "email": u.email, "created_at": u.created_at})
}

#[utoipa::path(post, path = "/api/users", tag = "users", request_body = NewUserBody,
    responses((status = 201, body = UserCreatedDoc), (status = 403, body = ApiErrorDoc), (status = 409, body = ApiErrorDoc), (status = 422, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `POST /api/users` `{name, role?, groups?, email?}` → 201 `{user, token}`: the token is
/// shown this once; only its hash is kept.
pub async fn add(
    State(t): State<Tollgate>,
    who: Authenticated,
    Body(b): Body<NewUserBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Authenticated::Caller(c) = &who {
        if !c.is_admin() {
            return Err(forbidden("only an admin (or the admin token) may create users"));
        }
    }
    let role = match b.role.as_deref() {
        None => Role::Operator,
        Some(r) => Role::parse(r).ok_or_else(|| {
            ApiError::bad_request("bad_role", format!("role must be `admin` or `operator`, not {r:?}"))
        })?,
    };
    let new = t.users.add(&b.name, role, b.groups, b.email).await.map_err(|e| match e {
        UserError::Invalid(m) => ApiError::Request(StatusCode::UNPROCESSABLE_ENTITY, "bad_user", m),
        UserError::Exists(_) => ApiError::Request(StatusCode::CONFLICT, "user_exists", e.to_string()),
        UserError::Store(e) => e.into(),
    })?;
    Ok((StatusCode::CREATED, Json(json!({"user": user_json(&new.user), "token": new.token.as_str()}))))
}

#[utoipa::path(get, path = "/api/users", tag = "users", responses((status = 200, body = UsersDoc), (status = 403, body = ApiErrorDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/users` (admins).
pub async fn list(State(t): State<Tollgate>, caller: Caller) -> Result<Json<Value>, ApiError> {
    if !caller.is_admin() {
        return Err(forbidden("only an admin may list users"));
    }
    let users: Vec<Value> = t.users.list().await?.iter().map(user_json).collect();
    Ok(Json(json!({"users": users})))
}

#[utoipa::path(get, path = "/api/me", tag = "users", responses((status = 200, body = UserDoc), (status = 401, description = "no or a wrong token", body = ApiErrorDoc)))]
/// `GET /api/me`.
pub async fn me(caller: Caller) -> Json<Value> {
    match &caller {
        Caller::User(u) => Json(user_json(u)),
        Caller::Local(n) => Json(json!({"name": n, "role": "admin", "groups": [], "local": true})),
    }
}
