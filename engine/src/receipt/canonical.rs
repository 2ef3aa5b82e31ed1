//! Canonical JSON: what a signature covers. Object keys sorted, no whitespace, strings and
//! numbers as serde_json writes them; a receipt read back and re-encoded gives the same bytes.

use serde_json::Value;

pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&serde_json::to_vec(k).expect("strings serialise"));
                out.push(b':');
                write(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(&serde_json::to_vec(scalar).expect("scalars serialise")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_does_not_matter_and_round_trips_are_stable() {
        let a = json!({"b": 1, "a": {"y": [1, "x", null], "x": 0.25}});
        let b: Value = serde_json::from_str(r#"{"a":{"x":0.25,"y":[1,"x",null]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), br#"{"a":{"x":0.25,"y":[1,"x",null]},"b":1}"#.to_vec());
        let f = json!({"c": 0.949999988079071_f64});
        let back: Value = serde_json::from_slice(&serde_json::to_vec_pretty(&f).unwrap()).unwrap();
        assert_eq!(canonical_json(&f), canonical_json(&back));
    }
}
