//! Test fixture `fixture-echo`: a capability with no imports whose `invoke` returns
//! `{"version", "action", "input"}`. Built as 1.0.0 by default and as 2.0.0 with
//! `--features v2`, so the host's hot-swap tests can tell the instances apart.

use eyeflow_plugin_sdk::{Capability, PluginError, Value, json};

const VERSION: &str = if cfg!(feature = "v2") {
    "2.0.0"
} else {
    "1.0.0"
};

struct Echo;

impl Capability for Echo {
    fn describe() -> Value {
        json!({"id": "fixture-echo", "version": VERSION, "actions": {"*": "echoes the call"}})
    }

    fn invoke(action: &str, input: Value, _idempotency_key: &str) -> Result<Value, PluginError> {
        Ok(json!({"version": VERSION, "action": action, "input": input}))
    }
}

eyeflow_plugin_sdk::export_capability!(Echo);
