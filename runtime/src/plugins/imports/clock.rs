//! `eyeflow:plugin/clock`: the node's wall clock and a monotonic clock, and the stopped
//! WASI clocks a plugin without the `clock` grant sees instead.

use std::time::Duration;

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use super::super::bindings::eyeflow::plugin::clock::Host;
use super::CallState;

/// The clocks a plugin without the `clock` grant sees: stopped at zero.
pub(super) struct Stopped;

impl HostWallClock for Stopped {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Stopped {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

impl Host for CallState {
    fn now_ms(&mut self) -> u64 {
        crate::now_ms()
    }

    fn monotonic_ns(&mut self) -> u64 {
        u64::try_from(self.services.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
