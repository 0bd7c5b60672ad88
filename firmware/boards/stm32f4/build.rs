//! Links with cortex-m-rt's link.x (embassy-stm32's `memory-x` provides memory.x) and
//! embeds the program to run: the signed file named by `EYEFLOW_PROGRAM` at build time
//! (none: the firmware refuses the empty program as malformed until the serial gateway
//! deploys programs).
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let program = match std::env::var_os("EYEFLOW_PROGRAM") {
        Some(path) => std::fs::read(path).expect("EYEFLOW_PROGRAM names a readable file"),
        None => Vec::new(),
    };
    std::fs::write(out.join("program.ir"), program).expect("OUT_DIR is writable");
    println!("cargo:rerun-if-env-changed=EYEFLOW_PROGRAM");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
}
