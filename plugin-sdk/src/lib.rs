//! Guest-side SDK for eyeflow plugins: WebAssembly components that the eyeflow runtime
//! loads to read the world (**connectors**) or act on it (**capabilities**).
//!
//! A plugin is a `cdylib` crate built for `wasm32-wasip2`, plus an `eyeflow-plugin.json`
//! manifest. This crate owns the WIT contract (`wit/plugin.wit`, package
//! `eyeflow:plugin@1.2.0`, worlds `capability` and `connector`; older versions in
//! `wit/archive/`) and turns it into plain Rust:
//!
//! - implement [`Capability`] or [`Connector`] on a unit struct, with `serde_json`
//!   [`Value`]s in and out and [`PluginError`] for failures;
//! - export it with [`export_capability!`] or [`export_connector!`]: input that is not
//!   JSON becomes `invalid-input`, output that cannot be written becomes `internal`;
//! - call the host through [`log`], [`http`], [`secrets`], [`kv`] and [`clock`]. A
//!   component imports only the interfaces it calls; list exactly those in the
//!   manifest's `imports`, or the host refuses the plugin;
//! - act once per idempotency key with [`apply_once`]: the same key may arrive twice
//!   after a crash (module [`once`]).
//!
//! It sits outside the `ir ← actors ← runtime` chain: the runtime reads the same WIT on
//! the host side. On the host target the crate only builds (imports panic if called).
//!
//! # Example
//!
//! A capability that counts how often a named counter was bumped, acting once per
//! idempotency key (manifest `"wit": "1.2.0"`, `imports`: `["log", "kv"]`, and
//! `"on_resume": "reissue"` on `bump`, since a repeated key is answered, not re-applied):
//!
//! ```
//! use eyeflow_plugin_sdk::kv::{self, Write};
//! use eyeflow_plugin_sdk::{Capability, PluginError, Value, apply_once, json, log};
//!
//! struct Counter;
//!
//! impl Capability for Counter {
//!     fn describe() -> Value {
//!         json!({"actions": {"bump": {"input": {"name": "string"}, "side_effects": ["kv"]}}})
//!     }
//!
//!     fn invoke(action: &str, input: Value, key: &str) -> Result<Value, PluginError> {
//!         if action != "bump" {
//!             return Err(PluginError::invalid_input(format!("unknown action {action:?}")));
//!         }
//!         let name = input["name"]
//!             .as_str()
//!             .ok_or_else(|| PluginError::invalid_input("`name` must be a string"))?;
//!         // A key seen before (replayed after a crash) gets its first result back.
//!         let output = apply_once(key, || {
//!             let count = kv::get_json::<u64>(name)?.unwrap_or(0) + 1;
//!             Ok((json!({"name": name, "count": count}), vec![Write::set_json(name, &count)?]))
//!         })?;
//!         log::info(&format!("{name} is at {} (key {key})", output["count"]));
//!         Ok(output)
//!     }
//! }
//!
//! eyeflow_plugin_sdk::export_capability!(Counter);
//! # fn main() {}
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component. `examples/plugin-template/` is a
//! starting crate and `plugins/` holds the bundled plugins.
//!
//! # Features
//!
//! None. The crate uses `wit-bindgen` without its default features (no async runtime).

mod error;
mod export;

#[doc(hidden)]
pub mod bindings;

pub mod clock;
pub mod http;
pub mod kv;
pub mod log;
pub mod once;
pub mod secrets;

pub use error::PluginError;
pub use export::{Batch, Capability, Connector, Event};
pub use once::apply_once;
pub use serde_json::{self, Value, json};

/// Export `$ty`, which implements [`Capability`], as the `eyeflow:plugin/actions`
/// interface of a `capability` component. Invoke it once per plugin crate.
///
/// ```
/// use eyeflow_plugin_sdk::{Capability, PluginError, Value, json};
///
/// struct Echo;
///
/// impl Capability for Echo {
///     fn describe() -> Value {
///         json!({"actions": ["*"]})
///     }
///
///     fn invoke(action: &str, input: Value, _key: &str) -> Result<Value, PluginError> {
///         Ok(json!({"action": action, "input": input}))
///     }
/// }
///
/// eyeflow_plugin_sdk::export_capability!(Echo);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_capability {
    ($ty:ty) => {
        const _: () = {
            struct __EyeflowCapabilityExport;

            impl $crate::__private::ActionsGuest for __EyeflowCapabilityExport {
                fn describe() -> ::std::string::String {
                    $crate::__private::describe_capability::<$ty>()
                }

                fn invoke(
                    action: ::std::string::String,
                    input: ::std::string::String,
                    idempotency_key: ::std::string::String,
                ) -> ::std::result::Result<::std::string::String, $crate::__private::WitPluginError>
                {
                    $crate::__private::invoke_capability::<$ty>(&action, &input, &idempotency_key)
                }
            }

            $crate::bindings::capability::export_capability_world!(
                __EyeflowCapabilityExport with_types_in $crate::bindings::capability
            );
        };
    };
}

/// Export `$ty`, which implements [`Connector`], as the `eyeflow:plugin/reader` and
/// `eyeflow:plugin/source` interfaces of a `connector` component. Invoke it once per
/// plugin crate.
///
/// ```
/// use eyeflow_plugin_sdk::{Batch, Connector, Event, PluginError, Value, clock, json};
///
/// struct Ticks;
///
/// impl Connector for Ticks {
///     fn describe() -> Value {
///         json!({"resources": "now"})
///     }
///
///     fn read(key: &str, _params: Value) -> Result<Value, PluginError> {
///         match key {
///             "now" => Ok(json!({"ms": clock::now_ms()})),
///             _ => Err(PluginError::invalid_input(format!("unknown key {key:?}"))),
///         }
///     }
///
///     // An event source: tick `n` has id `tick-<n>`; the cursor is the last `n` seen.
///     fn poll(cursor: Option<String>, max: u32) -> Result<Batch, PluginError> {
///         let after: u64 = match cursor {
///             None => 0,
///             Some(c) => c.parse().map_err(|_| PluginError::invalid_input("bad cursor"))?,
///         };
///         let events = (after + 1..=after + u64::from(max))
///             .map(|n| Event { id: format!("tick-{n}"), key: "now".into(), payload: json!({"n": n}) })
///             .collect();
///         Ok(Batch { events, cursor: (after + u64::from(max)).to_string() })
///     }
/// }
///
/// eyeflow_plugin_sdk::export_connector!(Ticks);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_connector {
    ($ty:ty) => {
        const _: () = {
            struct __EyeflowConnectorExport;

            impl $crate::__private::ReaderGuest for __EyeflowConnectorExport {
                fn describe() -> ::std::string::String {
                    $crate::__private::describe_connector::<$ty>()
                }

                fn read(
                    key: ::std::string::String,
                    params: ::std::string::String,
                ) -> ::std::result::Result<::std::string::String, $crate::__private::WitPluginError>
                {
                    $crate::__private::read_connector::<$ty>(&key, &params)
                }
            }

            impl $crate::__private::SourceGuest for __EyeflowConnectorExport {
                fn poll(
                    cursor: ::std::option::Option<::std::string::String>,
                    max_events: u32,
                ) -> ::std::result::Result<
                    $crate::__private::WitBatch,
                    $crate::__private::WitPluginError,
                > {
                    $crate::__private::poll_connector::<$ty>(cursor, max_events)
                }
            }

            $crate::bindings::connector::export_connector_world!(
                __EyeflowConnectorExport with_types_in $crate::bindings::connector
            );
        };
    };
}

/// Items the export macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::capability::exports::eyeflow::plugin::actions::Guest as ActionsGuest;
    pub use crate::bindings::capability::eyeflow::plugin::types::PluginError as WitPluginError;
    pub use crate::bindings::connector::exports::eyeflow::plugin::reader::Guest as ReaderGuest;
    pub use crate::bindings::connector::exports::eyeflow::plugin::source::Batch as WitBatch;
    pub use crate::bindings::connector::exports::eyeflow::plugin::source::Guest as SourceGuest;
    pub use crate::export::{
        describe_capability, describe_connector, invoke_capability, poll_connector, read_connector,
    };
}
