//! A rule source (YAML with CEL expressions) of arbitrary bytes: the compiler must refuse or
//! compile it, never panic, overflow its stack or hang. `cargo fuzz run compile`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let options = eyeflow_compiler::CompileOptions {
            source_name: "fuzz.yaml".to_owned(),
            compiled_by: "fuzz".to_owned(),
            compiled_at: 0,
        };
        let _ = eyeflow_compiler::compile(text, &options);
    }
});
