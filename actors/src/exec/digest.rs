//! Canonical JSON (keys in ascending byte order at every level, no whitespace, strings and
//! numbers as `serde_json` writes them) and the SHA-256 digests of it that audit entries
//! carry for inputs and outputs. Written straight into a byte buffer: digests are taken
//! twice per journaled step.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of the canonical JSON of `value`.
pub fn digest(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    canonical_json(value, &mut out);
    lowercase_hex(&Sha256::digest(&out))
}

/// `bytes` in lowercase hex. By hand: `hex::encode` goes through a char iterator (≈ 2,000
/// instructions for 32 bytes, more than the SHA-NI hash itself).
pub fn lowercase_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// Appends the canonical JSON of `value` to `out`.
pub fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(fields) => {
            out.push(b'{');
            // serde_json's map is ordered by key already unless its `preserve_order`
            // feature is on somewhere in the build: sort only then.
            if fields.keys().is_sorted() {
                for (n, (key, v)) in fields.iter().enumerate() {
                    field(n, key, v, out);
                }
            } else {
                let mut sorted: Vec<(&String, &Value)> = fields.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (n, (key, v)) in sorted.into_iter().enumerate() {
                    field(n, key, v, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::String(s) => string(s, out),
        Value::Number(n) => {
            // Writing a number into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

fn field(n: usize, key: &str, value: &Value, out: &mut Vec<u8>) {
    if n > 0 {
        out.push(b',');
    }
    string(key, out);
    out.push(b':');
    canonical_json(value, out);
}

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it.
fn string(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(value: &Value) -> String {
        let mut out = Vec::new();
        canonical_json(value, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn digests_ignore_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b = json!({"a": {"x": "s", "y": [1, 2]}, "b": 1});
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&json!({"b": 2})));
        assert_eq!(text(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
        assert_eq!(
            digest(&json!(null)),
            "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b"
        );
    }

    #[test]
    fn scalars_are_written_as_serde_json_writes_them() {
        for value in [
            json!("quote \" backslash \\ tab \t nl \n ctl \u{1} del \u{7f} é / 漢"),
            json!(-12),
            json!(u64::MAX),
            json!(0.1),
            json!(1e300),
            json!(null),
            json!(true),
            json!(false),
            json!([]),
            json!({}),
        ] {
            assert_eq!(text(&value), value.to_string());
        }
        assert_eq!(
            text(&json!({"\u{1}k": [null, {"z": 1, "é": 2}]})),
            r#"{"\u0001k":[null,{"z":1,"é":2}]}"#
        );
    }
}
