//! The plugin platform through the real wasmtime host and the bundled and fixture plugins
//! (built by `scripts/build-plugins.sh` into `target/plugins`).

mod bundled;
mod hostile;
mod node;
mod once;
mod packages;
mod publishers;
mod support;
mod upgrade;
