//! Decode + validate + verify of arbitrary bytes: must never panic; see `eyeflow_ir::testing::fuzz_one`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    eyeflow_ir::testing::fuzz_one(data, &eyeflow_ir::Keyring::new());
});
