//! The WebAssembly plugin platform: connectors and capabilities are signed WASM components
//! that operators install, upgrade and revoke while the node runs.
//!
//! - [`manifest`]: what a package declares (id, version, kind, provides, imports, schemas);
//! - [`package`]: the signed package file (layout documented byte by byte);
//! - [`grants`]: the operator's grants (interfaces, HTTP hosts, secret names), revocable;
//! - [`catalog`]: installed and revoked versions, persisted in the embedded store;
//! - [`PluginHost`]: the wasmtime host, which implements
//!   [`PluginPort`](eyeflow_actors::ports::PluginPort).

mod cache;
pub mod catalog;
pub mod grants;
mod host;
mod imports;
pub mod manifest;
pub mod package;

pub use grants::{Grant, GrantChange};
pub use host::{DeadlineMode, HostConfig, Installed, PluginHost, PluginInfo};
pub use imports::Quotas;
pub use imports::bindings::exports::eyeflow::plugin::source::{Batch, Event};
pub use manifest::{Import, Kind, Manifest};
pub use package::Package;
