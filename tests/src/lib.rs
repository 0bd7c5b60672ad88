//! Support for the end-to-end tests in `tests/`: real servers (Redis, Mosquitto, OpenBao, a
//! Kafka-protocol broker) started on 127.0.0.1 for one test and stopped when it ends, and a
//! real `eyeflow node` process.

pub mod node;
pub mod poison;
pub mod servers;

use std::time::{Duration, Instant};

/// Copies directory `from` to `to` (a data directory, say), recursively.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Waits for `future`, a call through one of the node's (asynchronous) ports, as the node's
/// actor runtime would run it: on a multi-threaded runtime, where an adapter whose client
/// blocks may block.
pub fn wait<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the tests")
        })
        .block_on(future)
}

/// Calls `f` until it returns `Some`, or panics after `timeout` naming `what` (tests poll
/// for a condition; they never sleep and then assert).
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
