//! Bounds on the values an execution keeps: every instruction result (whatever port it
//! came from: a plugin, an HTTP answer, a model, a memory read) and every event payload is
//! checked here before it is journaled, and a failure message is cut to a length. A journal
//! record holds such a value a few levels down, so every record the journal writes stays
//! within what it can read back.

use serde_json::Value;

/// Deepest nesting of arrays and objects in a result or an event payload.
pub const MAX_DEPTH: usize = 64;
/// Largest result or event payload, in bytes of compact JSON.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Longest failure message kept, in bytes.
pub const MAX_MESSAGE: usize = 4 * 1024;

/// Why `value` is out of bounds (`what` names it: "result of `read`"), or `None`.
pub fn check(value: &Value, what: &str) -> Option<String> {
    let (depth, bytes) = measure(value, MAX_DEPTH, MAX_BYTES);
    if depth > MAX_DEPTH {
        return Some(format!(
            "{what} is nested more than {MAX_DEPTH} levels deep (limit {MAX_DEPTH})"
        ));
    }
    if bytes > MAX_BYTES {
        return Some(format!(
            "{what} is larger than {MAX_BYTES} bytes of JSON (limit {MAX_BYTES})"
        ));
    }
    None
}

/// The nesting depth and the size in bytes of compact JSON of `value`, walked without
/// recursion; stops counting once past `max_depth` or `max_bytes`.
pub fn measure(value: &Value, max_depth: usize, max_bytes: usize) -> (usize, usize) {
    let mut stack = vec![(value, 0usize)];
    let (mut deepest, mut bytes) = (0usize, 0usize);
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if deepest > max_depth || bytes > max_bytes {
            break;
        }
        match value {
            Value::Null | Value::Bool(_) => bytes += 5,
            Value::Number(n) => bytes += n.to_string().len(),
            Value::String(s) => bytes += s.len() + 2,
            Value::Array(items) => {
                bytes += 2 + items.len().saturating_sub(1);
                stack.extend(items.iter().map(|v| (v, depth + 1)));
            }
            Value::Object(map) => {
                bytes += 2 + map.len().saturating_sub(1);
                for (key, v) in map {
                    bytes += key.len() + 3;
                    stack.push((v, depth + 1));
                }
            }
        }
    }
    (deepest, bytes)
}

/// `message` cut to [`MAX_MESSAGE`] bytes (at a character boundary), saying how much was
/// cut.
pub fn cut_message(message: &mut String) {
    if message.len() <= MAX_MESSAGE {
        return;
    }
    let total = message.len();
    let mut at = MAX_MESSAGE;
    while !message.is_char_boundary(at) {
        at -= 1;
    }
    message.truncate(at);
    message.push_str(&format!("… ({} of {total} bytes cut)", total - at));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        let mut value = Value::from(1);
        for _ in 0..depth {
            value = Value::Array(vec![value]);
        }
        value
    }

    #[test]
    fn depth_and_size_are_bounded() {
        assert_eq!(check(&nested(MAX_DEPTH), "x"), None);
        let deep = check(&nested(MAX_DEPTH + 1), "result of `a`").expect("too deep");
        assert!(
            deep.contains("result of `a`") && deep.contains("64"),
            "{deep}"
        );
        let big = Value::String("x".repeat(MAX_BYTES));
        assert!(check(&big, "x").expect("too big").contains("bytes"));
        let (depth, bytes) = measure(&serde_json::json!({"a": [1, "bc"]}), 10, 1000);
        assert_eq!(depth, 2);
        assert_eq!(bytes, serde_json::json!({"a": [1, "bc"]}).to_string().len());
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let mut message = "é".repeat(MAX_MESSAGE);
        cut_message(&mut message);
        assert!(message.len() < MAX_MESSAGE + 40, "{}", message.len());
        assert!(message.ends_with("bytes cut)"));
        let mut short = "fine".to_owned();
        cut_message(&mut short);
        assert_eq!(short, "fine");
    }
}
