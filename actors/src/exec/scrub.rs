//! Secret values out of what is stored: a [`Scrubber`] remembers the secrets resolved during
//! an attempt (or a plugin call) and replaces every occurrence of their values in messages
//! and outputs by `[secret:NAME]` before they reach the journal, the audit, logs or the API.

use serde_json::{Map, Value};

use crate::ports::Secret;

/// The secrets one attempt or call resolved, by name, and how to take their values out of
/// text and JSON.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// `(name, forms of the value)`: the value itself and its JSON-escaped form when that
    /// differs (a provider's error may quote a JSON request).
    secrets: Vec<(String, Vec<String>)>,
}

impl Scrubber {
    /// An empty scrubber (scrubs nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers that secret `name` resolved to `value` (an empty value is ignored).
    pub fn add(&mut self, name: &str, value: &Secret) {
        self.add_value(name, value.expose());
    }

    /// Also scrubs every secret `other` scrubs.
    pub fn absorb(&mut self, other: Scrubber) {
        for (name, forms) in other.secrets {
            self.add_value(&name, &forms[0]);
        }
    }

    /// As [`Scrubber::add`], from the exposed value.
    pub fn add_value(&mut self, name: &str, value: &str) {
        if value.is_empty() || self.secrets.iter().any(|(_, f)| f[0] == value) {
            return;
        }
        let mut forms = vec![value.to_owned()];
        if let Ok(quoted) = serde_json::to_string(value) {
            let escaped = &quoted[1..quoted.len() - 1];
            if escaped != value {
                forms.push(escaped.to_owned());
            }
        }
        self.secrets.push((name.to_owned(), forms));
        // Longest first, so a value that contains another is replaced whole.
        self.secrets
            .sort_by_key(|(_, forms)| std::cmp::Reverse(forms[0].len()));
    }

    /// Whether no secret was remembered.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Adds the secrets of `other`.
    pub fn extend(&mut self, other: &Scrubber) {
        for (name, forms) in &other.secrets {
            self.add_value(name, &forms[0]);
        }
    }

    /// `text` with every secret value replaced by `[secret:NAME]`.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        self.scrub_string(&mut out);
        out
    }

    /// Replaces, in place, every secret value in `text` by `[secret:NAME]`.
    pub fn scrub_string(&self, text: &mut String) {
        for (name, forms) in &self.secrets {
            for form in forms {
                if text.contains(form.as_str()) {
                    *text = text.replace(form.as_str(), &format!("[secret:{name}]"));
                }
            }
        }
    }

    /// Replaces, in place, every secret value in the strings and object keys of `value`, at
    /// any depth (walked with a heap stack: no recursion on guest-supplied nesting).
    pub fn scrub_value(&self, value: &mut Value) {
        if self.secrets.is_empty() {
            return;
        }
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) => self.scrub_string(s),
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => {
                    if map.keys().any(|k| self.text(k) != *k) {
                        *map = std::mem::take(map)
                            .into_iter()
                            .map(|(k, v)| (self.text(&k), v))
                            .collect::<Map<String, Value>>();
                    }
                    stack.extend(map.values_mut());
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_become_names_everywhere() {
        let mut s = Scrubber::new();
        s.add("api", &Secret::new("tok-123"));
        s.add("long", &Secret::new("tok-123-long"));
        s.add("quote", &Secret::new("a\"b"));
        s.add("empty", &Secret::new(""));
        assert_eq!(
            s.text("x tok-123-long y tok-123 z"),
            "x [secret:long] y [secret:api] z"
        );
        assert_eq!(
            s.text(r#"{"prompt":"a\"b"} and a"b"#),
            r#"{"prompt":"[secret:quote]"} and [secret:quote]"#
        );
        let mut v = json!({"k": ["tok-123", {"tok-123": 1, "n": 2}], "b": true});
        s.scrub_value(&mut v);
        assert_eq!(
            v,
            json!({"k": ["[secret:api]", {"[secret:api]": 1, "n": 2}], "b": true})
        );
        assert_eq!(Scrubber::new().text("tok-123"), "tok-123");
    }

    #[test]
    fn deep_values_do_not_overflow() {
        let mut v = json!("tok");
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        let mut s = Scrubber::new();
        s.add_value("t", "tok");
        s.scrub_value(&mut v);
        let mut inner = &v;
        while let Value::Array(a) = inner {
            inner = &a[0];
        }
        assert_eq!(inner, &json!("[secret:t]"));
        // Dropping a deep Value recurses: take it apart iteratively.
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            if let Value::Array(a) = v {
                stack.extend(a);
            }
        }
    }
}
