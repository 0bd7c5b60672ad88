//! Argument parsing and the implementation of each `eyeflow` subcommand.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use eyeflow_compiler::CompileOptions;
use eyeflow_ir::pb::{IrOpcode, LlmIrProgram};
use eyeflow_ir::{Keyring, Limits, keys};

/// Why a command failed, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// I/O or internal failure.
    Failure = 1,
    /// The rule does not compile.
    CompileError = 3,
    /// The program was refused (decode, signature, version, structure).
    Refused = 4,
}

/// A failed command: the exit code and the error to print.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            code: Code::Failure,
            error,
        }
    }
}

impl From<eyeflow_ir::Error> for Failure {
    fn from(error: eyeflow_ir::Error) -> Self {
        Self {
            code: Code::Failure,
            error: error.into(),
        }
    }
}

fn refused(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: Code::Refused,
        error: error.into(),
    }
}

type CliResult = Result<(), Failure>;

/// eyeflow: compile, sign, inspect and verify LLM-IR rule programs.
#[derive(Debug, Parser)]
#[command(name = "eyeflow", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ed25519 signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Compile a YAML rule into a signed LLM-IR program.
    Compile {
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
    },
    /// Inspect and verify LLM-IR programs.
    Ir {
        #[command(subcommand)]
        command: IrCommand,
    },
    /// WebAssembly plugins: author (new, build, sign, inspect) and operate (install, list,
    /// revoke, grant).
    Plugin {
        #[command(subcommand)]
        command: crate::plugin_cmd::PluginCommand,
    },
    /// Compile, sign with a throw-away development key, and load every example rule.
    Demo {
        /// Folder of rule files.
        #[arg(long, default_value = "examples/rules")]
        rules: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a key pair: NAME.key (secret, mode 0600) and NAME.pub.
    Gen {
        /// Path and base name of the two files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Trust a publisher's public key (NAME.pub) in a data directory's keyring.
    Trust {
        /// The public key file.
        file: PathBuf,
        #[command(flatten)]
        data_dir: crate::plugin_cmd::DataDir,
    },
    /// Revoke a key id in a data directory's keyring: its packages are refused.
    Revoke {
        /// The key id (16 hex characters).
        id: String,
        #[command(flatten)]
        data_dir: crate::plugin_cmd::DataDir,
    },
}

#[derive(Debug, Subcommand)]
enum IrCommand {
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

/// Runs one parsed command line.
pub(crate) fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Keys {
            command: KeysCommand::Gen { out },
        } => keys_gen(&out),
        Command::Keys {
            command: KeysCommand::Trust { file, data_dir },
        } => Ok(crate::plugin_cmd::trust(&file, &data_dir)?),
        Command::Keys {
            command: KeysCommand::Revoke { id, data_dir },
        } => Ok(crate::plugin_cmd::revoke_key(&id, &data_dir)?),
        Command::Plugin { command } => Ok(crate::plugin_cmd::run(command)?),
        Command::Compile {
            rule,
            key,
            output,
            draft,
            compiled_by,
        } => compile(&rule, key.as_deref(), &output, draft, compiled_by),
        Command::Ir {
            command: IrCommand::Decode { file, pretty },
        } => ir_decode(&file, pretty),
        Command::Ir {
            command: IrCommand::Verify { file, pubkey },
        } => ir_verify(&file, &pubkey),
        Command::Demo { rules } => demo(&rules),
    }
}

fn keys_gen(out: &Path) -> CliResult {
    let key = keys::generate()?;
    let (secret, public) = keys::write_keypair(out, &key)?;
    println!("key id {}", keys::key_id(&key.verifying_key()));
    println!("secret key: {}", secret.display());
    println!("public key: {}", public.display());
    Ok(())
}

fn compile_options(rule: &Path, compiled_by: Option<String>) -> Result<CompileOptions, Failure> {
    let compiled_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(CompileOptions {
        source_name: rule.display().to_string(),
        compiled_by: compiled_by
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "eyeflow".to_owned()),
        compiled_at: i64::try_from(compiled_at).context("clock beyond year 292 billion")?,
    })
}

fn read_rule(rule: &Path) -> Result<String, Failure> {
    Ok(std::fs::read_to_string(rule)
        .with_context(|| format!("cannot read rule {}", rule.display()))?)
}

fn compile_error(error: eyeflow_compiler::Error) -> Failure {
    Failure {
        code: Code::CompileError,
        error: error.into(),
    }
}

fn compile(
    rule: &Path,
    key: Option<&Path>,
    output: &Path,
    draft: bool,
    compiled_by: Option<String>,
) -> CliResult {
    let source = read_rule(rule)?;
    let options = compile_options(rule, compiled_by)?;
    let program = match (key, draft) {
        (Some(key), false) => {
            let key = keys::read_signing_key(key)?;
            eyeflow_compiler::compile_and_sign(&source, &options, &key).map_err(compile_error)?
        }
        (None, true) => eyeflow_compiler::compile(&source, &options).map_err(compile_error)?,
        _ => return Err(anyhow!("give either --key KEY or --draft").into()),
    };
    let bytes = eyeflow_ir::encode(&program);
    std::fs::write(output, &bytes).with_context(|| format!("cannot write {}", output.display()))?;
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

fn ir_decode(file: &Path, pretty: bool) -> CliResult {
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

fn ir_verify(file: &Path, pubkeys: &[PathBuf]) -> CliResult {
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

fn opcode_names(program: &LlmIrProgram) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = program
        .instructions
        .iter()
        .filter_map(|i| IrOpcode::try_from(i.opcode).ok())
        .map(|op| op.as_str_name())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Until the node runtime lands, the main job compiles every example rule, signs it with
/// a throw-away development key and loads it as a runtime would.
fn demo(rules: &Path) -> CliResult {
    let mut files: Vec<PathBuf> = std::fs::read_dir(rules)
        .with_context(|| format!("cannot list rules in {}", rules.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(anyhow!("no .yaml rules in {}", rules.display()).into());
    }
    let key = keys::generate()?;
    let mut keyring = Keyring::new();
    let key_id = keyring.trust(key.verifying_key());
    println!("development key {key_id} (throw-away, trusted for this run only)");
    let mut all_opcodes = Vec::new();
    for file in &files {
        let source = read_rule(file)?;
        let options = compile_options(file, Some("eyeflow demo".to_owned()))?;
        let started = Instant::now();
        let program =
            eyeflow_compiler::compile_and_sign(&source, &options, &key).map_err(compile_error)?;
        let compiled = started.elapsed();
        let bytes = eyeflow_ir::encode(&program);
        let started = Instant::now();
        let loaded = eyeflow_ir::load(&bytes, &keyring, &Limits::default()).map_err(refused)?;
        let load_time = started.elapsed();
        let opcodes = opcode_names(&loaded.program);
        println!(
            "{:<28} {:>3} instructions {:>6} bytes  compile {:>7.2} ms  load {:>6.1} µs  [{}]",
            loaded.program.program_id,
            loaded.program.instructions.len(),
            bytes.len(),
            compiled.as_secs_f64() * 1e3,
            load_time.as_secs_f64() * 1e6,
            opcodes.join(" ")
        );
        all_opcodes.extend(opcodes);
    }
    all_opcodes.sort_unstable();
    all_opcodes.dedup();
    println!(
        "{} rules compiled, signed and verified; {} of 14 opcodes used",
        files.len(),
        all_opcodes.len()
    );
    Ok(())
}
