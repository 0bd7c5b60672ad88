//! Test fixture `fixture-kv`: the plugin KV as the call's input says, values as UTF-8 text.
//!
//! - `get` `{"key"}` → `{"value": text | null}`;
//! - `set-if-absent` `{"key", "value", "writes"?: [{"key", "value": text | null}],
//!   "generate"?: {"count", "bytes"}}` → `{"held": text | null}`; `generate` appends
//!   `count` writes `generated/<i>` of `bytes` bytes each (batches over the host's limits
//!   without a huge input);
//! - `apply-once` `{"output", "writes"?}` → `apply_once(idempotency key)` of that output
//!   and those writes.

use eyeflow_plugin_sdk::kv::{self, Write};
use eyeflow_plugin_sdk::{Capability, PluginError, Value, apply_once, json};

struct FixtureKv;

fn text<'a>(input: &'a Value, field: &str) -> Result<&'a str, PluginError> {
    input[field]
        .as_str()
        .ok_or_else(|| PluginError::invalid_input(format!("`{field}` must be a string")))
}

fn writes(input: &Value) -> Result<Vec<Write>, PluginError> {
    let mut writes = Vec::new();
    for write in input["writes"].as_array().into_iter().flatten() {
        let key = text(write, "key")?;
        writes.push(match write["value"].as_str() {
            Some(value) => Write::set(key, value),
            None => Write::delete(key),
        });
    }
    if let Some(generate) = input.get("generate") {
        let count = generate["count"].as_u64().unwrap_or(0);
        let bytes = usize::try_from(generate["bytes"].as_u64().unwrap_or(0))
            .map_err(|_| PluginError::invalid_input("`generate.bytes` is too large"))?;
        for i in 0..count {
            writes.push(Write::set(format!("generated/{i}"), vec![b'x'; bytes]));
        }
    }
    Ok(writes)
}

fn as_text(bytes: Option<Vec<u8>>) -> Value {
    bytes.map_or(Value::Null, |b| {
        Value::String(String::from_utf8_lossy(&b).into_owned())
    })
}

impl Capability for FixtureKv {
    fn describe() -> Value {
        json!({"id": "fixture-kv", "actions": ["get", "set-if-absent", "apply-once"]})
    }

    fn invoke(action: &str, input: Value, idempotency_key: &str) -> Result<Value, PluginError> {
        match action {
            "get" => Ok(json!({"value": as_text(kv::get(text(&input, "key")?)?)})),
            "set-if-absent" => {
                let held = kv::set_if_absent(
                    text(&input, "key")?,
                    text(&input, "value")?.as_bytes(),
                    writes(&input)?,
                )?;
                Ok(json!({"held": as_text(held)}))
            }
            "apply-once" => {
                let writes = writes(&input)?;
                apply_once(idempotency_key, || Ok((input["output"].clone(), writes)))
            }
            other => Err(PluginError::invalid_input(format!(
                "unknown action {other:?} (get, set-if-absent, apply-once)"
            ))),
        }
    }
}

eyeflow_plugin_sdk::export_capability!(FixtureKv);
