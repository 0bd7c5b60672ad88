//! `eyeflow compile` (a YAML rule into a signed LLM-IR program) and `eyeflow ir` (decode a
//! program, verify it as a runtime would).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use eyeflow_compiler::CompileOptions;
use eyeflow_ir::{Keyring, Limits, keys};

use super::options::{CliResult, Failure, refused};

/// `eyeflow compile` options.
#[derive(Debug, clap::Args)]
pub(crate) struct CompileArgs {
    /// The rule file (YAML, see docs/rules.md).
    rule: PathBuf,
    /// Secret key that signs the program (NAME.key from `eyeflow keys gen`).
    #[arg(long, required_unless_present = "draft")]
    key: Option<PathBuf>,
    /// Where to write the program.
    #[arg(short, long)]
    output: PathBuf,
    /// Write an unsigned review copy instead (no runtime will load it).
    #[arg(long, conflicts_with = "key")]
    draft: bool,
    /// Recorded as `compiled_by` (default: $USER, else "eyeflow").
    #[arg(long)]
    compiled_by: Option<String>,
    /// Where the program runs: `server` (every opcode, CEL) or `mcu` (the MCU profile a
    /// field device runs, expressions as bytecode; see docs/firmware.md).
    #[arg(long, value_enum, default_value_t = TargetArg::Server)]
    target: TargetArg,
}

/// `--target`: the program's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TargetArg {
    /// A server node.
    Server,
    /// The MCU profile.
    Mcu,
}

impl From<TargetArg> for eyeflow_compiler::Target {
    fn from(target: TargetArg) -> Self {
        match target {
            TargetArg::Server => Self::Server,
            TargetArg::Mcu => Self::Mcu,
        }
    }
}

/// `eyeflow ir` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum IrCommand {
    /// Print a program as JSON (does not check the signature).
    Decode {
        /// The program file.
        #[arg(long)]
        file: PathBuf,
        /// Indent the JSON.
        #[arg(long)]
        pretty: bool,
    },
    /// Check a program as a runtime would: decode, signature, IR version, structure.
    Verify {
        /// The program file.
        #[arg(long)]
        file: PathBuf,
        /// A trusted public key (NAME.pub); repeat for several.
        #[arg(long, required = true)]
        pubkey: Vec<PathBuf>,
    },
}

/// Runs an `ir` command.
pub(crate) fn ir(command: IrCommand) -> CliResult {
    match command {
        IrCommand::Decode { file, pretty } => decode(&file, pretty),
        IrCommand::Verify { file, pubkey } => verify(&file, &pubkey),
    }
}

/// `eyeflow compile`.
pub(crate) fn compile(args: CompileArgs) -> CliResult {
    let CompileArgs {
        rule,
        key,
        output,
        draft,
        compiled_by,
        target,
    } = args;
    let source = std::fs::read_to_string(&rule)
        .with_context(|| format!("cannot read rule {}", rule.display()))?;
    let compiled_at =
        i64::try_from(eyeflow_runtime::now_ms() / 1000).context("clock beyond year 292 billion")?;
    let options = CompileOptions {
        source_name: rule.display().to_string(),
        compiled_by: compiled_by
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "eyeflow".to_owned()),
        compiled_at,
    };
    let program = match (key, draft) {
        (Some(key), false) => {
            let key = keys::read_signing_key(&key)?;
            eyeflow_compiler::compile_and_sign_for(&source, &options, target.into(), &key)?
        }
        (None, true) => eyeflow_compiler::compile_for(&source, &options, target.into())?,
        _ => return Err(anyhow!("give either --key KEY or --draft").into()),
    };
    let bytes = eyeflow_ir::encode(&program);
    std::fs::write(&output, &bytes)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "{} {} v{}: {} instructions, {} bytes{} -> {}",
        if draft { "draft" } else { "signed" },
        program.program_id,
        program.version,
        program.instructions.len(),
        bytes.len(),
        if draft {
            String::new()
        } else {
            format!(", key {}", program.signing_key_id)
        },
        output.display()
    );
    Ok(())
}

fn read_program(file: &Path) -> Result<Vec<u8>, Failure> {
    Ok(std::fs::read(file).with_context(|| format!("cannot read program {}", file.display()))?)
}

fn decode(file: &Path, pretty: bool) -> CliResult {
    let bytes = read_program(file)?;
    let program = eyeflow_ir::decode(&bytes, &Limits::default()).map_err(refused)?;
    if pretty {
        println!("{}", eyeflow_ir::json::to_pretty_json(&program));
    } else {
        println!(
            "{}",
            serde_json::to_string(&program).context("cannot render JSON")?
        );
    }
    Ok(())
}

fn verify(file: &Path, pubkeys: &[PathBuf]) -> CliResult {
    let mut keyring = Keyring::new();
    for path in pubkeys {
        keyring.trust(keys::read_verifying_key(path)?);
    }
    let bytes = read_program(file)?;
    let loaded = eyeflow_ir::load(&bytes, &keyring, &Limits::default()).map_err(|e| {
        refused(anyhow::Error::new(e).context(format!("{} refused", file.display())))
    })?;
    let p = &loaded.program;
    println!(
        "ok: {} v{} (IR {}, {} instructions) signed by key {}",
        p.program_id,
        p.version,
        p.ir_version,
        p.instructions.len(),
        loaded.key_id
    );
    Ok(())
}
