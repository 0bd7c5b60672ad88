//! The `eyeflow` command: keys, the rule compiler, IR inspection and verification, the
//! plugin platform (author and operator commands), the node daemon and its clients
//! (argument tree and commands in `cli/`, one module per command family).
//!
//! Exit codes (documented in `docs/cli.md`): 0 success; 1 an I/O or internal failure;
//! 2 a usage error (from clap); 3 a rule that does not compile; 4 a program refused by
//! decode, signature, version or structure checks.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// glibc's malloc took ≈ 20 % of the CPU of an execution (perf, 2026-12-01): mimalloc
/// spends ≈ 12 % less CPU per execution (docs/runtime.md, "Speed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code as u8)
        }
    }
}
