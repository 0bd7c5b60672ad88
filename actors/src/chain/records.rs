//! The audit chain as records, one line of canonical JSON each: what `eyeflow audit export`
//! writes (a [`Header`] line, then entries and checkpoints), what the Kafka audit topic
//! carries (one [`Record`] per message), and [`verify_file`], which checks such a file with
//! no store and no node. The format is specified in `docs/runtime.md` ("Offline audit").

use std::io::{BufRead, Write};

use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};

use super::{AuditBroken, Checkpoint, Programs, VerifyReport, Verifier, canonical_json};

/// The `format` a [`Header`] names.
pub const FORMAT: &str = "eyeflow-audit/v1";

/// The first line of a file: what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Id of the node's audit key (`eyeflow_ir::keys::key_id`), which signed its checkpoints.
    pub key_id: String,
    /// Index of the first entry.
    pub from: u64,
    /// How many entries follow (indexes `from` to `from + entries - 1`).
    pub entries: u64,
}

/// One entry with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// Index from 0.
    pub index: u64,
    /// Hash of the entry before it (32 zero bytes for entry 0).
    pub previous: [u8; 32],
    /// Its hash: `SHA-256(previous ‖ body)`.
    pub hash: [u8; 32],
    /// The entry's canonical bytes (`canonical(entry)`), exactly as chained.
    pub body: Vec<u8>,
}

/// A signed checkpoint and the node that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// The node (informative: the signature is what counts; in an export, the node id of the
    /// entry it covers).
    pub node_id: String,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

/// One line of an audit file, or one message of the audit topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A file's first line.
    Header(Header),
    /// An entry.
    Entry(EntryRecord),
    /// A signed checkpoint.
    Checkpoint(CheckpointRecord),
}

impl Record {
    /// The record's line (without its line end): the canonical JSON of an object whose
    /// `kind` is `header`, `entry` or `checkpoint`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Header(header) => canonical_json(&serde_json::json!({
                "kind": "header",
                "format": FORMAT,
                "key_id": header.key_id,
                "from": header.from,
                "entries": header.entries,
            })),
            Self::Entry(entry) => {
                // The body is canonical JSON already: embedded as it is, so that its bytes
                // are exactly those chained (keys in order: entry, hash, index, kind,
                // previous).
                let mut line = Vec::with_capacity(entry.body.len() + 200);
                line.extend_from_slice(b"{\"entry\":");
                line.extend_from_slice(&entry.body);
                line.extend_from_slice(b",\"hash\":\"");
                line.extend_from_slice(hex::encode(entry.hash).as_bytes());
                line.extend_from_slice(b"\",\"index\":");
                line.extend_from_slice(entry.index.to_string().as_bytes());
                line.extend_from_slice(b",\"kind\":\"entry\",\"previous\":\"");
                line.extend_from_slice(hex::encode(entry.previous).as_bytes());
                line.extend_from_slice(b"\"}");
                line
            }
            Self::Checkpoint(record) => {
                let mut value = record.checkpoint.to_json(&record.node_id);
                if let Some(fields) = value.as_object_mut() {
                    fields.insert("kind".to_owned(), Value::from("checkpoint"));
                }
                canonical_json(&value)
            }
        }
    }

    /// Reads a line of [`Record::encode`]; what is wrong, in words. A line that is not
    /// exactly the canonical form of its record (a changed byte anywhere) is refused.
    pub fn decode(line: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| format!("not a JSON record: {e}"))?;
        if canonical_json(&value) != line {
            return Err("the record is not in canonical form".to_owned());
        }
        let Some(fields) = value.as_object() else {
            return Err("the record is not a JSON object".to_owned());
        };
        let exactly = |keys: &[&str]| {
            if fields.len() == keys.len() && keys.iter().all(|k| fields.contains_key(*k)) {
                Ok(())
            } else {
                Err(format!(
                    "a {} record has exactly the fields {}",
                    text(fields, "kind").unwrap_or_default(),
                    keys.join(", ")
                ))
            }
        };
        match text(fields, "kind")? {
            "header" => {
                exactly(&["kind", "format", "key_id", "from", "entries"])?;
                let format = text(fields, "format")?;
                if format != FORMAT {
                    return Err(format!("format `{format}` is not `{FORMAT}`"));
                }
                Ok(Self::Header(Header {
                    key_id: text(fields, "key_id")?.to_owned(),
                    from: number(fields, "from")?,
                    entries: number(fields, "entries")?,
                }))
            }
            "entry" => {
                exactly(&["kind", "entry", "hash", "index", "previous"])?;
                let entry = fields
                    .get("entry")
                    .filter(|e| e.is_object())
                    .ok_or("field `entry`: expected an object")?;
                Ok(Self::Entry(EntryRecord {
                    index: number(fields, "index")?,
                    previous: hash(fields, "previous")?,
                    hash: hash(fields, "hash")?,
                    body: canonical_json(entry),
                }))
            }
            "checkpoint" => {
                exactly(&[
                    "kind",
                    "node_id",
                    "index",
                    "hash",
                    "time_ms",
                    "signature",
                ])?;
                Ok(Self::Checkpoint(CheckpointRecord {
                    node_id: text(fields, "node_id")?.to_owned(),
                    checkpoint: Checkpoint::from_json(&value)?,
                }))
            }
            other => Err(format!("unknown record kind `{other}`")),
        }
    }
}

fn text<'a>(fields: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    fields
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("field `{field}`: expected a string"))
}

fn number(fields: &Map<String, Value>, field: &str) -> Result<u64, String> {
    fields
        .get(field)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("field `{field}`: expected an unsigned integer"))
}

fn hash(fields: &Map<String, Value>, field: &str) -> Result<[u8; 32], String> {
    text(fields, field)
        .ok()
        .and_then(|text| hex::decode(text).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("field `{field}`: expected 32 bytes in lowercase hex"))
}

/// Writes `record` as one line (its [`Record::encode`] and `\n`).
pub fn write_record(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    let mut line = record.encode();
    line.push(b'\n');
    out.write_all(&line)
}

/// Why a file did not verify.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read the audit file: {0}")]
    Io(#[from] std::io::Error),
    /// Its first line is not a header.
    #[error("not an audit file ({FORMAT}): line 1: {0}")]
    Header(String),
    /// The header names another key than the one given.
    #[error(
        "the file's checkpoints are signed by the node key {file}, but the given key is {given}"
    )]
    WrongKey {
        /// The header's key id.
        file: String,
        /// The given key's id.
        given: String,
    },
    /// The first entry that does not verify.
    #[error(transparent)]
    Broken(#[from] AuditBroken),
}

/// A file that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Its header.
    pub header: Header,
    /// The chain of its entries (from `header.from`).
    pub chain: VerifyReport,
}

/// The lines of a file, numbered from 1, each with whether it ended with `\n`.
struct Lines<R> {
    reader: R,
    number: u64,
}

impl<R: BufRead> Lines<R> {
    fn next(&mut self) -> std::io::Result<Option<(u64, Vec<u8>, bool)>> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        self.number += 1;
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        Ok(Some((self.number, line, complete)))
    }
}

/// Verifies an audit file read (twice: checkpoints first, then the chain) from what `open`
/// returns, with the node's key `key`, also against `published` checkpoints kept elsewhere
/// and, when given, the signed programs its entries ran. Names the first entry that does
/// not verify: a changed byte, a deleted, inserted, repeated or misplaced record, a fork
/// (two entries with one index, or a hash a signed checkpoint contradicts), a file cut
/// short. A file that starts past entry 0 is verified from the hash its first entry links
/// to ([`VerifyReport::anchored`] says whether a checkpoint confirmed it).
pub fn verify_file<R: BufRead>(
    mut open: impl FnMut() -> std::io::Result<R>,
    key: &VerifyingKey,
    published: &[Checkpoint],
    programs: Option<Programs>,
) -> Result<FileReport, FileError> {
    let mut lines = Lines {
        reader: open()?,
        number: 0,
    };
    let header = match lines.next()? {
        None => return Err(FileError::Header("the file is empty".to_owned())),
        Some((_, line, _)) => match Record::decode(&line) {
            Ok(Record::Header(header)) => header,
            Ok(_) => return Err(FileError::Header("the first record is not a header".into())),
            Err(e) => return Err(FileError::Header(e)),
        },
    };
    let given = eyeflow_ir::keys::key_id(key);
    if header.key_id != given {
        return Err(FileError::WrongKey {
            file: header.key_id,
            given,
        });
    }
    let broken = |index: u64, reason: String| FileError::Broken(AuditBroken { index, reason });
    let mut checkpoints = published.to_vec();
    let mut start = None;
    while let Some((_, line, _)) = lines.next()? {
        match Record::decode(&line) {
            Ok(Record::Checkpoint(record)) => checkpoints.push(record.checkpoint),
            Ok(Record::Entry(entry)) if entry.index == header.from && start.is_none() => {
                start = Some(entry.previous);
            }
            _ => {}
        }
    }
    let previous = match (header.from, start) {
        (0, _) => [0; 32],
        (_, Some(previous)) => previous,
        (from, None) => {
            return Err(broken(
                from,
                format!("entry {from}, the first the header announces, is not in the file"),
            ));
        }
    };
    let mut verifier = Verifier::resume(checkpoints, Some(key), header.from, previous)?;
    if let Some(programs) = programs {
        verifier = verifier.with_programs(programs);
    }
    let end = header.from.saturating_add(header.entries);
    let mut lines = Lines {
        reader: open()?,
        number: 0,
    };
    lines.next()?;
    let mut last: Option<(u64, [u8; 32])> = None;
    while let Some((n, line, complete)) = lines.next()? {
        let expected = verifier.expected();
        if !complete {
            return Err(broken(
                expected,
                format!("line {n} is cut short (no line end): the file is truncated"),
            ));
        }
        let entry = match Record::decode(&line) {
            Ok(Record::Entry(entry)) => entry,
            Ok(Record::Checkpoint(_)) => continue,
            Ok(Record::Header(_)) => {
                return Err(broken(expected, format!("line {n}: a second header")));
            }
            Err(e) => return Err(broken(expected, format!("line {n}: {e}"))),
        };
        let index = entry.index;
        if let Some((last_index, last_hash)) = last
            && index == last_index
        {
            return Err(broken(
                index,
                if entry.hash == last_hash {
                    format!("line {n}: entry {index} is repeated (an inserted copy)")
                } else {
                    format!("line {n}: fork: a second, different entry with index {index}")
                },
            ));
        }
        if index < expected {
            return Err(broken(
                index,
                format!(
                    "line {n}: entry {index} where entry {expected} is due (an inserted record, \
                     a fork, or records out of order)"
                ),
            ));
        }
        if index >= end {
            return Err(broken(
                index,
                format!(
                    "line {n}: entry {index} is past the last one the header announces ({})",
                    end.saturating_sub(1)
                ),
            ));
        }
        if index > expected {
            return Err(broken(
                expected,
                format!(
                    "entry {expected} is missing: line {n} holds entry {index} (a deleted \
                     record, or records out of order)"
                ),
            ));
        }
        verifier
            .check(index, &entry.previous, &entry.hash, &entry.body)
            .map_err(|b| broken(b.index, format!("line {n}: {}", b.reason)))?;
        last = Some((index, entry.hash));
    }
    let expected = verifier.expected();
    if expected < end {
        return Err(broken(
            expected,
            format!(
                "file truncated: it ends before entry {expected}, but its header announces entries up to {}",
                end - 1
            ),
        ));
    }
    Ok(FileReport {
        header,
        chain: verifier.finish()?,
    })
}
