//! `connector` steps: one action through a named connection of the workflow's owner
//! (`tollgate connections add`), run as a job by the `connector` handler
//! (`tollgate-connectors`). The action's fields are under `with`; their strings may hold
//! `${{ … }}` templates, rendered into the attempt's input before dispatch, and the handler
//! reads the rendered fields into the action's struct here ([`EmailSendWith`],
//! [`EmailFetchWith`], [`HttpRequestWith`]).
//!
//! Validation checks what it can before a run: the connection is named, the action is known,
//! `with` holds only that action's fields and its required ones, and — where no template
//! stands in the way — their types and values. Whether the connection exists is the run's
//! business (connections are configured per owner, after the spec is written).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::connections::{valid_address, valid_connection_name};
use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::validate::problem;

/// The most messages one `email.fetch` returns.
pub const MAX_FETCH: u32 = 200;

/// `connector`: an action (`email.send`, `email.fetch`, `http.request`) through a named
/// connection of the workflow's owner; the action's fields under `with`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = connection_and_action_required)]
pub struct ConnectorStep {
    /// A connection of the workflow's owner (`tollgate connections list`).
    #[serde(default)]
    pub connection: String,
    /// `email.send` (through an smtp connection), `email.fetch` (imap) or `http.request` (http).
    #[serde(default)]
    #[schemars(with = "ConnectorAction")]
    pub action: String,
    /// The action's fields; strings may hold `${{ … }}` templates.
    #[serde(default)]
    #[schemars(with = "ActionFields")]
    pub with: Map<String, Value>,
}

/// The actions of a `connector` step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConnectorAction {
    /// Send one email (to, cc, bcc, subject, body, attachments) through an smtp connection.
    #[serde(rename = "email.send")]
    EmailSend,
    /// Search an IMAP mailbox and return the matching messages, parsed.
    #[serde(rename = "email.fetch")]
    EmailFetch,
    /// One HTTP request to the connection's API, with its authentication.
    #[serde(rename = "http.request")]
    HttpRequest,
}

impl ConnectorAction {
    pub const ALL: [ConnectorAction; 3] =
        [ConnectorAction::EmailSend, ConnectorAction::EmailFetch, ConnectorAction::HttpRequest];

    pub fn name(self) -> &'static str {
        match self {
            ConnectorAction::EmailSend => "email.send",
            ConnectorAction::EmailFetch => "email.fetch",
            ConnectorAction::HttpRequest => "http.request",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The connection kind the action needs.
    pub fn kind(self) -> crate::connections::ConnectionKind {
        use crate::connections::ConnectionKind;
        match self {
            ConnectorAction::EmailSend => ConnectionKind::Smtp,
            ConnectorAction::EmailFetch => ConnectionKind::Imap,
            ConnectorAction::HttpRequest => ConnectionKind::Http,
        }
    }

    /// The fields `with` may hold, and those it must.
    fn fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            ConnectorAction::EmailSend => {
                (&["to", "cc", "bcc", "subject", "body", "attachments"], &["to", "subject", "body"])
            }
            ConnectorAction::EmailFetch => (&["mailbox", "search", "limit"], &[]),
            ConnectorAction::HttpRequest => (&["method", "path", "query", "headers", "json", "body"], &[]),
        }
    }
}

/// The fields under `with`, one shape per action (for the JSON Schema).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ActionFields {
    EmailSend(EmailSendWith),
    EmailFetch(EmailFetchWith),
    HttpRequest(HttpRequestWith),
}

/// `email.send`: one message through an smtp connection (its `from`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSendWith {
    /// One address or a list (`a@example.com`, `Name <a@example.com>`).
    pub to: Recipients,
    #[serde(default)]
    pub cc: Recipients,
    /// Recipients not shown in the message's headers.
    #[serde(default)]
    pub bcc: Recipients,
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    #[serde(default)]
    pub attachments: Vec<AttachmentSpec>,
}

/// One address or several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Recipients {
    One(String),
    Many(Vec<String>),
}

impl Default for Recipients {
    fn default() -> Self {
        Recipients::Many(Vec::new())
    }
}

impl Recipients {
    /// The addresses (a one-address string may list several, separated by commas).
    pub fn addresses(&self) -> Vec<String> {
        let all: Vec<&str> = match self {
            Recipients::One(s) => s.split(',').collect(),
            Recipients::Many(v) => v.iter().map(String::as_str).collect(),
        };
        all.into_iter().map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    }
}

/// An attachment: its content from an upstream output (`content`: text, or any JSON value,
/// attached as JSON; `content_base64`: bytes), or a stored blob of the workflow (`blob`: an
/// attachment the IMAP trigger or an upload sealed in the store — pass the trigger's
/// `{filename, content_type, size, blob}` object as is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSpec {
    /// The file name the recipient sees (required with `content`/`content_base64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Default: `text/plain` for text, `application/json` for other JSON values,
    /// `application/octet-stream` for bytes and blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// Ignored (the IMAP trigger's attachments carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Where an attachment's bytes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum AttachmentSource<'a> {
    Content(&'a Value),
    Base64(&'a str),
    Blob(&'a str),
}

impl AttachmentSpec {
    /// Its one source, or why it has not exactly one.
    pub fn source(&self) -> Result<AttachmentSource<'_>, String> {
        match (&self.content, &self.content_base64, &self.blob) {
            (Some(c), None, None) => Ok(AttachmentSource::Content(c)),
            (None, Some(b), None) => Ok(AttachmentSource::Base64(b)),
            (None, None, Some(b)) => Ok(AttachmentSource::Blob(b)),
            (None, None, None) => Err("an attachment needs `content`, `content_base64` or `blob`".into()),
            _ => Err("an attachment has one of `content`, `content_base64` and `blob`".into()),
        }
    }
}

/// `email.fetch`: messages of a mailbox matching an IMAP search, newest `limit`, parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailFetchWith {
    /// Default `INBOX`.
    #[serde(default = "inbox")]
    pub mailbox: String,
    /// An IMAP SEARCH (RFC 3501 §6.4.4): `ALL` (default), `UNSEEN`, `FROM "x@y" SINCE 1-Nov-2026`…
    #[serde(default = "all")]
    pub search: String,
    /// At most this many messages (the newest), 1–200, default 20.
    #[serde(default = "twenty")]
    pub limit: u32,
}

fn inbox() -> String {
    "INBOX".into()
}
fn all() -> String {
    "ALL".into()
}
fn twenty() -> u32 {
    20
}

/// `http.request`: one request to the connection's base URL + `path`, with its authentication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestWith {
    /// Default `GET`.
    #[serde(default = "get")]
    pub method: String,
    /// Joined to the connection's base URL (`/orders/7`); it cannot name another host.
    #[serde(default)]
    pub path: String,
    /// Query parameters (strings, numbers, booleans).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, Value>,
    /// Extra headers (the connection's `Authorization` wins over one set here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A text body (`Content-Type: text/plain` unless a header says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

fn get() -> String {
    "GET".into()
}

impl HttpRequestWith {
    /// What is wrong with its fields, beyond their types.
    pub fn problem(&self) -> Option<String> {
        if !is_method(&self.method) {
            return Some(format!("`{}` is not an HTTP method", self.method));
        }
        if self.json.is_some() && self.body.is_some() {
            return Some("a request has `json` or `body`, not both".into());
        }
        None
    }
}

impl EmailFetchWith {
    pub fn problem(&self) -> Option<String> {
        if !(1..=MAX_FETCH).contains(&self.limit) {
            return Some(format!("`limit` must be between 1 and {MAX_FETCH}"));
        }
        if self.mailbox.trim().is_empty() || self.search.trim().is_empty() {
            return Some("`mailbox` and `search` must not be empty".into());
        }
        None
    }
}

impl EmailSendWith {
    pub fn problem(&self) -> Option<String> {
        if self.to.addresses().is_empty() {
            return Some("`to` names no recipient".into());
        }
        for (field, r) in [("to", &self.to), ("cc", &self.cc), ("bcc", &self.bcc)] {
            if let Some(bad) = r.addresses().into_iter().find(|a| !valid_address(a)) {
                return Some(format!("`{field}`: `{bad}` is not an email address"));
            }
        }
        for (i, a) in self.attachments.iter().enumerate() {
            if let Err(e) = a.source() {
                return Some(format!("`attachments[{i}]`: {e}"));
            }
            if a.blob.is_none() && a.filename.as_deref().is_none_or(|f| f.trim().is_empty()) {
                return Some(format!("`attachments[{i}]`: needs a `filename`"));
            }
        }
        None
    }
}

fn is_method(s: &str) -> bool {
    matches!(s.to_ascii_uppercase().as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS")
}

impl ConnectorStep {
    pub const FIELDS: &'static [&'static str] = &["connection", "action", "with"];

    /// The step's action (validation refused the step if it is unknown).
    pub fn action(&self) -> Option<ConnectorAction> {
        ConnectorAction::parse(&self.action)
    }
}

/// Whether any string in `v` holds a template.
fn templated(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${{"),
        Value::Array(items) => items.iter().any(templated),
        Value::Object(map) => map.values().any(templated),
        _ => false,
    }
}

/// Read `with` into the action's struct and check it (what the handler does after rendering).
pub fn read_with<T: serde::de::DeserializeOwned>(with: &Value) -> Result<T, String> {
    serde_json::from_value(with.clone()).map_err(|e| e.to_string())
}

impl StepShape for ConnectorStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        if self.connection.trim().is_empty() {
            p.push(problem(
                format!("{at}.connection"),
                "a `connector` step names its connection (`connection: NAME`, see `tollgate connections list`)",
            ));
        } else if !valid_connection_name(&self.connection) {
            p.push(problem(
                format!("{at}.connection"),
                format!("`{}` is not a connection name (1–64 letters, digits, `_`, `-`, `.`)", self.connection),
            ));
        }
        let names = ConnectorAction::ALL.map(ConnectorAction::name).join(", ");
        let action = match self.action.trim() {
            "" => {
                return p
                    .push(problem(format!("{at}.action"), format!("a `connector` step needs an `action`: {names}")));
            }
            a => match ConnectorAction::parse(a) {
                Some(action) => action,
                None => {
                    return p.push(problem(format!("{at}.action"), format!("unknown action `{a}` (actions: {names})")));
                }
            },
        };
        let (fields, required) = action.fields();
        let list = fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
        let mut fields_ok = true;
        for key in self.with.keys() {
            if !fields.contains(&key.as_str()) {
                fields_ok = false;
                p.push(problem(
                    format!("{at}.with.{key}"),
                    format!("is not a field of `{}` (its fields: {list})", action.name()),
                ));
            }
        }
        for key in required {
            if !self.with.contains_key(*key) {
                fields_ok = false;
                p.push(problem(format!("{at}.with"), format!("`{}` needs `{key}`", action.name())));
            }
        }
        let with = Value::Object(self.with.clone());
        if !fields_ok || templated(&with) {
            return; // the rest is checked on the rendered fields
        }
        let checked = match action {
            ConnectorAction::EmailSend => {
                read_with::<EmailSendWith>(&with).and_then(|w| w.problem().map_or(Ok(()), Err))
            }
            ConnectorAction::EmailFetch => {
                read_with::<EmailFetchWith>(&with).and_then(|w| w.problem().map_or(Ok(()), Err))
            }
            ConnectorAction::HttpRequest => {
                read_with::<HttpRequestWith>(&with).and_then(|w| w.problem().map_or(Ok(()), Err))
            }
        };
        if let Err(e) = checked {
            p.push(problem(format!("{at}.with"), e));
        }
    }

    fn templates(&self, at: &str) -> Vec<(String, Value)> {
        vec![(format!("{at}.with"), Value::Object(self.with.clone()))]
    }
}

/// `#[schemars(transform)]`: `connection` and `action` are required (the parser defaults them
/// only so that validation can name what is missing with its place).
fn connection_and_action_required(schema: &mut schemars::Schema) {
    schema.insert("required".into(), serde_json::json!(["connection", "action"]));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let step: ConnectorStep = serde_yaml_ng::from_str(yaml).unwrap();
        let mut p = Vec::new();
        step.check("steps[0] (c)", &mut p);
        p.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn each_action_has_its_fields() {
        assert!(
            problems("{ connection: mail, action: email.send, with: { to: [a@b.test], subject: s, body: b } }")
                .is_empty()
        );
        assert!(problems("{ connection: mail, action: email.send, with: { to: '${{ params.to }}', subject: s, body: b, attachments: '${{ steps.x.output.files }}' } }").is_empty());
        assert!(problems("{ connection: inbox, action: email.fetch }").is_empty());
        assert!(
            problems(
                "{ connection: api, action: http.request, with: { method: POST, path: /orders, json: { n: 1 } } }"
            )
            .is_empty()
        );
        assert_eq!(
            problems("{ action: email.send, with: { to: a@b.test, subject: s, body: b } }"),
            vec![
                "steps[0] (c).connection: a `connector` step names its connection (`connection: NAME`, see `tollgate connections list`)"
            ]
        );
        assert_eq!(
            problems("{ connection: mail, action: email.sned }"),
            vec!["steps[0] (c).action: unknown action `email.sned` (actions: email.send, email.fetch, http.request)"]
        );
        assert_eq!(
            problems("{ connection: mail, action: email.send, with: { to: a@b.test, body: b, url: x } }"),
            vec![
                "steps[0] (c).with.url: is not a field of `email.send` (its fields: `to`, `cc`, `bcc`, `subject`, `body`, `attachments`)",
                "steps[0] (c).with: `email.send` needs `subject`",
            ]
        );
        assert_eq!(
            problems("{ connection: inbox, action: email.fetch, with: { limit: 500 } }"),
            vec!["steps[0] (c).with: `limit` must be between 1 and 200"]
        );
        assert_eq!(
            problems("{ connection: mail, action: email.send, with: { to: nobody, subject: s, body: b } }"),
            vec!["steps[0] (c).with: `to`: `nobody` is not an email address"]
        );
        assert_eq!(
            problems(
                "{ connection: mail, action: email.send, with: { to: a@b.test, subject: s, body: b, attachments: [{ filename: x.txt }] } }"
            ),
            vec!["steps[0] (c).with: `attachments[0]`: an attachment needs `content`, `content_base64` or `blob`"]
        );
        assert_eq!(
            problems("{ connection: api, action: http.request, with: { method: FETCH } }"),
            vec!["steps[0] (c).with: `FETCH` is not an HTTP method"]
        );
    }
}
