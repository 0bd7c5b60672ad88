//! `eyeflow audit`: verify a data directory's audit chain on a copy of its store (so it
//! works beside a running node and never writes), or an exported file with no data
//! directory at all; export the chain; print its head, have a running node sign a
//! checkpoint, and accept what a damaged store lost.

use std::path::{Path, PathBuf};

use anyhow::Context;
use eyeflow_ir::keys;

use eyeflow_runtime::audit::{Programs, VerifyReport};

use super::options::{CliResult, Code, DataDir, Failure, Remote};

/// `eyeflow audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute the chain on a copy of the store (the data directory is never modified),
    /// or of an exported file (`--file`, no data directory needed); exit 5 naming the first
    /// broken entry.
    Verify {
        #[command(flatten)]
        data_dir: DataDir,
        /// An audit file from `eyeflow audit export` (or the Kafka audit topic's records
        /// behind a header) to verify instead of a data directory; needs `--pubkey`.
        #[arg(long, requires = "pubkey")]
        file: Option<PathBuf>,
        /// The node's public key: also check the signed checkpoints.
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// A head kept elsewhere (`INDEX:HASH`, from `eyeflow audit head`): the chain must
        /// reach that entry with that hash.
        #[arg(long, conflicts_with = "file")]
        head: Option<String>,
        /// A signed checkpoint kept elsewhere (a file from `eyeflow audit checkpoint`, or a
        /// checkpoint message's value from the Kafka audit topic); repeatable. Needs
        /// `--pubkey`: its signature is checked, and the chain must reach it with its hash.
        #[arg(long, requires = "pubkey")]
        checkpoint: Vec<PathBuf>,
        /// A folder of signed programs (`*.ir` from `eyeflow compile`, or a node's
        /// `programs/*.bin`): each entry's program hash must be one of theirs, with the
        /// program id and version the entry names.
        #[arg(long)]
        programs: Option<PathBuf>,
    },
    /// Write entries of the chain, with their hashes, the signed checkpoints of them and the
    /// node key's id, to a self-contained file (`eyeflow audit verify --file` checks it
    /// anywhere). Reads a copy of the store, so it also runs beside a running node.
    Export {
        #[command(flatten)]
        data_dir: DataDir,
        /// First entry to export.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last entry to export (default: the chain's head).
        #[arg(long)]
        to: Option<u64>,
        /// The node's audit public key, named in the file (default: `node.pub` in the data
        /// directory; give the public half of `[node] audit_key` when one is configured).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// The file to write.
        #[arg(long, short)]
        output: PathBuf,
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
            file,
            pubkey,
            head,
            checkpoint,
            programs,
        } => {
            let programs = programs.as_deref().map(read_programs).transpose()?;
            match (file, pubkey) {
                (Some(file), Some(pubkey)) => verify_file(&file, &pubkey, &checkpoint, programs),
                (Some(_), None) => Err(anyhow::anyhow!("--file needs --pubkey").into()),
                (None, pubkey) => verify(
                    &data_dir,
                    pubkey.as_deref(),
                    head.as_deref(),
                    &checkpoint,
                    programs,
                ),
            }
        }
        AuditCommand::Export {
            data_dir,
            from,
            to,
            pubkey,
            output,
        } => export(&data_dir, from, to, pubkey.as_deref(), &output),
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
/// suffix it cannot read), and the original stays byte for byte as it was. A running node
/// deletes files as it flushes and compacts: a copy that met a file gone between listing
/// and copying starts over.
fn store_copy(data_dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    /// Copies made before giving up on a store whose files keep moving.
    const ATTEMPTS: usize = 20;
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
    let mut attempt = 0;
    loop {
        attempt += 1;
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
        match copy(&store, &temp.path().join("store")) {
            Ok(()) => return Ok(temp),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < ATTEMPTS => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot copy {}", store.display()));
            }
        }
    }
}

fn verify(
    data_dir: &DataDir,
    pubkey: Option<&Path>,
    head: Option<&str>,
    checkpoints: &[PathBuf],
    programs: Option<Programs>,
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
    let verified = eyeflow_runtime::audit::verify_with(&store, key.as_ref(), &published, programs)
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
            // After compaction the chain starts right after a signed checkpoint.
            let part = match report.first.checked_sub(1) {
                None => format!("{} entries", report.entries),
                Some(before) => format!(
                    "verified entries {}..{}, starting from signed checkpoint {before} (entries \
                     before it were compacted)",
                    report.first,
                    report.entries.saturating_sub(1)
                ),
            };
            println!(
                "audit chain verified: {part}, head {}, {} checkpoints{}{}{}",
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
                },
                programs_checked(&report)
            );
            Ok(())
        }
        Err(broken) => Err(broken.into()),
    }
}

/// The signed programs of `dir`: its `*.ir` files (as `eyeflow compile` names them) and
/// `*.bin` files (as a node keeps them in `DATA_DIR/programs`).
fn read_programs(dir: &Path) -> anyhow::Result<Programs> {
    let mut programs = Programs::new();
    let listed = std::fs::read_dir(dir)
        .with_context(|| format!("--programs {}: cannot list it", dir.display()))?;
    for entry in listed {
        let path = entry
            .with_context(|| format!("--programs {}: cannot list it", dir.display()))?
            .path();
        let program_file = path
            .extension()
            .is_some_and(|ext| ext == "ir" || ext == "bin");
        if !program_file || !path.is_file() {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        programs
            .add(&path.display().to_string(), &bytes)
            .map_err(|reason| anyhow::anyhow!("--programs: {reason}"))?;
    }
    if programs.is_empty() {
        anyhow::bail!(
            "--programs {}: no signed program in it (`*.ir` from `eyeflow compile`, or a node's `programs/*.bin`)",
            dir.display()
        );
    }
    Ok(programs)
}

/// What the report says of the programs checked, for the verdict line.
fn programs_checked(report: &VerifyReport) -> String {
    report.programs.map_or_else(String::new, |programs| {
        format!(
            "; {} entries ran a given signed program, {} name no program hash (operator entries, or written before hashes were recorded)",
            programs.checked, programs.unchecked
        )
    })
}

fn verify_file(
    file: &Path,
    pubkey: &Path,
    checkpoints: &[PathBuf],
    programs: Option<Programs>,
) -> CliResult {
    use eyeflow_actors::chain::FileError;
    let key = keys::read_verifying_key(pubkey)?;
    let published = checkpoints
        .iter()
        .map(|file| read_checkpoint(file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let open = || std::fs::File::open(file).map(std::io::BufReader::new);
    let report = match eyeflow_actors::chain::verify_file(open, &key, &published, programs) {
        Ok(report) => report,
        Err(FileError::Io(e)) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot read {}", file.display()))
                .into());
        }
        Err(e) => {
            return Err(Failure {
                code: Code::AuditBroken,
                error: anyhow::Error::new(e).context(format!("{}", file.display())),
            });
        }
    };
    let chain = &report.chain;
    let start = match chain.first.checked_sub(1) {
        None => String::new(),
        Some(before) => format!(
            "; verification started from the hash of entry {before} as the file states it ({})",
            if chain.anchored {
                "confirmed by a signed checkpoint"
            } else {
                "no checkpoint of that entry in the file"
            }
        ),
    };
    println!(
        "audit file verified: entries {} to {} ({} entries), head {}, {} checkpoints (signatures checked with key {}){start}{}{}",
        chain.first,
        chain.entries.saturating_sub(1),
        chain.entries - chain.first,
        hex::encode(chain.head_hash),
        chain.checkpoints,
        report.header.key_id,
        if published.is_empty() {
            ""
        } else {
            " (reaches what was kept elsewhere)"
        },
        programs_checked(chain)
    );
    Ok(())
}

fn export(
    data_dir: &DataDir,
    from: u64,
    to: Option<u64>,
    pubkey: Option<&Path>,
    output: &Path,
) -> CliResult {
    let path = data_dir.path()?;
    let pubkey = pubkey.map_or_else(|| path.join("node.pub"), Path::to_path_buf);
    if !pubkey.exists() {
        return Err(anyhow::anyhow!(
            "no node key at {}: give --pubkey, the public half of the node's audit key (`[node] audit_key`)",
            pubkey.display()
        )
        .into());
    }
    let key_id = keys::key_id(&keys::read_verifying_key(&pubkey)?);
    let copy = store_copy(path)?;
    let store = eyeflow_runtime::store::EmbeddedStore::open(copy.path())
        .with_context(|| format!("cannot open the store of {}", path.display()))?;
    let audit = eyeflow_runtime::audit::FjallAudit::open(store, Default::default())?;
    let folder = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // Written aside and renamed: a failed export leaves no partial file behind.
    let mut file = tempfile::NamedTempFile::new_in(folder)
        .with_context(|| format!("cannot write in {}", folder.display()))?;
    let header = {
        let mut out = std::io::BufWriter::new(file.as_file_mut());
        let header = eyeflow_runtime::audit::export(&audit, from, to, &key_id, &mut out)?;
        std::io::Write::flush(&mut out)
            .with_context(|| format!("cannot write {}", output.display()))?;
        header
    };
    file.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", output.display()))?;
    file.persist(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "exported entries {} to {} ({} entries, node key {key_id}) to {}",
        header.from,
        header.from + header.entries - 1,
        header.entries,
        output.display()
    );
    let last = header.from + header.entries - 1;
    let newest = audit
        .checkpoints_from(header.from.saturating_sub(1), usize::MAX)?
        .into_iter()
        .take_while(|c| c.index <= last)
        .last();
    if let Some(checkpoint) = newest {
        release_exported(path, checkpoint.index)?;
    }
    Ok(())
}

/// Records in the data directory's own store (not the copy exported from) that the
/// checkpoint of entry `index` is in an exported file, so that audit compaction may delete
/// what it covers. A running node holds the store: then nothing is recorded, and the
/// operator is told how to release a checkpoint through the node.
fn release_exported(data_dir: &Path, index: u64) -> CliResult {
    use eyeflow_runtime::store::EmbeddedStore;
    let store = match EmbeddedStore::open(data_dir) {
        Ok(store) => store,
        Err(eyeflow_runtime::Error::Locked { .. }) => {
            println!(
                "a running node holds {}: the checkpoint of entry {index} is not recorded as \
                 released (audit compaction releases what `eyeflow audit checkpoint` fetches \
                 from the node, or what an export of a stopped node covers)",
                data_dir.display()
            );
            return Ok(());
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot open the store of {}", data_dir.display()))
                .into());
        }
    };
    eyeflow_runtime::audit::FjallAudit::open(store, Default::default())?
        .release(index, eyeflow_runtime::audit::Release::Export)?;
    println!(
        "checkpoint of entry {index} recorded as released: audit compaction may delete the entries it covers once they are older than [retention] audit_secs"
    );
    Ok(())
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
