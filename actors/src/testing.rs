//! What this crate's unit tests share: waiting for a condition (the unit-test twin of
//! `eyeflow_tests::eventually`, which this crate cannot depend on).

use std::time::{Duration, Instant};

/// Polls `condition` every millisecond until it holds; panics naming `what` after 10 s.
pub(crate) fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}
