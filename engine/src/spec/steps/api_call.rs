//! `api_call` steps: one HTTP request, run as a job by the `api_call` handler
//! (`tollgate-connectors`); the request's strings may hold `${{ … }}` templates, resolved into
//! the attempt's input before dispatch.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::SpecProblem;
use crate::spec::steps::StepShape;
use crate::spec::validate::problem;

/// `api_call`: one HTTP request; its strings may hold `${{ … }}` templates. The response
/// (status, kept headers, body) is the output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiCallStep {
    /// The HTTP request.
    pub request: HttpRequestSpec,
}

impl ApiCallStep {
    pub const FIELDS: &'static [&'static str] = &["request"];
}

impl StepShape for ApiCallStep {
    fn check(&self, at: &str, p: &mut Vec<SpecProblem>) {
        let r = &self.request;
        if !is_http_method(&r.method) {
            p.push(problem(format!("{at}.request.method"), format!("`{}` is not an HTTP method", r.method)));
        }
        if r.url.trim().is_empty() {
            p.push(problem(format!("{at}.request.url"), "must not be empty"));
        }
    }

    fn templates(&self, at: &str) -> Vec<(String, Value)> {
        vec![(format!("{at}.request"), serde_json::to_value(&self.request).unwrap_or(Value::Null))]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestSpec {
    #[serde(default = "get")]
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

fn get() -> String {
    "GET".into()
}

/// HTTP methods accepted by `api_call` (checked here to keep the engine free of HTTP crates).
pub(crate) fn is_http_method(s: &str) -> bool {
    matches!(s.to_ascii_uppercase().as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS")
}
