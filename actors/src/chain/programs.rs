//! [`Programs`]: the signed programs an audit chain's entries are checked against, found by
//! the SHA-256 of their exact bytes (the files `eyeflow compile` writes, or a node's
//! `programs/<sha256>.bin`).

use std::collections::HashMap;

use eyeflow_ir::Limits;
use sha2::{Digest, Sha256};

use crate::ports::AuditEntry;

/// Signed programs by the hex SHA-256 of their bytes.
#[derive(Debug, Clone, Default)]
pub struct Programs {
    by_sha256: HashMap<String, Known>,
}

#[derive(Debug, Clone)]
struct Known {
    id: String,
    version: String,
    file: String,
}

impl Programs {
    /// No programs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the program file named `file` holding `bytes`; what is wrong when they are not
    /// an LLM-IR program (its signature is not checked here: a node ran only signed
    /// programs, so an entry can only match the bytes it verified).
    pub fn add(&mut self, file: &str, bytes: &[u8]) -> Result<(), String> {
        let program = eyeflow_ir::decode(bytes, &Limits::default())
            .map_err(|e| format!("{file} is not an LLM-IR program: {e}"))?;
        self.by_sha256.insert(
            hex::encode(Sha256::digest(bytes)),
            Known {
                id: program.program_id,
                version: program.version,
                file: file.to_owned(),
            },
        );
        Ok(())
    }

    /// How many distinct programs.
    pub fn len(&self) -> usize {
        self.by_sha256.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_sha256.is_empty()
    }

    /// Checks `entry`'s program hash: `Ok(true)` when it is a given program's of the same
    /// id and version, `Ok(false)` when the entry has none (an operator entry, or one written
    /// before the hash was recorded), else what is wrong.
    pub fn check(&self, entry: &AuditEntry) -> Result<bool, String> {
        let Some(sha256) = &entry.program_sha256 else {
            return Ok(false);
        };
        let named = format!("{}@{}", entry.program_id, entry.program_version);
        match self.by_sha256.get(sha256) {
            None => Err(format!(
                "program {named} with sha256 {sha256} matches none of the {} signed programs given",
                self.len()
            )),
            Some(known)
                if known.id != entry.program_id || known.version != entry.program_version =>
            {
                Err(format!(
                    "program sha256 {sha256} is {}, program {}@{}, but the entry names {named}",
                    known.file, known.id, known.version
                ))
            }
            Some(_) => Ok(true),
        }
    }
}
