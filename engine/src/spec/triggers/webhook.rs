//! `webhook:` — an HTTP POST to the trigger's own URL, verified with its own secret: HMAC-SHA256
//! in the generic form, GitHub's (`X-Hub-Signature-256`) or Stripe's (`Stripe-Signature`, with
//! a timestamp tolerance); optionally a JSON Schema for the body; the dedup key from a
//! delivery-id header or the body's hash.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::SpecProblem;
use crate::spec::validate::problem;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookTrigger {
    /// How deliveries are signed: `hmac` (hex HMAC-SHA256 of the body in `header`, optionally
    /// prefixed `sha256=`), `github` (`X-Hub-Signature-256`) or `stripe` (`Stripe-Signature`).
    /// The secret is the trigger's own, kept sealed in the store (`tollgate triggers secret`).
    #[serde(default)]
    pub signature: SignatureScheme,
    /// The signature header of the `hmac` scheme (default `X-Signature-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Stripe: how old a signed timestamp may be (default 5m).
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub tolerance: Duration,
    /// The header holding the delivery id, the dedup key (default: per scheme —
    /// `X-GitHub-Delivery` for github, `Idempotency-Key`… for hmac; Stripe uses the event id in
    /// the body). Without one, the key is the body's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_header: Option<String>,
    /// A JSON Schema the body must satisfy (a delivery that does not is refused with 422 and
    /// recorded as a failed fire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Largest body accepted, in bytes (default 1 MiB; larger: 413).
    #[serde(default = "default_max_body")]
    pub max_body: usize,
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}
fn default_max_body() -> usize {
    1 << 20
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    #[default]
    Hmac,
    Github,
    Stripe,
}

impl WebhookTrigger {
    pub(crate) fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        let at = format!("{at}.webhook");
        for (name, h) in [("header", &self.header), ("delivery_header", &self.delivery_header)] {
            if let Some(h) = h
                && (h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            {
                p.push(problem(format!("{at}.{name}"), format!("`{h}` is not an HTTP header name")));
            }
        }
        if self.max_body == 0 {
            p.push(problem(format!("{at}.max_body"), "must be at least 1 byte"));
        }
        if let Some(Err(e)) = self.schema.as_ref().map(compile_schema) {
            p.push(problem(format!("{at}.schema"), e));
        }
    }

    /// The signature header this trigger reads.
    pub fn signature_header(&self) -> &str {
        match self.signature {
            SignatureScheme::Hmac => self.header.as_deref().unwrap_or("X-Signature-256"),
            SignatureScheme::Github => "X-Hub-Signature-256",
            SignatureScheme::Stripe => "Stripe-Signature",
        }
    }

    /// The header holding the delivery id (the dedup key), if the scheme has one.
    pub fn delivery_id_header(&self) -> Option<&str> {
        match (&self.delivery_header, self.signature) {
            (Some(h), _) => Some(h),
            (None, SignatureScheme::Github) => Some("X-GitHub-Delivery"),
            (None, SignatureScheme::Hmac) => Some("Idempotency-Key"),
            (None, SignatureScheme::Stripe) => None,
        }
    }
}

/// A compiled JSON Schema for webhook bodies.
pub struct BodySchema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl std::fmt::Debug for BodySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodySchema")
    }
}

/// Compile a body schema (boon: drafts 4 to 2020-12).
pub fn compile_schema(schema: &Value) -> Result<BodySchema, String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("a JSON Schema is an object (or true/false)".into());
    }
    let mut compiler = boon::Compiler::new();
    let mut schemas = boon::Schemas::new();
    let loc = "urn:tollgate:webhook-body";
    compiler.add_resource(loc, schema.clone()).map_err(|e| format!("not a usable JSON Schema: {e}"))?;
    let index = compiler.compile(loc, &mut schemas).map_err(|e| format!("not a usable JSON Schema: {e}"))?;
    Ok(BodySchema { schemas, index })
}

impl BodySchema {
    /// Check a body; the error says what does not fit, and where.
    pub fn check(&self, body: &Value) -> Result<(), String> {
        self.schemas.validate(body, self.index).map_err(|e| format!("{e:#}"))
    }
}
