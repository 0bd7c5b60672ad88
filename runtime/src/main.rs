//! The `eyeflow` binary: CLI and node daemon (commands arrive with the compiler and runtime issues).

fn main() {}
