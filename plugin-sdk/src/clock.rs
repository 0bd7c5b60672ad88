//! The node's clocks (`eyeflow:plugin/clock` import). Declare `"clock"` in the
//! manifest's `imports`.

use crate::bindings::capability::eyeflow::plugin::clock as wit;

/// Wall-clock time, milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    wit::now_ms()
}

/// Monotonic time in nanoseconds since an arbitrary origin (WIT 1.1.0 and later).
pub fn monotonic_ns() -> u64 {
    wit::monotonic_ns()
}
