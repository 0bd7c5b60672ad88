//! Test fixture `fixture-hostile`: one capability whose actions attack the sandbox so
//! the host's limits can be tested: `spin` (endless loop), `bomb` (unbounded memory),
//! `trap` (panic), `http` (GET `input.url`), `secret` (read secret `input.name`; with
//! `input.echo` = `output`, `error`, `log` or `panic` it hands the value back that way, to test
//! that the host scrubs it), `sleep` (blocks in WASI for `input.ms`), `deep` (a result nested
//! `input.depth` levels), `huge` (a result of `input.bytes` bytes), `kv_spam` (`input.n` KV
//! keys of `input.size` bytes; reports how many were written before a refusal), `kv_then_trap`
//! (writes `input.n` keys, then panics), `log_spam` (`input.lines` log lines of 4 KiB),
//! `stderr` (`input.bytes` bytes on stderr, then ok), `time` (what the WASI clocks say), `ok`.

use std::hint::black_box;

use eyeflow_plugin_sdk::{Capability, PluginError, Value, http, json, kv, log, secrets};

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

fn number(input: &Value, field: &str) -> Result<u64, PluginError> {
    input[field]
        .as_u64()
        .ok_or_else(|| PluginError::invalid_input(format!("`{field}` must be an integer")))
}

fn deep(depth: u64) -> Value {
    let mut value = json!("bottom");
    for _ in 0..depth {
        value = Value::Array(vec![value]);
    }
    value
}

fn kv_spam(n: u64, size: u64) -> Result<Value, PluginError> {
    let value = vec![0x5A; usize::try_from(size).unwrap_or(0)];
    for i in 0..n {
        if let Err(e) = kv::set(&format!("spam/{i}"), &value) {
            return Err(PluginError::unavailable(format!("after {i} keys: {e:?}")));
        }
    }
    Ok(json!({"written": n}))
}

impl Capability for Hostile {
    fn describe() -> Value {
        json!({"id": "fixture-hostile", "actions": ["spin", "bomb", "trap", "http", "secret", "sleep", "deep", "huge", "kv_spam", "kv_then_trap", "log_spam", "stderr", "time", "ok"]})
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
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(number(&input, "ms")?));
                Ok(json!({"slept": true}))
            }
            "deep" => Ok(deep(number(&input, "depth")?)),
            "huge" => Ok(json!({"blob": "x".repeat(usize::try_from(number(&input, "bytes")?).unwrap_or(0))})),
            "kv_spam" => kv_spam(number(&input, "n")?, number(&input, "size")?),
            "kv_then_trap" => {
                for i in 0..number(&input, "n")? {
                    kv::set(&format!("partial/{i}"), b"written before the trap")?;
                }
                panic!("fixture-hostile: trap after KV writes")
            }
            "log_spam" => {
                let line = "L".repeat(4096);
                for _ in 0..number(&input, "lines")? {
                    log::info(&line);
                }
                Ok(json!({"ok": true}))
            }
            "stderr" => {
                use std::io::Write;
                let chunk = vec![b'E'; 1024];
                let mut left = number(&input, "bytes")?;
                let mut stderr = std::io::stderr();
                while left > 0 {
                    let n = left.min(1024);
                    let _ = stderr.write_all(&chunk[..usize::try_from(n).unwrap_or(0)]);
                    left -= n;
                }
                Ok(json!({"ok": true}))
            }
            "time" => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                Ok(json!({"wall_s": wall}))
            }
            "ok" => Ok(json!({"ok": true})),
            other => Err(PluginError::invalid_input(format!(
                "unknown action {other:?}"
            ))),
        }
    }
}

eyeflow_plugin_sdk::export_capability!(Hostile);
