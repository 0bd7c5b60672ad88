//! The WebAssembly plugin platform: connectors and capabilities are signed WASM components
//! that operators install, upgrade and revoke while the node runs.
//!
//! - [`manifest`]: what a package declares (id, version, kind, provides, imports, schemas);
//! - [`package`]: the signed package file (layout documented byte by byte);
//! - [`grants`]: the operator's grants (interfaces, HTTP hosts, secret names), revocable;
//! - [`catalog`]: installed and revoked versions, persisted in the embedded store;
//! - [`PluginHost`]: the wasmtime host, which implements
//!   [`PluginPort`](eyeflow_actors::ports::PluginPort).
//!
//! Inside the host: `engine` (wasmtime `Config`, pooling allocator, epoch ticker),
//! `bindings` (the `bindgen!` output only), `imports` (one module per host interface),
//! `limits` (a call's store limits), `loaded` (a compiled, checked and linked version),
//! `table` (the live versions, hot-swapped), `admission` (calls per plugin), `call`
//! (instantiate, run under the deadline, classify failures), `outcome` (schemas, results,
//! plugin errors) and `host` (the [`PluginHost`] facade and its `PluginPort` adapter).

mod admission;
mod bindings;
mod cache;
mod call;
pub mod catalog;
mod engine;
pub mod grants;
mod host;
mod imports;
mod limits;
mod loaded;
pub mod manifest;
mod outcome;
pub mod package;
mod table;

pub use bindings::exports::eyeflow::plugin::source::{Batch, Event};
pub use engine::{DeadlineMode, HostConfig};
pub use grants::{Grant, GrantChange};
pub use host::{Installed, PluginHost, PluginInfo};
pub use imports::Quotas;
pub use manifest::{Import, Kind, Manifest};
pub use package::Package;
