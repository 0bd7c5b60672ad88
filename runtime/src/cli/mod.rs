//! The `eyeflow` command line: the clap tree and the dispatch to one module per command
//! family. The families share only [`options`] (data directory, remote node, exit codes)
//! and never import each other.

mod audit;
mod client;
mod compile;
mod daemon;
mod demo;
mod executions;
mod keys;
mod mcu;
mod options;
mod plugin;

use clap::{Parser, Subcommand};

use options::CliResult;

/// eyeflow runs signed, compiled rule programs against valves, sensors and services.
///
/// A YAML rule compiles to an LLM-IR program signed by its publisher; a node runs it as
/// supervised actors on the events of webhooks, MQTT, Kafka and timers, reaches devices and
/// services through sandboxed WebAssembly plugins, journals every step and records every
/// effect in a signed audit chain. Start with `eyeflow demo`; run a node with `eyeflow
/// node`.
#[derive(Debug, Parser)]
#[command(name = "eyeflow", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ed25519 signing keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Compile a YAML rule into a signed LLM-IR program.
    Compile(compile::CompileArgs),
    /// Inspect and verify LLM-IR programs.
    Ir {
        #[command(subcommand)]
        command: compile::IrCommand,
    },
    /// WebAssembly plugins: author (new, build, sign, inspect) and operate (install, list,
    /// revoke, grant).
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
    /// MCU-profile programs: run a conformance vector, generate the vectors.
    Mcu {
        #[command(subcommand)]
        command: mcu::McuCommand,
    },
    /// Executions journaled in a data directory.
    Executions {
        #[command(subcommand)]
        command: executions::ExecutionsCommand,
    },
    /// The audit chain of a data directory.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Run a node on embedded defaults with the example rules and bundled plugins, feed
    /// simulated sensor events, print a summary, verify the audit chain.
    Demo(demo::DemoArgs),
    /// Run a node: the HTTP API, timers and configured event sources, until SIGTERM (which
    /// drains: intake stops, running executions finish or stay journaled, exit 0).
    Node(daemon::NodeArgs),
    /// Bearer tokens of a node's HTTP API.
    Tokens {
        #[command(subcommand)]
        command: daemon::TokensCommand,
    },
    /// The supervision tree of a running node (one line per live actor: path, kind,
    /// restarts); `--restart PATH` crashes that actor so that its supervisor restarts it.
    Actors(client::ActorsArgs),
    /// Deploy a signed program to a running node.
    Deploy(client::DeployArgs),
    /// Send events to a running node.
    Events {
        #[command(subcommand)]
        command: client::EventsCommand,
    },
    /// Approve (or reject) an instruction waiting for a human decision on a running node.
    Approve(client::ApproveArgs),
}

/// Runs one parsed command line.
pub(crate) fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Keys { command } => keys::run(command),
        Command::Compile(args) => compile::compile(args),
        Command::Ir { command } => compile::ir(command),
        Command::Plugin { command } => Ok(plugin::run(command)?),
        Command::Mcu { command } => mcu::run(command),
        Command::Executions { command } => executions::run(command),
        Command::Audit { command } => audit::run(command),
        Command::Demo(args) => demo::run(args),
        Command::Node(args) => daemon::node(args),
        Command::Tokens { command } => daemon::tokens(command),
        Command::Actors(args) => client::actors(args),
        Command::Deploy(args) => client::deploy(args),
        Command::Events { command } => client::events(command),
        Command::Approve(args) => client::approve(args),
    }
}
