//! A plugin package of arbitrary bytes: the parser must refuse or read it, never panic.
//! `cargo fuzz run package`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = eyeflow_runtime::plugins::Package::from_bytes(data, "fuzz input");
});
