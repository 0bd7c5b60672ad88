//! Puts memory.x (which leaves flash sectors 10 and 11 to the program slots) on the
//! linker's path and links with cortex-m-rt's link.x.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy("memory.x", out.join("memory.x")).expect("memory.x is readable");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=EYEFLOW_DEVICE_ID");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
}
