//! Argument parsing and the implementation of each `eyeflow` subcommand.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use eyeflow_compiler::CompileOptions;
use eyeflow_ir::pb::{IrOpcode, LlmIrProgram};
use eyeflow_ir::{Keyring, Limits, keys};
use eyeflow_runtime::node::{Node, NodeConfig};

/// Why a command failed, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// I/O or internal failure.
    Failure = 1,
    /// The rule does not compile.
    CompileError = 3,
    /// The program was refused (decode, signature, version, structure).
    Refused = 4,
    /// The audit chain does not verify.
    AuditBroken = 5,
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

impl From<eyeflow_runtime::Error> for Failure {
    fn from(error: eyeflow_runtime::Error) -> Self {
        let code = match error {
            eyeflow_runtime::Error::Refused { .. } | eyeflow_runtime::Error::Ir(_) => Code::Refused,
            _ => Code::Failure,
        };
        Self {
            code,
            error: error.into(),
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
    /// Executions journaled in a data directory.
    Executions {
        #[command(subcommand)]
        command: ExecutionsCommand,
    },
    /// The audit chain of a data directory.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run a node on embedded defaults with the example rules and bundled plugins, feed
    /// simulated sensor events, print a summary, verify the audit chain.
    Demo(DemoArgs),
    /// Run a node: the HTTP API, timers and configured event sources, until SIGTERM (which
    /// drains: intake stops, running executions finish or stay journaled, exit 0).
    Node(crate::node_cmd::NodeArgs),
    /// Bearer tokens of a node's HTTP API.
    Tokens {
        #[command(subcommand)]
        command: crate::node_cmd::TokensCommand,
    },
    /// The supervision tree of a running node (one line per live actor: path, kind,
    /// restarts); `--restart PATH` crashes that actor so that its supervisor restarts it.
    Actors {
        #[command(flatten)]
        remote: crate::node_cmd::Remote,
        /// Crash the actor at this path (`node/registry`, `node/registry/<id>@<version>`).
        #[arg(long)]
        restart: Option<String>,
    },
    /// Deploy a signed program to a running node.
    Deploy {
        /// The signed program file.
        program: PathBuf,
        #[command(flatten)]
        remote: crate::node_cmd::Remote,
    },
    /// Send events to a running node.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Approve (or reject) an instruction waiting for a human decision on a running node.
    Approve {
        /// The execution id.
        execution: String,
        /// The instruction id.
        instruction: String,
        /// Reject instead of approving.
        #[arg(long)]
        reject: bool,
        #[command(flatten)]
        remote: crate::node_cmd::Remote,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// POST one JSON event to a webhook source.
    Send {
        /// The webhook source name (the programs' trigger `source`).
        source: String,
        /// The event as JSON (default `{}`).
        #[arg(long)]
        data: Option<String>,
        /// Event id: a redelivery with the same id is not executed twice (default: random).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        remote: crate::node_cmd::Remote,
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
    /// Trust a publisher's public key (NAME.pub) in a data directory's keyring, or on a
    /// running node with `--node`.
    Trust {
        /// The public key file.
        file: PathBuf,
        #[command(flatten)]
        data_dir: crate::plugin_cmd::DataDir,
        /// Trust it on a running node through its API (URL) instead of a data directory.
        #[arg(long = "node", env = "EYEFLOW_NODE")]
        node: Option<String>,
        /// Bearer token for `--node` (admin role).
        #[arg(long, env = "EYEFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Revoke a key id: its programs and packages are refused, and on a running node
    /// (`--node`) its deployed programs take no new event, at once.
    Revoke {
        /// The key id (16 hex characters).
        id: String,
        #[command(flatten)]
        data_dir: crate::plugin_cmd::DataDir,
        /// Revoke it on a running node through its API (URL) instead of a data directory.
        #[arg(long = "node", env = "EYEFLOW_NODE")]
        node: Option<String>,
        /// Bearer token for `--node` (admin role).
        #[arg(long, env = "EYEFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// `eyeflow demo` options.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Folder of rule files.
    #[arg(long, default_value = "examples/rules")]
    rules: PathBuf,
    /// Node data directory (default: a fresh temporary one). Re-running on the same
    /// directory resumes interrupted executions and skips journaled events.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of simulated sensor events.
    #[arg(long, default_value_t = 300)]
    events: u32,
    /// Directory of built plugins (`<name>.wasm` + `<name>.json`).
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Scheduler worker slots.
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum ExecutionsCommand {
    /// Journal counts of a data directory as JSON: executions, pending, finished, steps.
    Summary {
        #[command(flatten)]
        data_dir: crate::plugin_cmd::DataDir,
    },
    /// Status, trace and audit hashes of one execution, from a running node.
    Show {
        /// The execution id.
        id: String,
        #[command(flatten)]
        remote: crate::node_cmd::Remote,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the chain on a copy of the store (the data directory is never modified);
    /// exit 5 naming the first broken entry.
    Verify {
        #[command(flatten)]
        data_dir: crate::plugin_cmd::DataDir,
        /// The node's public key: also check the signed checkpoints.
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// A head kept elsewhere (`INDEX:HASH`, from `eyeflow audit head`): the chain must
        /// reach that entry with that hash.
        #[arg(long)]
        head: Option<String>,
        /// A signed checkpoint kept elsewhere (a file from `eyeflow audit checkpoint`, or a
        /// checkpoint message's value from the Kafka audit topic); repeatable. Needs
        /// `--pubkey`: its signature is checked, and the chain must reach it with its hash.
        #[arg(long, requires = "pubkey")]
        checkpoint: Vec<PathBuf>,
    },
    /// Have a running node sign a checkpoint of its audit chain's head now, and print it
    /// (or write it to `--output`) to keep outside the node.
    Checkpoint {
        #[command(flatten)]
        remote: crate::node_cmd::Remote,
        /// Also write the checkpoint to this file.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the chain's head as `INDEX:HASH`, to keep outside the node for `verify --head`.
    Head {
        #[command(flatten)]
        data_dir: crate::plugin_cmd::DataDir,
    },
    /// Accept what a damaged store lost (the node refuses to start on it and says why):
    /// opens it as it is, appends a `STORE_REPAIR` audit entry naming the loss, and lets the
    /// node start again. The journal files as they were stay in `damaged-<ms>/`.
    Repair {
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

/// `text` as one URL path segment (percent-encoded).
pub(crate) fn path_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Runs one parsed command line.
pub(crate) fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Keys {
            command: KeysCommand::Gen { out },
        } => keys_gen(&out),
        Command::Keys {
            command:
                KeysCommand::Trust {
                    file,
                    node: Some(url),
                    token,
                    ..
                },
        } => {
            // Checked here, so a secret key file never leaves this machine.
            eyeflow_ir::keys::read_verifying_key(&file)?;
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            crate::node_cmd::Remote { url, token }
                .send(
                    reqwest::Method::POST,
                    "/api/keys",
                    Some(("text/plain", text)),
                    &[],
                )
                .map(drop)
        }
        Command::Keys {
            command: KeysCommand::Trust { file, data_dir, .. },
        } => Ok(crate::plugin_cmd::trust(&file, &data_dir)?),
        Command::Keys {
            command:
                KeysCommand::Revoke {
                    id,
                    node: Some(url),
                    token,
                    ..
                },
        } => crate::node_cmd::Remote { url, token }
            .send(
                reqwest::Method::DELETE,
                &format!("/api/keys/{}", path_segment(&id)),
                None,
                &[],
            )
            .map(drop),
        Command::Keys {
            command: KeysCommand::Revoke { id, data_dir, .. },
        } => Ok(crate::plugin_cmd::revoke_key(&id, &data_dir)?),
        Command::Executions {
            command: ExecutionsCommand::Summary { data_dir },
        } => executions_summary(&data_dir),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    data_dir,
                    pubkey,
                    head,
                    checkpoint,
                },
        } => audit_verify(&data_dir, pubkey.as_deref(), head.as_deref(), &checkpoint),
        Command::Audit {
            command: AuditCommand::Checkpoint { remote, output },
        } => {
            let checkpoint =
                remote.send(reqwest::Method::POST, "/api/audit/checkpoint", None, &[])?;
            if let Some(output) = output {
                std::fs::write(&output, format!("{checkpoint}\n"))
                    .with_context(|| format!("cannot write {}", output.display()))?;
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Head { data_dir },
        } => audit_head(&data_dir),
        Command::Audit {
            command: AuditCommand::Repair { data_dir },
        } => audit_repair(&data_dir),
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
        Command::Demo(args) => demo(args),
        Command::Node(args) => crate::node_cmd::node(args),
        Command::Tokens { command } => crate::node_cmd::tokens(command),
        Command::Actors { remote, restart } => {
            match restart {
                Some(path) => remote.send(
                    reqwest::Method::POST,
                    "/api/actors/restart",
                    Some((
                        "application/json",
                        serde_json::json!({ "path": path }).to_string().into_bytes(),
                    )),
                    &[],
                )?,
                None => remote.send(reqwest::Method::GET, "/api/actors", None, &[])?,
            };
            Ok(())
        }
        Command::Deploy { program, remote } => {
            let bytes = read_program(&program)?;
            remote
                .send(
                    reqwest::Method::POST,
                    "/api/programs",
                    Some(("application/octet-stream", bytes)),
                    &[],
                )
                .map(drop)
        }
        Command::Events {
            command:
                EventsCommand::Send {
                    source,
                    data,
                    id,
                    remote,
                },
        } => {
            let body = data.unwrap_or_else(|| "{}".to_owned());
            serde_json::from_str::<serde_json::Value>(&body).context("--data is not JSON")?;
            let headers: Vec<(&str, String)> =
                id.into_iter().map(|id| ("x-event-id", id)).collect();
            remote
                .send(
                    reqwest::Method::POST,
                    &format!("/api/events/{}", path_segment(&source)),
                    Some(("application/json", body.into_bytes())),
                    &headers,
                )
                .map(drop)
        }
        Command::Executions {
            command: ExecutionsCommand::Show { id, remote },
        } => remote
            .send(
                reqwest::Method::GET,
                &format!("/api/executions/{}", path_segment(&id)),
                None,
                &[],
            )
            .map(drop),
        Command::Approve {
            execution,
            instruction,
            reject,
            remote,
        } => remote
            .send(
                reqwest::Method::POST,
                &format!(
                    "/api/executions/{}/approvals/{}",
                    path_segment(&execution),
                    path_segment(&instruction)
                ),
                Some((
                    "application/json",
                    serde_json::json!({ "approve": !reject })
                        .to_string()
                        .into_bytes(),
                )),
                &[],
            )
            .map(drop),
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

/// The main job: starts a node on embedded defaults, installs the bundled plugins, compiles
/// and deploys every example rule signed with the data directory's development key, feeds
/// simulated sensor events, and ends by verifying the audit chain. Re-running it on the
/// same data directory resumes what a crash interrupted and skips events already journaled.
fn demo(args: DemoArgs) -> CliResult {
    let DemoArgs {
        rules,
        data_dir,
        events,
        plugins,
        workers,
    } = args;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rules)
        .with_context(|| format!("cannot list rules in {}", rules.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(anyhow!("no .yaml rules in {}", rules.display()).into());
    }
    let scratch;
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => {
            scratch = tempfile::tempdir().context("cannot create a temporary data directory")?;
            scratch.path().to_path_buf()
        }
    };
    let key = eyeflow_runtime::node::development_key(&data_dir)?;
    let secrets = data_dir.join("secrets.json");
    if !secrets.exists() {
        // The LLM rule's vault slot; real nodes keep secrets in Vault/OpenBao or this file.
        std::fs::write(
            &secrets,
            r#"{"kv/plant-a/triage-guidelines": "Chiller and boiler trips are critical; filters are minor.",
                "kv/plant-a/bms-api-token": "demo-bms-token",
                "kv/plant-a/pager-token": "demo-pager-token"}"#,
        )
        .with_context(|| format!("cannot write {}", secrets.display()))?;
    }
    let key_id = keys::key_id(&key.verifying_key());
    println!(
        "data directory {} (development key {key_id})",
        data_dir.display()
    );

    let mut programs = Vec::new();
    let mut all_opcodes = Vec::new();
    for file in &files {
        let source = read_rule(file)?;
        let mut options = compile_options(file, Some("eyeflow demo".to_owned()))?;
        // A rerun on the same data directory must sign the same bytes: the node refuses
        // other bytes under a version it has deployed.
        if let Some(modified) = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok())
        {
            options.compiled_at = modified;
        }
        let started = Instant::now();
        let program =
            eyeflow_compiler::compile_and_sign(&source, &options, &key).map_err(compile_error)?;
        let compiled = started.elapsed();
        let bytes = eyeflow_ir::encode(&program);
        let opcodes = opcode_names(&program);
        println!(
            "{:<20} {:>3} instructions {:>6} bytes  compile {:>6.2} ms  [{}]",
            program.program_id,
            program.instructions.len(),
            bytes.len(),
            compiled.as_secs_f64() * 1e3,
            opcodes.join(" ")
        );
        all_opcodes.extend(opcodes);
        programs.push((program.program_id.clone(), bytes));
    }
    all_opcodes.sort_unstable();
    all_opcodes.dedup();
    println!(
        "{} rules compiled, signed and verified; {} of 14 opcodes used",
        files.len(),
        all_opcodes.len()
    );

    let mut config = NodeConfig::embedded(&data_dir);
    config.audit_key = Some(key.clone());
    // The example rules name plant hosts that do not exist here: keep the demo off the
    // network, so those calls fail fast as `denied` and take their fallbacks.
    config.http_allow = Some(Vec::new());
    if let Some(workers) = workers {
        config.workers = workers;
    }
    let node = Node::start(config)?;
    node.trust(&key.verifying_key())?;
    let plugins = demo_plugins(plugins)?;
    for name in BUNDLED {
        let manifest = std::fs::read(plugins.join(format!("{name}.json")))
            .with_context(|| format!("bundled plugin {name} missing in {}", plugins.display()))?;
        let component = std::fs::read(plugins.join(format!("{name}.wasm")))
            .with_context(|| format!("bundled plugin {name} missing in {}", plugins.display()))?;
        let mut package = eyeflow_runtime::plugins::Package::new(manifest, component)?;
        package.sign(&key);
        node.plugins().install(&package)?;
    }
    println!(
        "plugins: {} (outbound HTTP: none allowed in the demo)",
        BUNDLED.join(", ")
    );
    for (_, bytes) in &programs {
        node.deploy(bytes).map_err(refused)?;
    }

    let readings = node
        .plugins()
        .poll(
            &eyeflow_actors::ports::CapabilityRef::new("sensor-sim", semver::VersionReq::STAR),
            None,
            events,
            std::time::Duration::from_secs(10),
        )
        .map_err(|e| anyhow!("sensor-sim source: {e}"))?;
    let started = Instant::now();
    let (mut new, mut duplicate) = (0u32, 0u32);
    for (i, event) in readings.events.iter().enumerate() {
        let reading = event;
        let (program, _) = &programs[i % programs.len()];
        let reading: serde_json::Value =
            serde_json::from_str(&reading.payload).context("sensor-sim event payload")?;
        let payload = demo_payload(&reading);
        let event_id = format!("{program}/{}", readings.events[i].id);
        // The node refuses work it could not start in time: the demo waits, as a client
        // told `Retry-After` would.
        let accepted = loop {
            match node.submit(program, &event_id, "demo", payload.clone()) {
                Err(eyeflow_runtime::Error::Overloaded { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        match accepted {
            eyeflow_actors::ports::Accepted::New { .. } => new += 1,
            eyeflow_actors::ports::Accepted::Duplicate { .. } => duplicate += 1,
        }
        if (i + 1) % (readings.events.len() / 10).max(1) == 0 {
            println!(
                "  {:>5} events accepted, {:>5} in flight",
                i + 1,
                node.in_flight()
            );
        }
    }
    node.wait_idle();
    let took = started.elapsed();
    println!(
        "{new} events executed ({duplicate} already journaled, skipped) in {:.2} s",
        took.as_secs_f64()
    );
    print_summary(&node)?;
    node.shutdown()?;
    match eyeflow_runtime::audit::verify(node.store(), Some(&key.verifying_key()))? {
        Ok(report) => println!(
            "audit chain verified: {} entries, {} signed checkpoints, head {}",
            report.entries,
            report.checkpoints,
            hex::encode(report.head_hash)
        ),
        Err(broken) => {
            return Err(Failure {
                code: Code::AuditBroken,
                error: broken.into(),
            });
        }
    }
    Ok(())
}

/// The bundled plugins the example rules use.
const BUNDLED: [&str; 4] = ["sensor-sim", "valve-sim", "http-json", "webhook-notify"];

/// Where the built plugins are: `--plugins`, else the checkout's `target/plugins`, built
/// by `scripts/build-plugins.sh` when missing.
fn demo_plugins(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        return Ok(dir);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/plugins");
    if !dir.join("valve-sim.wasm").exists() {
        println!("building the bundled plugins (scripts/build-plugins.sh)...");
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/build-plugins.sh"))
            .status()
            .context("cannot run scripts/build-plugins.sh")?;
        if !status.success() {
            return Err(anyhow!("scripts/build-plugins.sh failed ({status})"));
        }
    }
    Ok(dir)
}

/// A sensor reading dressed as the events the example rules expect.
fn demo_payload(reading: &serde_json::Value) -> serde_json::Value {
    let value = reading["value"].as_f64().unwrap_or_default();
    let sensor = reading["sensor"].as_str().unwrap_or("boiler-1");
    let critical = match reading["kind"].as_str() {
        Some("pressure") => value > 8.0,
        Some("temperature") => value > 85.0,
        _ => value > 90.0,
    };
    serde_json::json!({
        "value": value,
        "sensor": sensor,
        "kind": reading["kind"],
        "unit": reading["unit"],
        "ts": reading["ts"],
        "asset": sensor,
        "text": format!("{} {} at {value}", sensor, reading["kind"].as_str().unwrap_or("reading")),
        "severity": if critical { "critical" } else { "warning" },
        "alarm": {"code": format!("{}-{}", sensor, reading["kind"].as_str().unwrap_or("reading")), "value": value},
    })
}

fn print_summary(node: &Node) -> anyhow::Result<()> {
    let mut fallbacks: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> =
        std::collections::BTreeMap::new();
    let mut from = 0;
    loop {
        let entries = node.audit().entries(from, 1000)?;
        let Some(last) = entries.last() else { break };
        from = last.index + 1;
        for chained in &entries {
            if let Some(fallback) = &chained.entry.fallback {
                *fallbacks
                    .entry(chained.entry.program_id.clone())
                    .or_default()
                    .entry(fallback.clone())
                    .or_insert(0) += 1;
            }
        }
    }
    println!(
        "{:<20} {:>6} {:>9} {:>9}  outcomes / fallbacks",
        "program", "runs", "p50 ms", "p99 ms"
    );
    for (program, stats) in node.stats() {
        let mut lat = stats.latencies_us.clone();
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |us| *us as f64 / 1e3)
        };
        let outcomes: Vec<String> = stats
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let taken: Vec<String> = fallbacks
            .get(&program)
            .map(|f| f.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        println!(
            "{:<20} {:>6} {:>9.2} {:>9.2}  {} / {}",
            program,
            stats.outcomes.values().sum::<u64>(),
            pct(0.5),
            pct(0.99),
            outcomes.join(" "),
            if taken.is_empty() {
                "none".to_owned()
            } else {
                taken.join(" ")
            }
        );
        if let Some(failure) = &stats.first_failure {
            println!("{:<20} first failure: {failure}", "");
        }
    }
    Ok(())
}

/// A checkpoint file: the JSON of `eyeflow audit checkpoint` or of the Kafka audit topic.
fn read_checkpoint(file: &Path) -> anyhow::Result<eyeflow_runtime::audit::Checkpoint> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read checkpoint {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("checkpoint {}: not JSON", file.display()))?;
    eyeflow_runtime::audit::Checkpoint::from_json(&value)
        .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", file.display()))
}

/// `INDEX:HASH` (64 hex digits).
fn parse_head(text: &str) -> anyhow::Result<(u64, [u8; 32])> {
    let parsed = text.split_once(':').and_then(|(index, hash)| {
        let hash = <[u8; 32]>::try_from(hex::decode(hash).ok()?).ok()?;
        Some((index.parse().ok()?, hash))
    });
    parsed.ok_or_else(|| {
        anyhow::anyhow!("--head `{text}`: expected INDEX:HASH, the output of `eyeflow audit head`")
    })
}

/// A copy of the data directory's store in a temporary directory: verification opens the
/// copy, so the store's own recovery never rewrites the original (fjall drops a journal
/// suffix it cannot read), and the original stays byte for byte as it was.
fn store_copy(data_dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), target)?;
            }
        }
        Ok(())
    }
    let store = data_dir.join("store");
    if !store.is_dir() {
        anyhow::bail!("{} holds no store", data_dir.display());
    }
    let temp = tempfile::tempdir().context("cannot make a temporary directory")?;
    copy(&store, &temp.path().join("store"))
        .with_context(|| format!("cannot copy {}", store.display()))?;
    let mark = data_dir.join(eyeflow_runtime::store::mark::MARK_FILE);
    if mark.exists() {
        std::fs::copy(
            &mark,
            temp.path().join(eyeflow_runtime::store::mark::MARK_FILE),
        )
        .with_context(|| format!("cannot copy {}", mark.display()))?;
    }
    Ok(temp)
}

fn audit_verify(
    data_dir: &crate::plugin_cmd::DataDir,
    pubkey: Option<&Path>,
    head: Option<&str>,
    checkpoints: &[PathBuf],
) -> CliResult {
    let key = pubkey.map(keys::read_verifying_key).transpose()?;
    let head = head.map(parse_head).transpose()?;
    let published = checkpoints
        .iter()
        .map(|file| read_checkpoint(file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let path = data_dir.path()?;
    let copy = store_copy(&path)?;
    let store = eyeflow_runtime::store::EmbeddedStore::open(copy.path())
        .with_context(|| format!("cannot open the store of {}", path.display()))?;
    let verified = eyeflow_runtime::audit::verify_with(&store, key.as_ref(), &published)
        .context("reading the audit chain")?
        .and_then(|report| match head {
            None => Ok(report),
            Some(head) => match eyeflow_runtime::audit::reaches(&store, &report, head) {
                Ok(Ok(())) => Ok(report),
                Ok(Err(broken)) => Err(broken),
                Err(e) => Err(eyeflow_runtime::audit::AuditBroken {
                    index: head.0,
                    reason: format!("cannot read the entry: {e}"),
                }),
            },
        });
    match verified {
        Ok(report) => {
            println!(
                "audit chain verified: {} entries, head {}, {} checkpoints{}{}",
                report.entries,
                hex::encode(report.head_hash),
                report.checkpoints,
                if report.signatures_checked {
                    " (signatures checked)"
                } else {
                    ""
                },
                if head.is_some() || !published.is_empty() {
                    " (reaches what was kept elsewhere)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(broken) => Err(Failure {
            code: Code::AuditBroken,
            error: broken.into(),
        }),
    }
}

fn audit_head(data_dir: &crate::plugin_cmd::DataDir) -> CliResult {
    let path = data_dir.path()?;
    let copy = store_copy(&path)?;
    let store = eyeflow_runtime::store::EmbeddedStore::open(copy.path())
        .with_context(|| format!("cannot open the store of {}", path.display()))?;
    let audit = eyeflow_runtime::audit::FjallAudit::open(store, Default::default())?;
    let (next, hash) = audit.head();
    let Some(index) = next.checked_sub(1) else {
        return Err(anyhow::anyhow!("the audit chain of {} is empty", path.display()).into());
    };
    println!("{index}:{}", hex::encode(hash));
    Ok(())
}

fn audit_repair(data_dir: &crate::plugin_cmd::DataDir) -> CliResult {
    let path = data_dir.path()?;
    let (store, damage) = eyeflow_runtime::store::EmbeddedStore::open_repairing(&path)
        .with_context(|| format!("cannot open the store of {}", path.display()))?;
    let Some((what, kept)) = damage else {
        println!(
            "the store of {} is not damaged: nothing to repair",
            path.display()
        );
        return Ok(());
    };
    let audit = eyeflow_runtime::audit::FjallAudit::open(
        store,
        eyeflow_runtime::audit::AuditConfig {
            durability: eyeflow_runtime::store::Durability::Sync,
            ..Default::default()
        },
    )?;
    let receipt = audit.append(&eyeflow_runtime::audit::operator_entry(
        "STORE_REPAIR",
        &path.display().to_string(),
        &serde_json::json!({ "damage": what }),
        &serde_json::json!({ "kept": kept.display().to_string(), "head": audit.head().0 }),
        eyeflow_runtime::now_ms(),
    ))?;
    println!(
        "repaired {}: {what}; audited as entry {} (STORE_REPAIR); the journal files as they were are in {}",
        path.display(),
        receipt.index,
        kept.display()
    );
    Ok(())
}

fn executions_summary(data_dir: &crate::plugin_cmd::DataDir) -> CliResult {
    let path = data_dir.path()?;
    let store = eyeflow_runtime::store::EmbeddedStore::open(&path)
        .with_context(|| format!("cannot open data directory {}", path.display()))?;
    let journal = eyeflow_runtime::journal::FjallJournal::open(
        store,
        eyeflow_runtime::store::Durability::Sync,
    )?;
    let counts = journal.counts()?;
    println!(
        "{}",
        serde_json::json!({
            "executions": counts.executions,
            "pending": counts.pending,
            "finished": counts.finished,
            "steps": counts.steps,
        })
    );
    Ok(())
}
