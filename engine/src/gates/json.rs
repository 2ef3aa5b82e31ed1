//! JSON outputs: every string value and object key is scanned on its own, findings are located by
//! JSON pointer (RFC 6901) plus a byte span inside that string, and the redacted document is the
//! same JSON with only the affected strings rewritten. Pointers are built only for strings with
//! findings, so a clean document costs no allocation per node.

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

/// One step of a JSON pointer.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The RFC 6901 pointer of a path (built only for strings that have findings).
fn pointer(path: &[Seg<'_>]) -> String {
    let mut p = String::new();
    for seg in path {
        p.push('/');
        match seg {
            Seg::Key(k) => p.push_str(&escape(k)),
            Seg::Index(i) => p.push_str(&i.to_string()),
        }
    }
    p
}

/// Calls `f(path, text, in_key)` for every string and key, depth first. Iterative: a deep
/// document cannot overflow the stack.
fn walk<'a, E>(root: &'a Value, mut f: impl FnMut(&[Seg<'a>], &'a str, bool) -> Result<(), E>) -> Result<(), E> {
    let mut stack: Vec<(usize, Option<Seg<'a>>, &'a Value)> = vec![(0, None, root)];
    let mut path: Vec<Seg<'a>> = Vec::new();
    while let Some((depth, seg, v)) = stack.pop() {
        path.truncate(depth.saturating_sub(1));
        path.extend(seg);
        match v {
            Value::String(s) => f(&path, s, false)?,
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push((depth + 1, Some(Seg::Index(i)), item));
                }
            }
            Value::Object(m) => {
                for k in m.keys() {
                    path.push(Seg::Key(k));
                    f(&path, k, true)?;
                    path.pop();
                }
                for (k, item) in m.iter().rev() {
                    stack.push((depth + 1, Some(Seg::Key(k)), item));
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
        scanner.scan_str(s, None, in_key, &mut found)?;
        if found.len() > before {
            let p = pointer(path);
            for f in &mut found[before..] {
                f.path = Some(p.clone());
            }
            texts.insert((p, in_key), s.to_string());
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
