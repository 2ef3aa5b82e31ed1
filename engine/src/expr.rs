//! Expressions: CEL for `when:`/`expr:` and `${{ … }}` templates in step inputs.
//!
//! The scope an expression sees is `params` (the run's parameters) and `steps`
//! (`steps.<id>.output`, `steps.<id>.status` for finished upstream steps). Evaluation is pure,
//! so the run state machine can evaluate conditions itself and replay gives the same result.

use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program};
use serde_json::Value;

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("expression `{src}` does not parse: {message}")]
    Syntax { src: String, message: String },
    #[error("expression `{src}` failed: {message}")]
    Eval { src: String, message: String },
    #[error("expression `{src}` must give true or false, gave {got}")]
    NotBool { src: String, got: String },
    #[error("template `{0}` has an unclosed `${{{{`")]
    Unclosed(String),
}

/// Parse an expression, reporting syntax errors.
pub fn compile(src: &str) -> Result<Program, ExprError> {
    Program::compile(src).map_err(|e| ExprError::Syntax { src: src.to_string(), message: e.to_string() })
}

/// Ids of steps an expression refers to as `steps.<id>` or `steps["<id>"]`.
pub fn referenced_steps(src: &str) -> Vec<String> {
    referenced(src, "steps")
}

/// Names of parameters an expression refers to as `params.<name>`.
pub fn referenced_params(src: &str) -> Vec<String> {
    referenced(src, "params")
}

fn referenced(src: &str, root: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while let Some(pos) = src[i..].find(root) {
        let start = i + pos;
        let end = start + root.len();
        i = end;
        let boundary_before = start == 0 || !is_ident(bytes[start - 1]) && bytes[start - 1] != b'.';
        if !boundary_before || end >= bytes.len() {
            continue;
        }
        let rest = &src[end..];
        let name = if let Some(r) = rest.strip_prefix('.') {
            Some(&r[..r.bytes().take_while(|b| is_ident(*b)).count()])
        } else if let Some(r) = rest.strip_prefix("[\"").or_else(|| rest.strip_prefix("['")) {
            r.find(['"', '\'']).map(|n| &r[..n])
        } else {
            None
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// What expressions of a run can see.
pub struct Scope<'a> {
    pub params: &'a Value,
    /// `{ "<step id>": { "output": …, "status": "succeeded" }, … }`
    pub steps: &'a Value,
}

/// Evaluate an expression to JSON.
pub fn eval(src: &str, scope: &Scope<'_>) -> Result<Value, ExprError> {
    eval_vars(src, &[("params", scope.params), ("steps", scope.steps)])
}

/// Evaluate an expression over named variables (a trigger's templates see `payload` and
/// `fire`, not a run's scope).
pub fn eval_vars(src: &str, vars: &[(&str, &Value)]) -> Result<Value, ExprError> {
    let program = compile(src)?;
    let mut ctx = Context::with_env(ENV.clone());
    let err = |message: String| ExprError::Eval { src: src.to_string(), message };
    for (name, value) in vars {
        ctx.add_variable_from_value(*name, to_cel(value));
    }
    let value = program.execute(&ctx).map_err(|e| err(e.to_string()))?;
    value.json().map_err(|e| err(e.to_string()))
}

/// Evaluate a boolean expression that also sees `extra` variables (an `event` step's
/// correlation sees `event`).
pub fn eval_bool_with(src: &str, scope: &Scope<'_>, extra: &[(&str, &Value)]) -> Result<bool, ExprError> {
    let mut vars = vec![("params", scope.params), ("steps", scope.steps)];
    vars.extend_from_slice(extra);
    match eval_vars(src, &vars)? {
        Value::Bool(b) => Ok(b),
        other => Err(ExprError::NotBool { src: src.to_string(), got: other.to_string() }),
    }
}

/// [`render`] over named variables.
pub fn render_vars(value: &Value, vars: &[(&str, &Value)]) -> Result<Value, ExprError> {
    Ok(match value {
        Value::String(s) if s.contains("${{") => {
            let segs = segments(s)?;
            if let [Segment::Expr(e)] = segs.as_slice() {
                return eval_vars(e, vars);
            }
            let mut out = String::new();
            for seg in segs {
                match seg {
                    Segment::Text(t) => out.push_str(t),
                    Segment::Expr(e) => match eval_vars(e, vars)? {
                        Value::String(v) => out.push_str(&v),
                        v => out.push_str(&v.to_string()),
                    },
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| render_vars(v, vars)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), render_vars(v, vars)?))).collect::<Result<_, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluate a boolean expression over named JSON variables (`output`, `params` for a step's
/// `checks`).
pub fn eval_bool_over(src: &str, vars: &[(&str, &Value)]) -> Result<bool, ExprError> {
    let program = compile(src)?;
    let mut ctx = Context::with_env(ENV.clone());
    for (name, value) in vars {
        ctx.add_variable_from_value(*name, to_cel(value));
    }
    let err = |message: String| ExprError::Eval { src: src.to_string(), message };
    match program.execute(&ctx).map_err(|e| err(e.to_string()))?.json().map_err(|e| err(e.to_string()))? {
        Value::Bool(b) => Ok(b),
        other => Err(ExprError::NotBool { src: src.to_string(), got: other.to_string() }),
    }
}

/// JSON to CEL. Integers become `int` (not `uint`, which serde would pick for every
/// non-negative number) so `params.n + 1` type-checks the way a spec author expects.
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => n.as_u64().map_or_else(|| cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)), cel::Value::UInt),
        },
        Value::String(s) => cel::Value::from(s.as_str()),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => cel::Value::from(
            map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect::<std::collections::HashMap<String, cel::Value>>(),
        ),
    }
}

/// Evaluate an expression that must be a boolean.
pub fn eval_bool(src: &str, scope: &Scope<'_>) -> Result<bool, ExprError> {
    match eval(src, scope)? {
        Value::Bool(b) => Ok(b),
        other => Err(ExprError::NotBool { src: src.to_string(), got: other.to_string() }),
    }
}

/// A piece of a template string.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    Expr(&'a str),
}

/// Split `"Dear ${{ params.name }},"` into text and expression segments.
pub fn segments(s: &str) -> Result<Vec<Segment<'_>>, ExprError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            out.push(Segment::Text(&rest[..start]));
        }
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| ExprError::Unclosed(s.to_string()))?;
        out.push(Segment::Expr(after[..end].trim()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    Ok(out)
}

/// Every expression inside the templates of a JSON value (strings and object keys are not
/// templated; string values are).
pub fn template_exprs(value: &Value) -> Result<Vec<String>, ExprError> {
    let mut out = Vec::new();
    walk_strings(value, &mut |s| {
        for seg in segments(s)? {
            if let Segment::Expr(e) = seg {
                out.push(e.to_string());
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn walk_strings(value: &Value, f: &mut impl FnMut(&str) -> Result<(), ExprError>) -> Result<(), ExprError> {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().try_for_each(|v| walk_strings(v, f)),
        Value::Object(map) => map.values().try_for_each(|v| walk_strings(v, f)),
        _ => Ok(()),
    }
}

/// Resolve the templates in a JSON value. A string that is exactly one `${{ expr }}` becomes
/// the expression's typed value; otherwise results are interpolated as text.
pub fn render(value: &Value, scope: &Scope<'_>) -> Result<Value, ExprError> {
    Ok(match value {
        Value::String(s) => render_str(s, scope)?,
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, scope)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), render(v, scope)?))).collect::<Result<_, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

/// Resolve the templates in a string.
pub fn render_str(s: &str, scope: &Scope<'_>) -> Result<Value, ExprError> {
    if !s.contains("${{") {
        return Ok(Value::String(s.to_string()));
    }
    let segs = segments(s)?;
    if let [Segment::Expr(e)] = segs.as_slice() {
        return eval(e, scope);
    }
    let mut out = String::new();
    for seg in segs {
        match seg {
            Segment::Text(t) => out.push_str(t),
            Segment::Expr(e) => match eval(e, scope)? {
                Value::String(v) => out.push_str(&v),
                v => out.push_str(&v.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_step_and_param_references() {
        let src = r#"steps.check.output.ok && params.limit > 3 && steps["b"].status == "x" && mysteps.z"#;
        assert_eq!(referenced_steps(src), vec!["check", "b"]);
        assert_eq!(referenced_params(src), vec!["limit"]);
    }

    #[test]
    fn renders_typed_and_interpolated_templates() {
        let params = json!({"name": "Acme", "n": 3});
        let steps = json!({"a": {"output": {"score": 0.5}, "status": "succeeded"}});
        let scope = Scope { params: &params, steps: &steps };
        let input = json!({"whole": "${{ params.n }}", "text": "Dear ${{ params.name }}, score ${{ steps.a.output.score }}", "list": ["${{ params.n + 1 }}"]});
        assert_eq!(render(&input, &scope).unwrap(), json!({"whole": 3, "text": "Dear Acme, score 0.5", "list": [4]}));
        assert!(eval_bool("steps.a.output.score < 1.0 && params.name == 'Acme'", &scope).unwrap());
    }

    #[test]
    fn errors_name_the_expression() {
        let params = json!({});
        let steps = json!({});
        let scope = Scope { params: &params, steps: &steps };
        assert!(matches!(compile("1 +"), Err(ExprError::Syntax { .. })));
        assert!(matches!(eval_bool("1 + 1", &scope), Err(ExprError::NotBool { .. })));
        assert!(matches!(segments("a ${{ b"), Err(ExprError::Unclosed(_))));
    }
}
