//! The commands that drive a running node through its HTTP API and print its JSON answer:
//! `deploy`, `events send`, `approve`, `actors`.

use std::path::PathBuf;

use anyhow::Context;

use super::options::{CliResult, Remote, path_segment};

/// `eyeflow deploy` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    /// The signed program file.
    program: PathBuf,
    #[command(flatten)]
    remote: Remote,
}

/// `eyeflow events` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum EventsCommand {
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
        remote: Remote,
    },
}

/// `eyeflow approve` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ApproveArgs {
    /// The execution id.
    execution: String,
    /// The instruction id.
    instruction: String,
    /// Reject instead of approving.
    #[arg(long)]
    reject: bool,
    #[command(flatten)]
    remote: Remote,
}

/// `eyeflow actors` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ActorsArgs {
    #[command(flatten)]
    remote: Remote,
    /// Crash the actor at this path (`node/registry`, `node/registry/<id>@<version>`).
    #[arg(long)]
    restart: Option<String>,
}

/// `eyeflow deploy`.
pub(crate) fn deploy(args: DeployArgs) -> CliResult {
    let DeployArgs { program, remote } = args;
    let bytes = std::fs::read(&program)
        .with_context(|| format!("cannot read program {}", program.display()))?;
    remote
        .send(
            reqwest::Method::POST,
            "/api/programs",
            Some(("application/octet-stream", bytes)),
            &[],
        )
        .map(drop)
}

/// `eyeflow events`.
pub(crate) fn events(command: EventsCommand) -> CliResult {
    let EventsCommand::Send {
        source,
        data,
        id,
        remote,
    } = command;
    let body = data.unwrap_or_else(|| "{}".to_owned());
    serde_json::from_str::<serde_json::Value>(&body).context("--data is not JSON")?;
    let headers: Vec<(&str, String)> = id.into_iter().map(|id| ("x-event-id", id)).collect();
    remote
        .send(
            reqwest::Method::POST,
            &format!("/api/events/{}", path_segment(&source)),
            Some(("application/json", body.into_bytes())),
            &headers,
        )
        .map(drop)
}

/// `eyeflow approve`.
pub(crate) fn approve(args: ApproveArgs) -> CliResult {
    let ApproveArgs {
        execution,
        instruction,
        reject,
        remote,
    } = args;
    remote
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
        .map(drop)
}

/// `eyeflow actors`.
pub(crate) fn actors(args: ActorsArgs) -> CliResult {
    let ActorsArgs { remote, restart } = args;
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
