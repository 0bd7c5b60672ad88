//! `eyeflow keys`: generate a signing key pair, trust or revoke a publisher key in a data
//! directory's keyring or on a running node.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use eyeflow_ir::keys;

use super::options::{CliResult, OnNode, Target, path_segment};

/// `eyeflow keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate a key pair: NAME.key (secret, mode 0600) and NAME.pub.
    Gen {
        /// Path and base name of the two files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Trust a publisher's public key (NAME.pub) in a data directory's keyring, or on a
    /// running node (`--node`, or the node running on the data directory).
    Trust {
        /// The public key file.
        file: PathBuf,
        #[command(flatten)]
        on: OnNode,
    },
    /// Revoke a key id: its programs and packages are refused, and on a running node its
    /// deployed programs take no new event, at once.
    Revoke {
        /// The key id (16 hex characters).
        id: String,
        #[command(flatten)]
        on: OnNode,
    },
}

/// Runs a keys command.
pub(crate) fn run(command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Gen { out } => generate(&out),
        KeysCommand::Trust { file, on } => trust(&file, &on),
        KeysCommand::Revoke { id, on } => revoke(&id, &on),
    }
}

fn generate(out: &Path) -> CliResult {
    let key = keys::generate()?;
    let (secret, public) = keys::write_keypair(out, &key)?;
    println!("key id {}", keys::key_id(&key.verifying_key()));
    println!("secret key: {}", secret.display());
    println!("public key: {}", public.display());
    Ok(())
}

/// `eyeflow keys trust FILE.pub`: only a public key file; a secret one is refused (here,
/// so that it never leaves this machine), never read for its public half.
fn trust(file: &Path, on: &OnNode) -> CliResult {
    let key = keys::read_verifying_key(file)?;
    let id = match on.target()? {
        Target::Store(store) => store.trust_key(&key)?,
        Target::Node(node) => {
            let text =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            node.call(
                reqwest::Method::POST,
                "/api/keys",
                Some(("text/plain", text)),
                &[],
            )?;
            keys::key_id(&key)
        }
    };
    println!("trusted key {id} ({})", file.display());
    Ok(())
}

/// `eyeflow keys revoke ID`.
fn revoke(id: &str, on: &OnNode) -> CliResult {
    match on.target()? {
        Target::Store(store) => {
            if !store.revoke_key(id)? {
                return Err(anyhow!("key {id} is not in the keyring").into());
            }
        }
        Target::Node(node) => {
            node.call(
                reqwest::Method::DELETE,
                &format!("/api/keys/{}", path_segment(id)),
                None,
                &[],
            )?;
        }
    }
    println!("revoked key {id}");
    Ok(())
}
