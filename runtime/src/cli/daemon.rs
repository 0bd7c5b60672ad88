//! `eyeflow node` (the daemon: a node, its HTTP API and its event sources until SIGTERM) and
//! `eyeflow tokens` (bearer tokens of its API, minted from its data directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use eyeflow_runtime::api::{self, ApiConfig, Role, TokenKey};
use eyeflow_runtime::config::FileConfig;
use eyeflow_runtime::node::{Node, audit_key};
use eyeflow_runtime::sources::Sources;

use super::options::{DEFAULT_DATA_DIR, DataDir, Failure, NODE_URL_FILE};

/// `eyeflow node` options.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// The node's configuration (docs/config.md); without it, embedded defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (wins over the config's `[node] data_dir`) [default: ./eyeflow-data,
    /// unless the config names one].
    #[arg(long, env = "EYEFLOW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (wins over the config's `[api] listen`; default 127.0.0.1:7070).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

/// `eyeflow tokens` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokensCommand {
    /// Print a new bearer token for the node of a data directory (works while it runs).
    Issue {
        /// `admin`, `operator` or `viewer`.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        data_dir: DataDir,
    },
}

/// Runs the daemon until SIGTERM or SIGINT, then drains and exits.
pub(crate) fn node(args: NodeArgs) -> Result<(), Failure> {
    init_logs();
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .or_else(|| file.node.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let mut config = file.node_config(Some(data_dir.clone()))?;
    let node_id = config.node_id.clone();
    let key = audit_key(file.node.audit_key.as_deref(), &data_dir)?;
    config.audit_key = Some(key.clone());
    let node = Node::start(config)?;
    let sources = Sources::start(&node, &file.sources, &file.backends)?;
    let api = api::start(
        node.clone(),
        TokenKey::load_or_create(&data_dir)?,
        ApiConfig {
            listen: args.listen.unwrap_or_else(|| file.listen()),
            max_body_bytes: file.api.max_body_bytes,
            max_upload_bytes: file.api.max_upload_bytes,
            workers: file.api.workers,
            audit_key: Some(key.verifying_key()),
        },
    )?;
    // Before the banner: whoever saw the banner finds the URL.
    let url_file = write_url(&data_dir, api.addr())?;
    println!(
        "eyeflow node {node_id} listening on http://{} (data {})",
        api.addr(),
        data_dir.display()
    );
    let signal = wait_for_signal(&node).context("cannot wait for signals")?;
    tracing::info!("{signal}: draining");
    if let Err(e) = std::fs::remove_file(&url_file) {
        tracing::warn!("cannot remove {}: {e}", url_file.display());
    }
    api.stop();
    sources.stop();
    let drained = node.shutdown_within(Duration::from_millis(file.node.drain_timeout_ms))?;
    if signal == ESCALATED {
        return Err(anyhow!(
            "eyeflow node {node_id} stopped: {ESCALATED}; unfinished executions resume at the next start"
        )
        .into());
    }
    println!(
        "eyeflow node {node_id} stopped ({}; audit head signed)",
        if drained {
            "every execution finished"
        } else {
            "unfinished executions stay journaled and resume at the next start"
        }
    );
    Ok(())
}

/// Leaves the API's URL in the data directory ([`NODE_URL_FILE`]): the commands that find
/// the store locked by this node go through the API instead. Its path.
fn write_url(data_dir: &Path, addr: std::net::SocketAddr) -> anyhow::Result<PathBuf> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let file = data_dir.join(NODE_URL_FILE);
    std::fs::write(&file, format!("http://{addr}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

/// Waits for SIGTERM or SIGINT, or for the supervision tree to stop on its own (an actor
/// restarted too often: escalated up to the node supervisor).
fn wait_for_signal(node: &Node) -> std::io::Result<&'static str> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
            () = node.tree_stopped() => Ok(ESCALATED),
        }
    })
}

/// Why the node stops when its supervision tree stopped on its own.
const ESCALATED: &str =
    "an actor restarted more often than its restart intensity allows (see the log)";

fn init_logs() {
    let level = std::env::var("EYEFLOW_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// `eyeflow tokens`.
pub(crate) fn tokens(command: TokensCommand) -> Result<(), Failure> {
    match command {
        TokensCommand::Issue { role, data_dir } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow!("unknown role `{role}` (admin, operator or viewer)"))?;
            let key = TokenKey::load_or_create(data_dir.path()?)?;
            println!("{}", key.issue(role)?);
            Ok(())
        }
    }
}
