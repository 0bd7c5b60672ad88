//! Log lines into the node's log (`eyeflow:plugin/log` import), tagged by the host with
//! the plugin id and version. Declare `"log"` in the manifest's `imports`.

use crate::bindings::capability::eyeflow::plugin::log::{self as wit, Level};

/// Write a `trace` line.
pub fn trace(message: &str) {
    wit::log(Level::Trace, message);
}

/// Write a `debug` line.
pub fn debug(message: &str) {
    wit::log(Level::Debug, message);
}

/// Write an `info` line.
pub fn info(message: &str) {
    wit::log(Level::Info, message);
}

/// Write a `warn` line.
pub fn warn(message: &str) {
    wit::log(Level::Warn, message);
}

/// Write an `error` line.
pub fn error(message: &str) {
    wit::log(Level::Error, message);
}
