//! # eyeflow-runtime: the adapters behind the SVM ports, and the `eyeflow` binary
//!
//! - [`store`]: the embedded store (fjall) under a node's data directory: catalog, grants,
//!   keyring, plugin scratch KV (journal and audit arrive with the actor runtime);
//! - [`plugins`]: the WebAssembly plugin platform: signed packages, the operator's grants,
//!   the catalog with live upgrade, and the sandboxed wasmtime host that implements
//!   [`eyeflow_actors::ports::PluginPort`];
//! - [`secrets`]: the embedded secrets source (a local file, never logged).

mod error;
pub mod plugins;
pub mod secrets;
pub mod store;

pub use error::{Error, Result};
