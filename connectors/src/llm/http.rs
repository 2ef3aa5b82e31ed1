//! One JSON exchange with a model provider, retried on 408/429/5xx and connection failures
//! (honouring `Retry-After` up to the provider's `max_retry_after`, else exponential backoff
//! from 500 ms), with clear, non-retried errors for 401/403 (`model_auth`) and other 4xx
//! (`model_bad_request`). When retries run out the last failure is returned with its class, so
//! the step's own retry policy can take over.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tollgate_engine::llm::ProviderConfig;
use tollgate_engine::step::{ErrorClass, StepError};

use crate::steps::api_call::{retry_after, transport_error};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How much of an error body is quoted: the provider's reason, not a page of HTML.
const EXCERPT_CHARS: usize = 300;

/// A provider's HTTP client and retry settings.
#[derive(Debug)]
pub struct Exchange {
    client: Client,
    max_retries: u32,
    max_retry_after: Duration,
}

impl Exchange {
    pub fn new(config: &ProviderConfig) -> Result<Self, String> {
        let client = Client::builder()
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self { client, max_retries: config.max_retries, max_retry_after: config.max_retry_after })
    }

    /// POST `body` to `url` with `headers`; the answer's JSON.
    pub async fn post(&self, url: &str, headers: HeaderMap, body: &Value) -> Result<Value, StepError> {
        let mut retries = 0;
        loop {
            let failure = match self.client.post(url).headers(headers.clone()).json(body).send().await {
                Err(e) => transport_error(e),
                Ok(response) => {
                    let status = response.status();
                    let response_headers = response.headers().clone();
                    let text = response.text().await.map_err(transport_error);
                    match (status.is_success(), text) {
                        (_, Err(e)) => e,
                        (true, Ok(text)) => {
                            return serde_json::from_str(&text).map_err(|e| {
                                StepError::retryable(
                                    "model_reply",
                                    format!("the provider's answer is not JSON ({e}): {}", excerpt(&text)),
                                )
                            });
                        }
                        (false, Ok(text)) => status_error(status, &response_headers, &text),
                    }
                }
            };
            let wait = match &failure.class {
                ErrorClass::Permanent => return Err(failure),
                ErrorClass::RetryAfter { after_ms } => {
                    let after = Duration::from_millis(*after_ms);
                    if after > self.max_retry_after {
                        return Err(StepError {
                            message: format!(
                                "{} (asked to wait {after:?}, more than max_retry_after {:?})",
                                failure.message, self.max_retry_after
                            ),
                            ..failure
                        });
                    }
                    after
                }
                ErrorClass::Retryable => (FIRST_BACKOFF * 2u32.saturating_pow(retries)).min(self.max_retry_after),
            };
            if retries >= self.max_retries {
                return Err(failure);
            }
            retries += 1;
            tracing::debug!(url, retries, ?wait, error = %failure, "model call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

fn excerpt(text: &str) -> String {
    text.trim().chars().take(EXCERPT_CHARS).collect()
}

/// The provider's own reason, when its error body says one (`{"error": {"message": …}}`).
fn reason(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| excerpt(text))
}

fn status_error(status: StatusCode, headers: &HeaderMap, text: &str) -> StepError {
    let message = format!("HTTP {status}: {}", reason(text));
    match status.as_u16() {
        401 | 403 => StepError::permanent(
            "model_auth",
            format!("{message} (check the provider's API key: `tollgate secrets set`)"),
        ),
        429 | 503 | 529 if headers.get(RETRY_AFTER).is_some() => {
            match headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| retry_after(v, SystemTime::now()))
            {
                Some(after) => StepError::retry_after("http_status", after, message),
                None => StepError::retryable("http_status", message),
            }
        }
        408 | 409 | 429 => StepError::retryable("http_status", message),
        s if s >= 500 => StepError::retryable("http_status", message),
        _ => StepError::permanent("model_bad_request", message),
    }
}
