//! `eyeflow mcu`: MCU-profile programs on the server — run a conformance vector and print
//! its canonical trace, or generate the vectors from their sources (docs/firmware.md).

use std::path::PathBuf;

use anyhow::Context;
use eyeflow_runtime::mcu;

use super::options::CliResult;

/// `eyeflow mcu` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum McuCommand {
    /// Run a conformance vector (`program.ir` + `input.bin`) through the executor, the
    /// hardware answering from the script, and print its canonical trace.
    Run {
        /// The vector's folder.
        vector: PathBuf,
        /// The byte the trusted key's 32-byte seed repeats (the test key is 7), trusted
        /// under the key id `test`.
        #[arg(long, default_value_t = 7)]
        pubkey_seed: u8,
    },
    /// Generate the vectors: compile each `NAME.input.json`'s rule for the MCU, sign it
    /// with the test key, write `NAME/program.ir`, `NAME/input.bin` and
    /// `NAME/expected.trace` (the server's run).
    Vectors {
        /// Where to write the vectors (`firmware/vectors`).
        #[arg(long)]
        out: PathBuf,
        /// The sources (default: `OUT/src`).
        #[arg(long)]
        src: Option<PathBuf>,
    },
}

/// Runs an `mcu` command.
pub(crate) fn run(command: McuCommand) -> CliResult {
    match command {
        McuCommand::Run {
            vector,
            pubkey_seed,
        } => {
            let read = |file: &str| {
                let path = vector.join(file);
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
            };
            let (program, input) = (read("program.ir")?, read("input.bin")?);
            let keyring = mcu::device_keyring([pubkey_seed; 32]);
            let trace = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .context("cannot start a runtime")?
                .block_on(mcu::run_vector(&program, &input, &keyring))?;
            print!("{trace}");
            Ok(())
        }
        McuCommand::Vectors { out, src } => {
            let src = src.unwrap_or_else(|| out.join("src"));
            for (name, trace) in mcu::generate(&src, &out)? {
                println!("{name}: {}", trace.lines().last().unwrap_or_default());
            }
            Ok(())
        }
    }
}
