//! `valve-sim`: simulated valves with a position from 0 (closed) to 100 (open).
//!
//! Actions `open`, `close`, `set` (`{"valve", "position"}`) and `read`. A valve's state
//! `{"valve", "position", "open", "actions"}` lives in the plugin KV under `state/<valve>`
//! so a postcondition can read it back; `actions` counts the actions applied to the valve,
//! so a repeat that acted twice shows. `open`, `close` and `set` go through
//! [`apply_once`]: an idempotency key applied before is answered with its first result and
//! changes nothing. Its record (`once/<key>`) is kept forever, so at least as long as the
//! node keeps executions. Two actions on one valve under different keys at the same instant
//! are not ordered here (the last commit wins, and `actions` may count one of them): a
//! program orders them with the valve's `resource_key` permit.

use eyeflow_plugin_sdk::kv::{self, Write};
use eyeflow_plugin_sdk::{Capability, PluginError, Value, apply_once, json, log};

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

/// The valve's state; a never-touched valve is closed. A state written by valve-sim before
/// `actions` was counted reads as 0 actions.
fn current(valve: &str) -> Result<Value, PluginError> {
    let mut state = kv::get_json::<Value>(&state_key(valve))?
        .unwrap_or_else(|| json!({"valve": valve, "position": 0, "open": false}));
    if state.get("actions").is_none() {
        state["actions"] = json!(0);
    }
    Ok(state)
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
            "output": {"valve": "string", "position": "0..100", "open": "bool", "actions": "actions applied to the valve"},
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
        let mut applied = None;
        let state = apply_once(idempotency_key, || {
            let actions = current(valve)?["actions"].as_u64().unwrap_or(0) + 1;
            let state = json!({
                "valve": valve, "position": position, "open": position > 0, "actions": actions,
            });
            applied = Some(state.clone());
            let write = Write::set_json(state_key(valve), &state)?;
            Ok((state, vec![write]))
        })?;
        if applied.as_ref() == Some(&state) {
            log::info(&format!("{valve}: {action} -> position {position}"));
        } else {
            log::info(&format!(
                "{valve}: {action} already applied under {idempotency_key}"
            ));
        }
        Ok(state)
    }
}

eyeflow_plugin_sdk::export_capability!(ValveSim);
