//! JSON outputs: every string value and object key is scanned on its own, findings are located by
//! JSON pointer (RFC 6901) plus a byte span inside that string, and the redacted document is the
//! same JSON with only the affected strings rewritten.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::gates::mesh::timed_out;
use crate::gates::policy::GatePolicy;
use crate::gates::redact::{RedactionMap, Replacement, apply};
use crate::gates::rules::Ruleset;
use crate::gates::scan::{Located, Scanner, decide, fail_closed};
use crate::gates::verdict::GateVerdict;

/// Escapes one reference token of a JSON pointer.
pub(crate) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Calls `f(pointer, text, in_key)` for every string and key, depth first, in document order.
fn walk<E>(root: &Value, mut f: impl FnMut(&str, &str, bool) -> Result<(), E>) -> Result<(), E> {
    let mut stack: Vec<(String, &Value)> = vec![(String::new(), root)];
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::String(s) => f(&path, s, false)?,
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push((format!("{path}/{i}"), item));
                }
            }
            Value::Object(m) => {
                let children: Vec<_> = m.iter().collect();
                for (k, item) in children.into_iter().rev() {
                    let p = format!("{path}/{}", escape(k));
                    f(&p, k, true)?;
                    stack.push((p, item));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn scan(
    rs: &Ruleset,
    value: &Value,
    policy: &GatePolicy,
    map: &mut RedactionMap,
) -> (GateVerdict, Option<Value>) {
    let mut total = 0usize;
    let _ = walk::<()>(value, |_, s, _| {
        total += s.len();
        Ok(())
    });
    if total > policy.max_input_bytes {
        let msg = format!("output strings total {total} bytes, over the limit of {} bytes", policy.max_input_bytes);
        return (fail_closed("mesh.oversize", msg, &rs.id), None);
    }
    let scanner = Scanner::new(rs, policy);
    let mut found: Vec<Located<'_>> = Vec::new();
    let mut texts: HashMap<(String, bool), String> = HashMap::new();
    let res = walk(value, |path, s, in_key| -> Result<(), crate::gates::scan::Timeout> {
        let before = found.len();
        scanner.scan_str(s, Some(path), in_key, &mut found)?;
        if found.len() > before {
            texts.insert((path.to_string(), in_key), s.to_string());
        }
        Ok(())
    });
    if res.is_err() {
        return (timed_out(policy, &rs.id), None);
    }
    let keys: Vec<(String, bool, crate::gates::verdict::Span)> =
        found.iter().map(|f| (f.path.clone().unwrap_or_default(), f.in_key, f.span)).collect();
    let (verdict, placeholders) = decide(found, policy, map, &rs.id);
    let mut reps: HashMap<(String, bool), Vec<Replacement>> = HashMap::new();
    for ((path, in_key, span), p) in keys.into_iter().zip(placeholders) {
        if let Some(placeholder) = p {
            reps.entry((path, in_key)).or_default().push(Replacement { span, placeholder });
        }
    }
    if reps.is_empty() {
        return (verdict, None);
    }
    let rewritten: HashMap<(String, bool), String> = reps
        .into_iter()
        .map(|(k, r)| {
            let new = apply(&texts[&k], r);
            (k, new)
        })
        .collect();
    (verdict, Some(rebuild(value, String::new(), &rewritten)))
}

/// A copy of `v` with the strings (and keys) at the given pointers replaced.
fn rebuild(v: &Value, path: String, rewritten: &HashMap<(String, bool), String>) -> Value {
    match v {
        Value::String(s) => Value::String(rewritten.get(&(path, false)).cloned().unwrap_or_else(|| s.clone())),
        Value::Array(items) => Value::Array(
            items.iter().enumerate().map(|(i, item)| rebuild(item, format!("{path}/{i}"), rewritten)).collect(),
        ),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, item) in m {
                let p = format!("{path}/{}", escape(k));
                let key = rewritten.get(&(p.clone(), true)).cloned().unwrap_or_else(|| k.clone());
                out.insert(key, rebuild(item, p, rewritten));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}
