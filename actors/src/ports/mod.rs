//! Ports: the traits through which the SVM reaches the outside world. Each has an embedded
//! adapter in `eyeflow-runtime` and, where relevant, a production backend.

mod plugin;

pub use plugin::{CallError, CallErrorKind, CapabilityRef, PluginPort};
