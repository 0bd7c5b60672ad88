//! `eyeflow audit`: verify a data directory's audit chain on a copy of its store (so it
//! works beside a running node and never writes), print its head, have a running node sign
//! a checkpoint, and accept what a damaged store lost.

use std::path::{Path, PathBuf};

use anyhow::Context;
use eyeflow_ir::keys;

use super::options::{CliResult, DataDir, Remote};

/// `eyeflow audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute the chain on a copy of the store (the data directory is never modified);
    /// exit 5 naming the first broken entry.
    Verify {
        #[command(flatten)]
        data_dir: DataDir,
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
        remote: Remote,
        /// Also write the checkpoint to this file.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the chain's head as `INDEX:HASH`, to keep outside the node for `verify --head`.
    Head {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Accept what a damaged store lost (the node refuses to start on it and says why):
    /// opens it as it is, appends a `STORE_REPAIR` audit entry naming the loss, and lets the
    /// node start again. The journal files as they were stay in `damaged-<ms>/`.
    Repair {
        #[command(flatten)]
        data_dir: DataDir,
    },
}

/// Runs an audit command.
pub(crate) fn run(command: AuditCommand) -> CliResult {
    match command {
        AuditCommand::Verify {
            data_dir,
            pubkey,
            head,
            checkpoint,
        } => verify(&data_dir, pubkey.as_deref(), head.as_deref(), &checkpoint),
        AuditCommand::Checkpoint { remote, output } => {
            let checkpoint =
                remote.send(reqwest::Method::POST, "/api/audit/checkpoint", None, &[])?;
            if let Some(output) = output {
                std::fs::write(&output, format!("{checkpoint}\n"))
                    .with_context(|| format!("cannot write {}", output.display()))?;
            }
            Ok(())
        }
        AuditCommand::Head { data_dir } => head(&data_dir),
        AuditCommand::Repair { data_dir } => repair(&data_dir),
    }
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
    // The mark first: a running node writes it after the records it names are in the
    // journal, so the store copied next holds at least what it claims.
    let mark = data_dir.join(eyeflow_runtime::store::mark::MARK_FILE);
    if mark.exists() {
        std::fs::copy(
            &mark,
            temp.path().join(eyeflow_runtime::store::mark::MARK_FILE),
        )
        .with_context(|| format!("cannot copy {}", mark.display()))?;
    }
    copy(&store, &temp.path().join("store"))
        .with_context(|| format!("cannot copy {}", store.display()))?;
    Ok(temp)
}

fn verify(
    data_dir: &DataDir,
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
    let copy = store_copy(path)?;
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
        Err(broken) => Err(broken.into()),
    }
}

fn head(data_dir: &DataDir) -> CliResult {
    let path = data_dir.path()?;
    let copy = store_copy(path)?;
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

fn repair(data_dir: &DataDir) -> CliResult {
    let path = data_dir.path()?;
    let (store, damage) = data_dir.opened(
        eyeflow_runtime::store::EmbeddedStore::open_repairing(path),
        "audit repair",
    )?;
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
