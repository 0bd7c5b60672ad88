//! Test fixture `fixture-unknown-import`: built from its own copy of the WIT that adds
//! `eyeflow:plugin/teleport@1.1.0` (`jump: func()`), which no host provides; `invoke`
//! calls it, so the component imports it and the host must refuse to load it.

mod bindings {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    wit_bindgen::generate!({
        path: "wit/plugin.wit",
        world: "eyeflow:plugin/capability-with-teleport@1.1.0",
    });
}

use bindings::exports::eyeflow::plugin::actions::{Guest, PluginError};
use bindings::eyeflow::plugin::teleport;

struct Unknown;

impl Guest for Unknown {
    fn describe() -> String {
        r#"{"id":"fixture-unknown-import","actions":["jump"]}"#.to_owned()
    }

    fn invoke(
        _action: String,
        _input: String,
        _idempotency_key: String,
    ) -> Result<String, PluginError> {
        teleport::jump();
        Ok(r#"{"jumped":true}"#.to_owned())
    }
}

bindings::export!(Unknown with_types_in bindings);
