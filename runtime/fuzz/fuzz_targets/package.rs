//! A plugin package of arbitrary bytes (the body of `POST /api/plugins`): the parser must
//! refuse it or read it, never panic, and what it reads writes back to the same bytes.
//! `cargo fuzz run package`; the same properties run on a fixed corpus in the test suite
//! (`plugins::package` unit tests, `runtime/tests/plugins/packages.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(package) = eyeflow_runtime::plugins::Package::from_bytes(data, "fuzz input") {
        assert_eq!(package.to_bytes(), data, "a package reads back byte for byte");
    }
});
