//! Test fixture `fixture-undeclared-import`: its component imports
//! `eyeflow:plugin/secrets` but its manifest's `imports` is empty, so the host must
//! refuse to load it.

use eyeflow_plugin_sdk::{Capability, PluginError, Value, json, secrets};

struct Undeclared;

impl Capability for Undeclared {
    fn describe() -> Value {
        json!({"id": "fixture-undeclared-import", "actions": ["peek"]})
    }

    fn invoke(_action: &str, _input: Value, _idempotency_key: &str) -> Result<Value, PluginError> {
        let value = secrets::get("db-password")?;
        Ok(json!({"length": value.len()}))
    }
}

eyeflow_plugin_sdk::export_capability!(Undeclared);
