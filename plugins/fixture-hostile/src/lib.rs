//! Test fixture `fixture-hostile`: one capability whose actions attack the sandbox so
//! the host's limits can be tested: `spin` (endless loop), `bomb` (unbounded memory),
//! `trap` (panic), `http` (GET `input.url`), `secret` (read secret `input.name`; with
//! `input.echo` = `output`, `error`, `log` or `panic` it hands the value back that way, to test
//! that the host scrubs it), `ok`.

use std::hint::black_box;

use eyeflow_plugin_sdk::{Capability, PluginError, Value, http, json, log, secrets};

struct Hostile;

fn string_field<'a>(input: &'a Value, field: &str) -> Result<&'a str, PluginError> {
    input[field]
        .as_str()
        .ok_or_else(|| PluginError::invalid_input(format!("`{field}` must be a string")))
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn bomb() -> ! {
    // 1 MiB chunks, written and kept alive, until the host's memory limit traps us.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        chunks.push(black_box(vec![0xA5; 1 << 20]));
        black_box(&chunks);
    }
}

impl Capability for Hostile {
    fn describe() -> Value {
        json!({"id": "fixture-hostile", "actions": ["spin", "bomb", "trap", "http", "secret", "ok"]})
    }

    fn invoke(action: &str, input: Value, _idempotency_key: &str) -> Result<Value, PluginError> {
        log::warn(&format!("hostile action {action}"));
        match action {
            "spin" => spin(),
            "bomb" => bomb(),
            "trap" => panic!("fixture-hostile: trap requested"),
            "http" => {
                let response = http::send(http::Request::get(string_field(&input, "url")?))?;
                Ok(json!({"status": response.status}))
            }
            "secret" => {
                let value = secrets::get(string_field(&input, "name")?)?;
                match input["echo"].as_str() {
                    Some("output") => Ok(json!({"value": value, "nested": [{"again": value}]})),
                    Some("error") => Err(PluginError::unavailable(format!(
                        "upstream refused the token {value}"
                    ))),
                    Some("log") => {
                        log::warn(&format!("using token {value}"));
                        Ok(json!({"length": value.len()}))
                    }
                    Some("panic") => panic!("fixture-hostile: token {value}"),
                    _ => Ok(json!({"length": value.len()})),
                }
            }
            "ok" => Ok(json!({"ok": true})),
            other => Err(PluginError::invalid_input(format!(
                "unknown action {other:?}"
            ))),
        }
    }
}

eyeflow_plugin_sdk::export_capability!(Hostile);
