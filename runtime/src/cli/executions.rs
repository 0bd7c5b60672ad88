//! `eyeflow executions`: the journal's counts of a data directory (or of the node running
//! on it), and one execution of a running node.

use serde_json::json;

use super::options::{CliResult, OnNode, Remote, Target, path_segment};

/// `eyeflow executions` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ExecutionsCommand {
    /// Journal counts of a data directory as JSON: executions, pending, finished, steps.
    Summary {
        #[command(flatten)]
        on: OnNode,
    },
    /// Status, trace and audit hashes of one execution, from a running node.
    Show {
        /// The execution id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs an executions command.
pub(crate) fn run(command: ExecutionsCommand) -> CliResult {
    match command {
        ExecutionsCommand::Summary { on } => summary(&on),
        ExecutionsCommand::Show { id, remote } => remote
            .send(
                reqwest::Method::GET,
                &format!("/api/executions/{}", path_segment(&id)),
                None,
                &[],
            )
            .map(drop),
    }
}

fn summary(on: &OnNode) -> CliResult {
    let counts = match on.target()? {
        Target::Store(store) => {
            let journal = eyeflow_runtime::journal::FjallJournal::open(
                store,
                eyeflow_runtime::store::Durability::Sync,
            )?;
            let counts = journal.counts()?;
            json!({
                "executions": counts.executions,
                "pending": counts.pending,
                "finished": counts.finished,
                "steps": counts.steps,
            })
        }
        Target::Node(node) => {
            let answer = node.call(reqwest::Method::GET, "/api/executions", None, &[])?;
            json!({
                "executions": answer["executions"],
                "pending": answer["pending"],
                "finished": answer["finished"],
                "steps": answer["steps"],
            })
        }
    };
    println!("{counts}");
    Ok(())
}
