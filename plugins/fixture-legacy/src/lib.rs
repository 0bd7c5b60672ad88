//! Test fixture `fixture-legacy`: a capability built directly with `wit-bindgen` against
//! the archived WIT `eyeflow:plugin@1.0.0` (no SDK). It imports `clock.now-ms` and
//! returns `{"legacy":true}`, showing that a 1.0.0 plugin loads on a 1.1.0 host.

mod bindings {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    wit_bindgen::generate!({
        path: "../../plugin-sdk/wit/archive/1.0.0/plugin.wit",
        world: "eyeflow:plugin/capability@1.0.0",
    });
}

use bindings::exports::eyeflow::plugin::actions::{Guest, PluginError};
use bindings::eyeflow::plugin::clock;

struct Legacy;

impl Guest for Legacy {
    fn describe() -> String {
        r#"{"id":"fixture-legacy","wit":"1.0.0","actions":["*"]}"#.to_owned()
    }

    fn invoke(
        _action: String,
        _input: String,
        _idempotency_key: String,
    ) -> Result<String, PluginError> {
        // Call the import for real so the component depends on it.
        std::hint::black_box(clock::now_ms());
        Ok(r#"{"legacy":true}"#.to_owned())
    }
}

bindings::export!(Legacy with_types_in bindings);
