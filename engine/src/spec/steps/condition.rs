//! `condition` steps: a CEL expression, evaluated inside `apply` (no job); a false result skips
//! the steps that need it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::expr::{self, ExprError, Scope};
use crate::spec::steps::StepShape;

/// `condition`: a CEL expression decides the branch; when it is false, the steps that need
/// this one are skipped. Evaluated by the engine itself, without a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionStep {
    /// The CEL expression (over `params` and `steps`) whose truth decides the branch.
    pub expr: String,
}

impl ConditionStep {
    pub const FIELDS: &'static [&'static str] = &["expr"];

    /// The branch taken: the expression evaluated over the run's parameters and settled steps.
    pub fn evaluate(&self, scope: &Scope<'_>) -> Result<bool, ExprError> {
        expr::eval_bool(&self.expr, scope)
    }
}

impl StepShape for ConditionStep {
    fn expressions(&self, at: &str) -> Vec<(String, String)> {
        vec![(format!("{at}.expr"), self.expr.clone())]
    }
}
