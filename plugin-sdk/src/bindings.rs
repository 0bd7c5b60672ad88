//! Output of `wit_bindgen::generate!` for `wit/plugin.wit`, nothing hand-written.
//!
//! Both worlds are generated; the `connector` world reuses the import bindings of the
//! `capability` world through `with`, so `PluginError` and the host imports exist once.
//! Each world's export macro carries its own component-type section, so a plugin only
//! exports the world whose `export_*!` macro it invoked. The generated glue needs
//! `unsafe` (canonical ABI lifting/lowering): it is allowed here and nowhere else.
#![allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]

/// The `eyeflow:plugin/capability@1.2.0` world: all imports, `actions` export.
pub mod capability {
    wit_bindgen::generate!({
        path: "wit/plugin.wit",
        world: "eyeflow:plugin/capability@1.2.0",
        pub_export_macro: true,
        export_macro_name: "export_capability_world",
        default_bindings_module: "eyeflow_plugin_sdk::bindings::capability",
        generate_all,
    });
}

/// The `eyeflow:plugin/connector@1.2.0` world: `reader` and `source` exports.
pub mod connector {
    wit_bindgen::generate!({
        path: "wit/plugin.wit",
        world: "eyeflow:plugin/connector@1.2.0",
        pub_export_macro: true,
        export_macro_name: "export_connector_world",
        default_bindings_module: "eyeflow_plugin_sdk::bindings::connector",
        with: {
            "eyeflow:plugin/types@1.2.0": crate::bindings::capability::eyeflow::plugin::types,
            "eyeflow:plugin/log@1.2.0": crate::bindings::capability::eyeflow::plugin::log,
            "eyeflow:plugin/http@1.2.0": crate::bindings::capability::eyeflow::plugin::http,
            "eyeflow:plugin/secrets@1.2.0": crate::bindings::capability::eyeflow::plugin::secrets,
            "eyeflow:plugin/kv@1.2.0": crate::bindings::capability::eyeflow::plugin::kv,
            "eyeflow:plugin/clock@1.2.0": crate::bindings::capability::eyeflow::plugin::clock,
        },
    });
}
