//! Test fixture `fixture-legacy-1-1`: a capability built directly with `wit-bindgen`
//! against the archived WIT `eyeflow:plugin@1.1.0` (no SDK). It counts its calls under the
//! kv key `calls` (`kv@1.1.0`: get, set) and reads `clock.monotonic-ns` (new in 1.1.0),
//! returning `{"wit": "1.1.0", "calls": n}`: a 1.1.0 plugin links and runs on a newer host.

mod bindings {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    wit_bindgen::generate!({
        path: "../../plugin-sdk/wit/archive/1.1.0/plugin.wit",
        world: "eyeflow:plugin/capability@1.1.0",
    });
}

use bindings::exports::eyeflow::plugin::actions::{Guest, PluginError};
use bindings::eyeflow::plugin::{clock, kv};

struct Legacy;

impl Guest for Legacy {
    fn describe() -> String {
        r#"{"id":"fixture-legacy-1-1","wit":"1.1.0","actions":["*"]}"#.to_owned()
    }

    fn invoke(
        _action: String,
        _input: String,
        _idempotency_key: String,
    ) -> Result<String, PluginError> {
        // Call the import for real so the component depends on it.
        std::hint::black_box(clock::monotonic_ns());
        let calls = kv::get("calls")?
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        kv::set("calls", calls.to_string().as_bytes())?;
        Ok(format!(r#"{{"wit":"1.1.0","calls":{calls}}}"#))
    }
}

bindings::export!(Legacy with_types_in bindings);
