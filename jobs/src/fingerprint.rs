//! The fingerprint of a request: what "the same body" means for an idempotency key.
//!
//! Bodies are compared as JSON values, not bytes: key order and whitespace do not matter,
//! so a client that re-serializes its request still gets its replay.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 over the canonical JSON of `value` (keys sorted, no whitespace), without the
/// batch item's own `idempotency_key`.
pub fn of_request(value: &Value) -> String {
    let mut canonical = String::new();
    match value {
        Value::Object(map) => {
            let without_key: serde_json::Map<String, Value> =
                map.iter().filter(|(k, _)| *k != "idempotency_key").map(|(k, v)| (k.clone(), v.clone())).collect();
            write_canonical(&Value::Object(without_key), &mut canonical);
        }
        other => write_canonical(other, &mut canonical),
    }
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_and_batch_key_do_not_matter() {
        let a = json!({"kind": "email", "payload": {"to": "a@x.org", "subject": "s"}});
        let b: Value = serde_json::from_str(
            r#"{ "payload": {"subject":"s","to":"a@x.org"}, "kind":"email", "idempotency_key": "k" }"#,
        )
        .unwrap();
        assert_eq!(of_request(&a), of_request(&b));
    }

    #[test]
    fn any_change_of_value_matters() {
        let a = json!({"kind": "email", "payload": {"n": [1, 2]}});
        let b = json!({"kind": "email", "payload": {"n": [2, 1]}});
        let c = json!({"kind": "email", "payload": {"n": [1, 2]}, "delay_seconds": 1});
        assert_ne!(of_request(&a), of_request(&b));
        assert_ne!(of_request(&a), of_request(&c));
    }
}
