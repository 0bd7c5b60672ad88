//! `valve-sim`: simulated valves with a position from 0 (closed) to 100 (open).
//!
//! Actions `open`, `close`, `set` (`{"valve", "position"}`) and `read`. A valve's state
//! lives in the plugin KV under `state/<valve>` so a postcondition can read it back. An
//! action applied under an idempotency key already seen returns the stored result
//! instead of acting again; the last `KEEP_KEYS` keys are remembered.

use eyeflow_plugin_sdk::{Capability, PluginError, Value, json, kv, log};

/// How many applied idempotency keys are remembered.
const KEEP_KEYS: u64 = 256;
/// The next slot a remembered key takes (a counter; the slot is its value modulo KEEP_KEYS).
const NEXT_SLOT: &str = "applied-next";

struct ValveSim;

fn valve_of(input: &Value) -> Result<&str, PluginError> {
    match input.get("valve").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(PluginError::invalid_input(
            "`valve` must be a non-empty string, e.g. \"valve/v-101\"",
        )),
    }
}

fn state_key(valve: &str) -> String {
    format!("state/{valve}")
}

fn current(valve: &str) -> Result<Value, PluginError> {
    Ok(kv::get_json::<Value>(&state_key(valve))?
        .unwrap_or_else(|| json!({"valve": valve, "position": 0, "open": false})))
}

fn position_of(action: &str, input: &Value) -> Result<u64, PluginError> {
    match action {
        "open" => Ok(100),
        "close" => Ok(0),
        _ => match input.get("position").and_then(Value::as_u64) {
            Some(p) if p <= 100 => Ok(p),
            _ => Err(PluginError::invalid_input(format!(
                "`position` must be an integer from 0 to 100, got {}",
                input.get("position").unwrap_or(&Value::Null)
            ))),
        },
    }
}

/// Remember `output` as the result of `key`. Keys take KEEP_KEYS slots in turn; the key
/// that held the slot before is forgotten. A few small records per action, whatever the
/// number of keys remembered.
fn remember(key: &str, output: &Value) -> Result<(), PluginError> {
    let next: u64 = kv::get_json(NEXT_SLOT)?.unwrap_or(0);
    let slot = format!("applied-slot/{}", next % KEEP_KEYS);
    if let Some(old) = kv::get(&slot)? {
        kv::delete(&format!("applied/{}", String::from_utf8_lossy(&old)))?;
    }
    kv::set(&slot, key.as_bytes())?;
    kv::set_json(&format!("applied/{key}"), output)?;
    kv::set_json(NEXT_SLOT, &(next + 1))
}

impl Capability for ValveSim {
    fn describe() -> Value {
        json!({
            "id": "valve-sim",
            "actions": {
                "open": {"input": {"valve": "string"}, "side_effects": ["valve position := 100"]},
                "close": {"input": {"valve": "string"}, "side_effects": ["valve position := 0"]},
                "set": {"input": {"valve": "string", "position": "0..100"}, "side_effects": ["valve position := position"]},
                "read": {"input": {"valve": "string"}, "side_effects": []},
            },
            "output": {"valve": "string", "position": "0..100", "open": "bool"},
        })
    }

    fn invoke(action: &str, input: Value, idempotency_key: &str) -> Result<Value, PluginError> {
        let valve = valve_of(&input)?;
        if action == "read" {
            return current(valve);
        }
        if !matches!(action, "open" | "close" | "set") {
            return Err(PluginError::invalid_input(format!(
                "unknown action {action:?} (open, close, set, read)"
            )));
        }
        let position = position_of(action, &input)?;
        if !idempotency_key.is_empty()
            && let Some(done) = kv::get_json::<Value>(&format!("applied/{idempotency_key}"))?
        {
            log::info(&format!(
                "{valve}: {action} already applied under {idempotency_key}"
            ));
            return Ok(done);
        }
        let state = json!({"valve": valve, "position": position, "open": position > 0});
        kv::set_json(&state_key(valve), &state)?;
        if !idempotency_key.is_empty() {
            remember(idempotency_key, &state)?;
        }
        log::info(&format!("{valve}: {action} -> position {position}"));
        Ok(state)
    }
}

eyeflow_plugin_sdk::export_capability!(ValveSim);
