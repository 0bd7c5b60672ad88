//! `eyeflow executions`: the journal's counts of a data directory (or of the node running
//! on it), and the executions of a running node: listed page by page, or one in full.

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
    /// List a running node's executions, newest first, one page at a time (the answer's
    /// `next_cursor` is the `--cursor` of the next page).
    List {
        /// Only this program's.
        #[arg(long)]
        program: Option<String>,
        /// Only those in this status: `running`, `awaiting_approval`, `ambiguous`,
        /// `completed`, `failed` or `rejected`.
        #[arg(long)]
        status: Option<String>,
        /// Only those accepted at or after this time, Unix milliseconds.
        #[arg(long)]
        since: Option<u64>,
        /// Executions per page (default 50, at most 500).
        #[arg(long)]
        limit: Option<usize>,
        /// Where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        remote: Remote,
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
        ExecutionsCommand::List {
            program,
            status,
            since,
            limit,
            cursor,
            remote,
        } => {
            let mut query = reqwest::Url::parse("http://node/api/executions")
                .map_err(|e| anyhow::anyhow!("the listing URL: {e}"))?;
            {
                let mut pairs = query.query_pairs_mut();
                let numbers = [
                    ("since", since.map(|n| n.to_string())),
                    ("limit", limit.map(|n| n.to_string())),
                ];
                let texts = [("program", program), ("status", status), ("cursor", cursor)];
                for (name, value) in texts.into_iter().chain(numbers) {
                    if let Some(value) = value {
                        pairs.append_pair(name, &value);
                    }
                }
            }
            let path = match query.query() {
                Some(q) if !q.is_empty() => format!("{}?{q}", query.path()),
                _ => query.path().to_owned(),
            };
            remote
                .send(reqwest::Method::GET, &path, None, &[])
                .map(drop)
        }
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
            let answer = node.call(reqwest::Method::GET, "/api/executions/summary", None, &[])?;
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
