//! The audit chain as records, one line of canonical JSON each: what `eyeflow audit export`
//! writes (a [`Header`] line, then entries and checkpoints), what the Kafka audit topic
//! carries (one [`Record`] per message), and [`verify_file`], which checks such a file with
//! no store and no node. The format is specified in `docs/runtime.md` ("Offline audit").

use std::io::{BufRead, Write};

use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};

use super::{AuditBroken, Checkpoint, Programs, Verifier, VerifyReport, canonical_json};

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
                exactly(&["kind", "node_id", "index", "hash", "time_ms", "signature"])?;
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
                expected,
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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::chain::{canonical, chain_hash};
    use crate::ports::AuditEntry;

    const RULE: &str = r#"
id: plain
version: 1.0.0
triggers:
  - {kind: webhook, source: plain}
instructions:
  - {id: sum, op: EVAL, expression: "event.a + 1", next: done}
  - {id: done, op: RETURN, expression: "sum"}
"#;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    fn program() -> Vec<u8> {
        let options = eyeflow_compiler::CompileOptions {
            source_name: "plain.yaml".into(),
            compiled_by: "tests".into(),
            compiled_at: 1_700_000_000,
        };
        let program = eyeflow_compiler::compile_and_sign(RULE, &options, &key()).expect("compiles");
        eyeflow_ir::encode(&program)
    }

    fn sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    fn entry(i: u64, program_sha256: &str) -> AuditEntry {
        AuditEntry {
            node_id: "node-1".into(),
            execution_id: format!("x{:016}", i / 2),
            program_id: "plain".into(),
            program_version: "1.0.0".into(),
            program_sha256: Some(program_sha256.to_owned()),
            instruction_id: if i.is_multiple_of(2) { "sum" } else { "done" }.into(),
            opcode: "EVAL".into(),
            input_digest: "ab".repeat(32),
            output_digest: "cd".repeat(32),
            outcome: "done".into(),
            fallback: None,
            started_ms: 1000 + i,
            finished_ms: 2000 + i,
        }
    }

    /// The records of a chain of `n` entries, a signed checkpoint after every tenth.
    fn chain(n: u64, program_sha256: &str) -> Vec<Record> {
        let mut records = Vec::new();
        let mut previous = [0; 32];
        for index in 0..n {
            let body = canonical(&entry(index, program_sha256));
            let hash = chain_hash(&previous, &body);
            records.push(Record::Entry(EntryRecord {
                index,
                previous,
                hash,
                body,
            }));
            if (index + 1).is_multiple_of(10) {
                records.push(Record::Checkpoint(CheckpointRecord {
                    node_id: "node-1".into(),
                    checkpoint: Checkpoint::sign(index, hash, 5_000 + index, &key()),
                }));
            }
            previous = hash;
        }
        records
    }

    /// The file of `records` from entry `from` (with the checkpoint of entry `from - 1`), as
    /// lines without their line ends.
    fn file(records: &[Record], from: u64) -> Vec<Vec<u8>> {
        let kept: Vec<&Record> = records
            .iter()
            .filter(|r| match r {
                Record::Entry(e) => e.index >= from,
                Record::Checkpoint(c) => c.checkpoint.index + 1 >= from,
                Record::Header(_) => false,
            })
            .collect();
        let entries = kept
            .iter()
            .filter(|r| matches!(r, Record::Entry(_)))
            .count();
        let header = Record::Header(Header {
            key_id: eyeflow_ir::keys::key_id(&key().verifying_key()),
            from,
            entries: entries as u64,
        });
        std::iter::once(&header)
            .chain(kept)
            .map(Record::encode)
            .collect()
    }

    fn joined(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line);
            bytes.push(b'\n');
        }
        bytes
    }

    fn verify(bytes: &[u8], programs: Option<Programs>) -> Result<FileReport, FileError> {
        verify_file(
            || Ok(Cursor::new(bytes)),
            &key().verifying_key(),
            &[],
            programs,
        )
    }

    /// The entry a file that must not verify is named broken at, and why.
    fn broken(bytes: &[u8]) -> (u64, String) {
        match verify(bytes, None) {
            Err(FileError::Broken(broken)) => (broken.index, broken.reason),
            other => panic!("expected a broken entry, got {other:?}"),
        }
    }

    /// The position in `lines` of entry `index`'s record.
    /// `entry` as record `index`, chained after the entry whose hash is `previous`.
    fn chained(index: u64, entry: &AuditEntry, previous: [u8; 32]) -> EntryRecord {
        let body = canonical(entry);
        EntryRecord {
            index,
            previous,
            hash: chain_hash(&previous, &body),
            body,
        }
    }

    /// A forged entry `index` (its outcome changed to `skipped`) chained after `previous`.
    fn skipped(index: u64, previous: [u8; 32]) -> EntryRecord {
        let mut forged = entry(index, &"ef".repeat(32));
        forged.outcome = "skipped".into();
        chained(index, &forged, previous)
    }

    fn line_of(lines: &[Vec<u8>], index: u64) -> usize {
        lines
            .iter()
            .position(
                |line| matches!(Record::decode(line), Ok(Record::Entry(e)) if e.index == index),
            )
            .expect("the entry is in the file")
    }

    #[test]
    fn records_read_back_as_written() {
        for record in chain(20, &"ef".repeat(32)) {
            assert_eq!(Record::decode(&record.encode()), Ok(record.clone()));
        }
        let header = Record::Header(Header {
            key_id: "0123456789abcdef".into(),
            from: 7,
            entries: 3,
        });
        assert_eq!(Record::decode(&header.encode()), Ok(header));
    }

    #[test]
    fn an_untouched_file_verifies_and_one_starting_later_says_from_where() {
        let records = chain(100, &"ef".repeat(32));
        let report = verify(&joined(&file(&records, 0)), None).expect("verifies");
        assert_eq!((report.chain.first, report.chain.entries), (0, 100));
        assert_eq!(report.chain.checkpoints, 10);
        assert!(report.chain.signatures_checked);

        let report = verify(&joined(&file(&records, 20)), None).expect("verifies");
        assert_eq!((report.chain.first, report.chain.entries), (20, 100));
        assert!(
            report.chain.anchored,
            "the checkpoint of entry 19 anchors it"
        );
        let report = verify(&joined(&file(&records, 25)), None).expect("verifies");
        assert_eq!(report.chain.first, 25);
        assert!(!report.chain.anchored, "no checkpoint of entry 24");
    }

    #[test]
    fn every_changed_byte_of_an_entry_is_named() {
        let lines = file(&chain(60, &"ef".repeat(32)), 0);
        let at = line_of(&lines, 37);
        for offset in 0..lines[at].len() {
            let mut edited = lines.clone();
            edited[at][offset] ^= 1;
            let (index, reason) = broken(&joined(&edited));
            let line = format!("line {}", at + 1);
            assert!(reason.contains(&line), "offset {offset}: {reason}");
            // A digit of the index changed to the one before names the fork it makes.
            assert!(
                index == 37 || (index == 36 && reason.contains("fork")),
                "offset {offset}: entry {index}: {reason}"
            );
        }
    }

    #[test]
    fn a_deleted_inserted_or_reordered_entry_is_named() {
        let records = chain(60, &"ef".repeat(32));
        let lines = file(&records, 0);
        let at = line_of(&lines, 37);

        let mut deleted = lines.clone();
        deleted.remove(at);
        let (index, reason) = broken(&joined(&deleted));
        assert_eq!(index, 37, "{reason}");
        assert!(reason.contains("missing"), "{reason}");

        let mut reordered = lines.clone();
        reordered.swap(at, at + 1);
        let (index, reason) = broken(&joined(&reordered));
        assert_eq!(index, 37, "{reason}");
        assert!(reason.contains("out of order"), "{reason}");

        // A copy of an earlier record, and a new record chained after entry 37.
        let mut copied = lines.clone();
        copied.insert(at + 1, lines[line_of(&lines, 5)].clone());
        let (index, reason) = broken(&joined(&copied));
        assert_eq!(index, 38, "{reason}");
        assert!(reason.contains("entry 5 where entry 38 is due"), "{reason}");
        let Ok(Record::Entry(e37)) = Record::decode(&lines[at]) else {
            panic!("entry 37")
        };
        let inserted = Record::Entry(skipped(38, e37.hash));
        let mut inserted_lines = lines.clone();
        inserted_lines.insert(at + 1, inserted.encode());
        let (index, reason) = broken(&joined(&inserted_lines));
        assert_eq!(index, 38, "{reason}");
        assert!(reason.contains("fork"), "{reason}");

        // A record chained after the last one, past what the header announces.
        let Ok(Record::Entry(e59)) = Record::decode(&lines[line_of(&lines, 59)]) else {
            panic!("entry 59")
        };
        let body = canonical(&entry(60, &"ef".repeat(32)));
        let next = Record::Entry(EntryRecord {
            index: 60,
            previous: e59.hash,
            hash: chain_hash(&e59.hash, &body),
            body,
        });
        let mut appended = lines.clone();
        appended.push(next.encode());
        let (index, reason) = broken(&joined(&appended));
        assert_eq!(index, 60, "{reason}");
        assert!(reason.contains("past the last one"), "{reason}");
    }

    #[test]
    fn a_truncated_file_is_named_where_it_ends() {
        let lines = file(&chain(60, &"ef".repeat(32)), 0);
        let at = line_of(&lines, 55);
        let (index, reason) = broken(&joined(&lines[..=at]));
        assert_eq!(index, 56, "{reason}");
        assert!(reason.contains("truncated"), "{reason}");

        let bytes = joined(&lines);
        let cut = joined(&lines[..at]).len() + 40;
        let (index, reason) = broken(&bytes[..cut]);
        assert_eq!(index, 55, "{reason}");
        assert!(reason.contains("truncated"), "{reason}");

        // Cut with its header rewritten to match: the checkpoints past the cut were cut too,
        // but one kept elsewhere still shows it.
        let Ok(Record::Entry(e59)) = Record::decode(&lines[line_of(&lines, 59)]) else {
            panic!("entry 59")
        };
        let mut rewritten = lines[..=at].to_vec();
        rewritten[0] = Record::Header(Header {
            key_id: eyeflow_ir::keys::key_id(&key().verifying_key()),
            from: 0,
            entries: 56,
        })
        .encode();
        let bytes = joined(&rewritten);
        assert!(verify(&bytes, None).is_ok(), "no record says more");
        let kept = Checkpoint::sign(59, e59.hash, 9_000, &key());
        let Err(FileError::Broken(broken)) = verify_file(
            || Ok(Cursor::new(&bytes)),
            &key().verifying_key(),
            &[kept],
            None,
        ) else {
            panic!("a checkpoint kept elsewhere shows the cut")
        };
        assert_eq!(broken.index, 56, "{broken}");
    }

    #[test]
    fn a_fork_is_named() {
        let records = chain(60, &"ef".repeat(32));
        let lines = file(&records, 0);
        let at = line_of(&lines, 37);

        // Two different entries with one index.
        let Ok(Record::Entry(e37)) = Record::decode(&lines[at]) else {
            panic!("entry 37")
        };
        let twin = Record::Entry(skipped(37, e37.previous));
        let mut twins = lines.clone();
        twins.insert(at + 1, twin.encode());
        let (index, reason) = broken(&joined(&twins));
        assert_eq!(index, 37, "{reason}");
        assert!(reason.contains("fork"), "{reason}");

        // A chain rewritten from entry 37 on, every link recomputed: the signed checkpoint
        // of entry 39 tells.
        let mut previous = e37.previous;
        let rewritten: Vec<Vec<u8>> = lines
            .iter()
            .map(|line| match Record::decode(line) {
                Ok(Record::Entry(e)) if e.index >= 37 => {
                    let record = if e.index == 37 {
                        skipped(e.index, previous)
                    } else {
                        chained(e.index, &entry(e.index, &"ef".repeat(32)), previous)
                    };
                    let hash = record.hash;
                    previous = hash;
                    Record::Entry(record).encode()
                }
                _ => line.clone(),
            })
            .collect();
        let (index, reason) = broken(&joined(&rewritten));
        assert_eq!(index, 39, "{reason}");
        assert!(reason.contains("signed checkpoint"), "{reason}");
    }

    #[test]
    fn another_key_or_no_header_is_refused() {
        let bytes = joined(&file(&chain(20, &"ef".repeat(32)), 0));
        let other = SigningKey::from_bytes(&[6; 32]);
        let verdict = verify_file(
            || Ok(Cursor::new(&bytes)),
            &other.verifying_key(),
            &[],
            None,
        );
        assert!(
            matches!(verdict, Err(FileError::WrongKey { .. })),
            "{verdict:?}"
        );
        let without_header = &bytes[bytes.iter().position(|b| *b == b'\n').expect("line") + 1..];
        assert!(matches!(
            verify(without_header, None),
            Err(FileError::Header(_))
        ));
    }

    #[test]
    fn program_hashes_are_checked_against_the_signed_programs() {
        let bytes = program();
        let mut programs = Programs::new();
        programs.add("plain.ir", &bytes).expect("a program");
        let good = joined(&file(&chain(30, &sha256(&bytes)), 0));
        let report = verify(&good, Some(programs.clone())).expect("verifies");
        assert_eq!(
            report.chain.programs,
            Some(crate::chain::ProgramsReport {
                checked: 30,
                unchecked: 0
            })
        );

        let unknown = joined(&file(&chain(30, &"ef".repeat(32)), 0));
        let Err(FileError::Broken(broken)) = verify(&unknown, Some(programs.clone())) else {
            panic!("an unknown program passed")
        };
        assert_eq!(broken.index, 0, "{broken}");
        assert!(broken.reason.contains("matches none"), "{broken}");

        // The hash of another version of the program.
        let mut other = Programs::new();
        let mut program =
            eyeflow_ir::decode(&bytes, &eyeflow_ir::Limits::default()).expect("decodes");
        program.version = "1.0.1".into();
        eyeflow_ir::keys::sign(&mut program, &key());
        let other_bytes = eyeflow_ir::encode(&program);
        other
            .add("plain-1.0.1.ir", &other_bytes)
            .expect("a program");
        let mismatched = joined(&file(&chain(30, &sha256(&other_bytes)), 0));
        let Err(FileError::Broken(broken)) = verify(&mismatched, Some(other)) else {
            panic!("a program of another version passed")
        };
        assert_eq!(broken.index, 0, "{broken}");
        assert!(broken.reason.contains("plain@1.0.1"), "{broken}");
        assert!(programs.add("notes.ir", b"\xff\xff\xff").is_err());
    }
}
