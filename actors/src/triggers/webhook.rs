//! The webhook source and what a delivery goes through.
//!
//! While the trigger runs, its endpoint is on the board (with its secret — generated on first
//! start, or set with `tollgate triggers secret`), so `POST /hooks/{workflow}/{trigger}`
//! reaches it. A delivery is checked in this order: size (413), signature (401; only the
//! rejected-fire count records it), body schema (422; a failed fire), then fired with its
//! dedup key: the delivery-id header, Stripe's event id, or the SHA-256 of the body.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_engine::spec::triggers::{BodySchema, SignatureScheme, TriggerKind, WebhookTrigger, compile_schema};
use tollgate_engine::trigger::signature::{self, SignatureError};

use crate::system::now_ms;
use crate::triggers::board::Endpoint;
use crate::triggers::fire::{FireError, FireResult};
use crate::triggers::source::{TriggerContext, TriggerError, TriggerSource};

pub struct WebhookSource;

#[async_trait]
impl TriggerSource for WebhookSource {
    async fn run(&self, ctx: &TriggerContext) -> Result<(), TriggerError> {
        let TriggerKind::Webhook(hook) = ctx.trigger.kind() else {
            return Err(TriggerError("not a webhook trigger".into()));
        };
        let schema = hook.schema.as_ref().map(compile_schema).transpose().map_err(TriggerError)?.map(Arc::new);
        let secret = ensure_secret(ctx).await?;
        open_endpoint(ctx, secret, schema);
        ctx.shutdown.cancelled().await;
        close_endpoint(ctx);
        Ok(())
    }
}

/// The trigger's secret, generated (random, 32 bytes) on first use.
pub(crate) async fn ensure_secret(ctx: &TriggerContext) -> Result<Vec<u8>, TriggerError> {
    let fresh = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
    Ok(ctx.store().ensure_trigger_secret(ctx.workflow(), &ctx.id(), &fresh).await?.into_bytes())
}

pub(crate) fn open_endpoint(ctx: &TriggerContext, secret: Vec<u8>, schema: Option<Arc<BodySchema>>) {
    let endpoint =
        Endpoint { spec: ctx.spec.clone(), trigger: ctx.trigger.clone(), secret, schema, context: ctx.clone() };
    ctx.board.set_endpoint(ctx.workflow(), &ctx.id(), Some(Arc::new(endpoint)));
    ctx.set_connected(true);
}

pub(crate) fn close_endpoint(ctx: &TriggerContext) {
    ctx.board.set_endpoint(ctx.workflow(), &ctx.id(), None);
    ctx.set_connected(false);
}

/// What became of a delivery, for the HTTP answer.
#[derive(Debug)]
pub enum Delivery {
    /// The signature did not verify (401): counted, nothing recorded.
    Rejected(SignatureError),
    /// Recorded: started, duplicate, or failed (schema).
    Fired(FireResult),
    /// Nothing durable happened (503): the sender should retry.
    Unavailable(FireError),
}

/// Verify, dedup and fire one delivery whose body is within the size limit.
pub async fn deliver(endpoint: &Endpoint, hook: &WebhookTrigger, headers: &HeaderMap, body: &[u8]) -> Delivery {
    let ctx = &endpoint.context;
    let header_name = hook.signature_header();
    let header = headers.get(header_name).and_then(|v| v.to_str().ok());
    let now_s = now_ms() / 1000;
    if let Err(e) =
        signature::verify(hook.signature, header_name, header, &endpoint.secret, body, hook.tolerance, now_s)
    {
        ctx.board.rejected(ctx.workflow(), &ctx.id());
        return Delivery::Rejected(e);
    }
    let payload: Value =
        serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let key = dedup_key(hook, headers, &payload, body);
    let source = match &key {
        k if k.starts_with("delivery:") => format!("delivery {}", &k["delivery:".len()..]),
        _ => "delivery (body hash)".to_string(),
    };
    let result = match endpoint.schema.as_ref().map(|s| s.check(&payload)) {
        Some(Err(problem)) => {
            ctx.fire_failed(key, source, format!("the body does not fit the trigger's schema: {problem}")).await
        }
        _ => ctx.fire(key, json_payload(payload, headers), source).await,
    };
    match result {
        Ok(r) => Delivery::Fired(r),
        Err(e) => Delivery::Unavailable(e),
    }
}

/// The run sees the body as `payload.body` and the headers a workflow may want as `payload.headers`.
fn json_payload(body: Value, headers: &HeaderMap) -> Value {
    let mut h = serde_json::Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        // Signatures and credentials stay out of the run.
        if matches!(name, "authorization" | "cookie" | "x-hub-signature" | "x-hub-signature-256" | "stripe-signature")
            || name.contains("signature")
        {
            continue;
        }
        if let Ok(v) = value.to_str() {
            h.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    json!({ "body": body, "headers": h })
}

/// The delivery's dedup key: its delivery id (header, or Stripe's event id), else the body's hash.
fn dedup_key(hook: &WebhookTrigger, headers: &HeaderMap, payload: &Value, body: &[u8]) -> String {
    let from_header = hook
        .delivery_id_header()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    if let Some(id) = from_header {
        return format!("delivery:{}", id.trim());
    }
    if hook.signature == SignatureScheme::Stripe
        && let Some(id) = payload.get("id").and_then(Value::as_str)
    {
        return format!("delivery:{id}");
    }
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}
