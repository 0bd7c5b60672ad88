//! `eyeflow node` (the daemon), `eyeflow tokens`, and the client commands that talk to a
//! running node over its HTTP API (`deploy`, `events send`, `executions show`, `approve`,
//! `plugin install --node`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use eyeflow_runtime::api::{self, ApiConfig, Role, TokenKey};
use eyeflow_runtime::config::FileConfig;
use eyeflow_runtime::node::{Node, audit_key};
use eyeflow_runtime::sources::Sources;
use serde_json::Value;

use crate::cli::{Code, Failure};

/// `eyeflow node` options.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// The node's configuration (docs/config.md); without it, embedded defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (wins over the config's `[node] data_dir`; default ./eyeflow-data).
    #[arg(long)]
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
        data_dir: crate::plugin_cmd::DataDir,
    },
}

/// Where a client command sends its request.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Remote {
    /// The node's API base URL.
    #[arg(
        long = "node",
        env = "EYEFLOW_NODE",
        default_value = "http://127.0.0.1:7070"
    )]
    pub(crate) url: String,
    /// Bearer token (`eyeflow tokens issue`).
    #[arg(long, env = "EYEFLOW_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
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
        .unwrap_or_else(|| PathBuf::from("eyeflow-data"));
    let mut config = file.node_config(Some(data_dir.clone()))?;
    let node_id = config.node_id.clone();
    let key = audit_key(file.node.audit_key.as_deref(), &data_dir)?;
    config.audit_key = Some(key.clone());
    let node = Node::start(config)?;
    let sources = Sources::start(&node, &file)?;
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
    println!(
        "eyeflow node {node_id} listening on http://{} (data {})",
        api.addr(),
        data_dir.display()
    );
    let signal = wait_for_signal(&node).context("cannot wait for signals")?;
    tracing::info!("{signal}: draining");
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
            let key = TokenKey::load_or_create(&data_dir.path()?)?;
            println!("{}", key.issue(role)?);
            Ok(())
        }
    }
}

impl Remote {
    /// Sends a request with a body and prints the JSON answer; an API error becomes the
    /// matching exit code with the server's message.
    pub(crate) fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> Result<Value, Failure> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request
            .send()
            .with_context(|| format!("cannot reach the node at {url}"))?;
        let status = response.status();
        let text = response.text().context("cannot read the node's answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            return Ok(value);
        }
        let code = value["error"]["code"].as_str().unwrap_or("error");
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        let exit = match status.as_u16() {
            422 | 413 => Code::Refused,
            _ => Code::Failure,
        };
        Err(Failure {
            code: exit,
            error: anyhow!("{} {code}: {message}", status.as_u16()),
        })
    }
}
