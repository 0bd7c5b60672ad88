//! Compact records: the binary forms (protobuf, as the IR) of the steps one journal write
//! carries, stored as one `journal-steps` record (the values an instruction produced or was
//! given stay JSON inside), and of an audit entry as the `audit` keyspace stores it. Records
//! written as JSON by earlier versions still read.
//!
//! ## Steps
//!
//! A record is the byte [`STEPS_V1`], the number of steps in it (a protobuf varint), then a
//! protobuf `StepBatch` (below). Its key is `execution_id/seq` of its first step; the
//! execution id is not repeated inside. A record starting with `{` is one JSON
//! `StepRecord`, as written before this format.
//!
//! ```text
//! message StepBatch { repeated Step steps = 1; }
//! message Step {
//!   uint64 seq = 1;            string instruction_id = 2;   uint32 attempt = 3;
//!   Kind kind = 4;             bytes value = 5;             // JSON: done's output, started's input
//!   string text = 6;           // failed's class, started's and ambiguous' idempotency key
//!   string message = 7;        // failed's message
//!   uint32 fallback = 8;       // 0 none, then retry, fallback_value, fallback_model, skip,
//!                              // abort, reissued, read_back (1..7)
//!   uint64 started_ms = 9;     uint64 took_ms = 10;         // finished = started + took
//! }
//! enum Kind { DONE = 0; SKIPPED = 1; FAILED = 2; AWAITING_APPROVAL = 3; STARTED = 4; AMBIGUOUS = 5; }
//! ```
//!
//! ## Audit entries
//!
//! The entries one append writes (those of one journal write, say) are stored together as
//! one *run*: the byte [`AUDIT_RUN_V2`], the hash of the entry before the run's first (32
//! bytes), then a protobuf `Run`. An entry's previous hash is the item before it. The last
//! item holds its entry's whole hash (32 bytes), which the whole run chains to; the others
//! hold only the first [`TAG_BYTES`] bytes of theirs, a tag: a reader recomputes their
//! hashes from the run's first hash and the entries, and the tag names the first entry
//! changed since it was written. The fields an entry shares with the one before it in the
//! run (node, execution, program id, version and hash) are left out and named in `same`, a
//! bit per field (bit 0: node_id … bit 4: program_sha256); the first item names none. A
//! digest (input or output) equal to one stored earlier in the same record is stored as
//! that one's position instead (`earlier`: 1 for the first digest stored whole, in entry
//! order, input before output).
//!
//! Runs written before 2026-12-02 (byte [`AUDIT_RUN_V1`]) hold every item's whole hash and
//! no digest by position; they still read.
//!
//! Earlier versions stored one entry per record (see `crate::audit`): its previous and own
//! hashes, then the byte [`AUDIT_V1`] and an `Entry`, or, earlier still, the entry's
//! canonical JSON (starting with `{`). Both still read. The chain's hashes are always over
//! the canonical JSON (`eyeflow_actors::chain::canonical`), which a binary entry is turned
//! back into to be verified or exported: the binary form holds every field exactly.
//!
//! ```text
//! message Run { repeated Item items = 1; }
//! message Item { bytes hash = 1; Entry entry = 2; }
//! message Entry {
//!   string node_id = 1;  string execution_id = 2;  string program_id = 3;
//!   string program_version = 4;  Hex program_sha256 = 5;  // absent: none
//!   string instruction_id = 6;  string opcode = 7;
//!   Hex input_digest = 8;  Hex output_digest = 9;  string outcome = 10;
//!   optional string fallback = 11;  uint64 started_ms = 12;  uint64 took_ms = 13;
//!   uint32 same = 14;    // in a run: the fields 1..=5 that repeat the item before's
//! }
//! // A digest: its 32 bytes when it is lowercase hex of 32 bytes, else the text as is, or
//! // (input and output digests) the position of an equal one stored whole before it.
//! message Hex { bytes raw = 1; string text = 2; uint32 earlier = 3; }
//! ```

use eyeflow_actors::ports::{AuditEntry, Fallback, StepOutcome, StepRecord};
use prost::Message;

/// The first byte of a binary step record (a JSON record starts with `{`).
pub(crate) const STEPS_V1: u8 = 0xB1;

/// The first byte of a binary audit entry of an earlier version's single-entry record (a
/// JSON one starts with `{`).
pub(crate) const AUDIT_V1: u8 = 0xA1;

/// The first byte of a run of audit entries written before 2026-12-02: every item with its
/// whole hash.
pub(crate) const AUDIT_RUN_V1: u8 = 0xA2;

/// The first byte of a stored run of audit entries: the last item with its whole hash, the
/// others with a tag.
pub(crate) const AUDIT_RUN_V2: u8 = 0xA3;

/// The bytes of an entry's hash that a run stores for all but its last entry.
pub(crate) const TAG_BYTES: usize = 4;

/// Why a record could not be read back.
pub(crate) type DecodeError = String;

#[derive(Clone, PartialEq, Message)]
struct StepBatch {
    #[prost(message, repeated, tag = "1")]
    steps: Vec<Step>,
}

#[derive(Clone, PartialEq, Message)]
struct Step {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(string, tag = "2")]
    instruction_id: String,
    #[prost(uint32, tag = "3")]
    attempt: u32,
    #[prost(uint32, tag = "4")]
    kind: u32,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
    #[prost(string, tag = "6")]
    text: String,
    #[prost(string, tag = "7")]
    message: String,
    #[prost(uint32, tag = "8")]
    fallback: u32,
    #[prost(uint64, tag = "9")]
    started_ms: u64,
    #[prost(uint64, tag = "10")]
    took_ms: u64,
}

const DONE: u32 = 0;
const SKIPPED: u32 = 1;
const FAILED: u32 = 2;
const AWAITING_APPROVAL: u32 = 3;
const STARTED: u32 = 4;
const AMBIGUOUS: u32 = 5;

/// The fallbacks in their record numbers (index + 1; 0 is none).
const FALLBACKS: [Fallback; 7] = [
    Fallback::Retry,
    Fallback::FallbackValue,
    Fallback::FallbackModel,
    Fallback::Skip,
    Fallback::Abort,
    Fallback::Reissued,
    Fallback::ReadBack,
];

/// One record holding `steps` (all of one execution, in order), each JSON value made by
/// `json` (which refuses a value its reader could not read back).
pub(crate) fn encode_steps<E>(
    steps: &[StepRecord],
    mut json: impl FnMut(&serde_json::Value) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let mut batch = StepBatch {
        steps: Vec::with_capacity(steps.len()),
    };
    for step in steps {
        let (kind, value, text, message) = match &step.outcome {
            StepOutcome::Done { output } => (DONE, json(output)?, String::new(), String::new()),
            StepOutcome::Skipped => (SKIPPED, Vec::new(), String::new(), String::new()),
            StepOutcome::Failed { class, message } => {
                (FAILED, Vec::new(), class.clone(), message.clone())
            }
            StepOutcome::AwaitingApproval => {
                (AWAITING_APPROVAL, Vec::new(), String::new(), String::new())
            }
            StepOutcome::Started {
                idempotency_key,
                input,
            } => (
                STARTED,
                json(input)?,
                idempotency_key.clone(),
                String::new(),
            ),
            StepOutcome::Ambiguous { idempotency_key } => (
                AMBIGUOUS,
                Vec::new(),
                idempotency_key.clone(),
                String::new(),
            ),
        };
        let fallback = step.fallback.map_or(0, |f| {
            FALLBACKS
                .iter()
                .position(|known| *known == f)
                .map_or(0, |i| i as u32 + 1)
        });
        batch.steps.push(Step {
            seq: step.seq,
            instruction_id: step.instruction_id.clone(),
            attempt: step.attempt,
            kind,
            value,
            text,
            message,
            fallback,
            started_ms: step.started_ms,
            took_ms: step.finished_ms.saturating_sub(step.started_ms),
        });
    }
    let body = batch.encode_to_vec();
    let mut out = Vec::with_capacity(11 + body.len());
    out.push(STEPS_V1);
    prost::encoding::encode_varint(steps.len() as u64, &mut out);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The steps of a `journal-steps` record of `execution_id`: binary or, from earlier
/// versions, one JSON step.
pub(crate) fn decode_steps(
    execution_id: &str,
    bytes: &[u8],
) -> Result<Vec<StepRecord>, DecodeError> {
    let Some((&STEPS_V1, mut rest)) = bytes.split_first() else {
        return serde_json::from_slice::<StepRecord>(bytes)
            .map(|step| vec![step])
            .map_err(|e| e.to_string());
    };
    let count = prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?;
    let batch = StepBatch::decode(rest).map_err(|e| e.to_string())?;
    if batch.steps.len() as u64 != count {
        return Err(format!(
            "the record says {count} steps and holds {}",
            batch.steps.len()
        ));
    }
    batch
        .steps
        .into_iter()
        .map(|step| {
            let value = || -> Result<serde_json::Value, DecodeError> {
                serde_json::from_slice(&step.value).map_err(|e| format!("step {}: {e}", step.seq))
            };
            let outcome = match step.kind {
                DONE => StepOutcome::Done { output: value()? },
                SKIPPED => StepOutcome::Skipped,
                FAILED => StepOutcome::Failed {
                    class: step.text,
                    message: step.message,
                },
                AWAITING_APPROVAL => StepOutcome::AwaitingApproval,
                STARTED => StepOutcome::Started {
                    input: value()?,
                    idempotency_key: step.text,
                },
                AMBIGUOUS => StepOutcome::Ambiguous {
                    idempotency_key: step.text,
                },
                other => return Err(format!("step {}: unknown kind {other}", step.seq)),
            };
            let fallback = match step.fallback {
                0 => None,
                n => Some(
                    *FALLBACKS
                        .get(n as usize - 1)
                        .ok_or_else(|| format!("step {}: unknown fallback {n}", step.seq))?,
                ),
            };
            Ok(StepRecord {
                execution_id: execution_id.to_owned(),
                seq: step.seq,
                instruction_id: step.instruction_id,
                attempt: step.attempt,
                outcome,
                fallback,
                started_ms: step.started_ms,
                finished_ms: step.started_ms.saturating_add(step.took_ms),
            })
        })
        .collect()
}

#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(string, tag = "1")]
    node_id: String,
    #[prost(string, tag = "2")]
    execution_id: String,
    #[prost(string, tag = "3")]
    program_id: String,
    #[prost(string, tag = "4")]
    program_version: String,
    #[prost(message, optional, tag = "5")]
    program_sha256: Option<Hex>,
    #[prost(string, tag = "6")]
    instruction_id: String,
    #[prost(string, tag = "7")]
    opcode: String,
    #[prost(message, optional, tag = "8")]
    input_digest: Option<Hex>,
    #[prost(message, optional, tag = "9")]
    output_digest: Option<Hex>,
    #[prost(string, tag = "10")]
    outcome: String,
    #[prost(string, optional, tag = "11")]
    fallback: Option<String>,
    #[prost(uint64, tag = "12")]
    started_ms: u64,
    #[prost(uint64, tag = "13")]
    took_ms: u64,
    #[prost(uint32, tag = "14")]
    same: u32,
}

#[derive(Clone, PartialEq, Message)]
struct Run {
    #[prost(message, repeated, tag = "1")]
    items: Vec<Item>,
}

#[derive(Clone, PartialEq, Message)]
struct Item {
    #[prost(bytes = "vec", tag = "1")]
    hash: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    entry: Option<Entry>,
}

#[derive(Clone, PartialEq, Message)]
struct Hex {
    #[prost(bytes = "vec", tag = "1")]
    raw: Vec<u8>,
    #[prost(string, tag = "2")]
    text: String,
    #[prost(uint32, tag = "3")]
    earlier: u32,
}

impl Hex {
    fn of(text: &str) -> Self {
        match lowercase_hex_32(text.as_bytes()) {
            Some(raw) => Self {
                raw,
                ..Self::default()
            },
            None => Self {
                text: text.to_owned(),
                ..Self::default()
            },
        }
    }

    fn text(self) -> String {
        if self.raw.is_empty() {
            self.text
        } else {
            eyeflow_actors::exec::lowercase_hex(&self.raw)
        }
    }
}

/// The input and output digests stored whole so far in one record, in order: a digest
/// equal to one of them is stored as its position.
#[derive(Default)]
struct Digests(Vec<Vec<u8>>);

impl Digests {
    /// `text` as stored: by position when an equal digest was stored whole before.
    fn store(&mut self, text: &str) -> Hex {
        let hex = Hex::of(text);
        if hex.raw.is_empty() {
            return hex;
        }
        match self.0.iter().position(|raw| *raw == hex.raw) {
            Some(at) => Hex {
                earlier: u32::try_from(at + 1).unwrap_or(u32::MAX),
                ..Hex::default()
            },
            None => {
                self.0.push(hex.raw.clone());
                hex
            }
        }
    }

    /// The text of a stored digest (empty when absent).
    fn read(&mut self, hex: Option<Hex>) -> Result<String, DecodeError> {
        let Some(hex) = hex else {
            return Ok(String::new());
        };
        if hex.earlier == 0 {
            if !hex.raw.is_empty() {
                self.0.push(hex.raw.clone());
            }
            return Ok(hex.text());
        }
        if !hex.raw.is_empty() || !hex.text.is_empty() {
            return Err("a digest both stored and named by position".to_owned());
        }
        usize::try_from(hex.earlier - 1)
            .ok()
            .and_then(|at| self.0.get(at))
            .map(|raw| eyeflow_actors::exec::lowercase_hex(raw))
            .ok_or_else(|| {
                format!(
                    "a digest names position {} of {} stored",
                    hex.earlier,
                    self.0.len()
                )
            })
    }
}

/// The 32 bytes `text` spells when it is exactly 64 lowercase hex digits (so that encoding
/// them again gives `text` back), else `None`.
fn lowercase_hex_32(text: &[u8]) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != 64 {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// `entry` as a message, every field present (its digests by position when `digests`
/// holds an equal one).
fn message_of(entry: &AuditEntry, digests: &mut Digests) -> Entry {
    Entry {
        node_id: entry.node_id.clone(),
        execution_id: entry.execution_id.clone(),
        program_id: entry.program_id.clone(),
        program_version: entry.program_version.clone(),
        program_sha256: entry.program_sha256.as_deref().map(Hex::of),
        instruction_id: entry.instruction_id.clone(),
        opcode: entry.opcode.clone(),
        input_digest: Some(digests.store(&entry.input_digest)),
        output_digest: Some(digests.store(&entry.output_digest)),
        outcome: entry.outcome.clone(),
        fallback: entry.fallback.clone(),
        started_ms: entry.started_ms,
        took_ms: entry.finished_ms.saturating_sub(entry.started_ms),
        same: 0,
    }
}

/// The entry `message` holds (its `same` fields already filled in; its digests by position
/// found in `digests`).
fn entry_of(message: Entry, digests: &mut Digests) -> Result<AuditEntry, DecodeError> {
    let input_digest = digests.read(message.input_digest)?;
    let output_digest = digests.read(message.output_digest)?;
    Ok(AuditEntry {
        node_id: message.node_id,
        execution_id: message.execution_id,
        program_id: message.program_id,
        program_version: message.program_version,
        program_sha256: message.program_sha256.map(Hex::text),
        instruction_id: message.instruction_id,
        opcode: message.opcode,
        input_digest,
        output_digest,
        outcome: message.outcome,
        fallback: message.fallback,
        started_ms: message.started_ms,
        finished_ms: message.started_ms.saturating_add(message.took_ms),
    })
}

/// The single-entry binary form an earlier version stored (tests write such records).
#[cfg(test)]
pub(crate) fn encode_entry(entry: &AuditEntry) -> Vec<u8> {
    let message = message_of(entry, &mut Digests::default());
    let mut out = Vec::with_capacity(1 + message.encoded_len());
    out.push(AUDIT_V1);
    out.extend_from_slice(&message.encode_to_vec());
    out
}

/// The entry a single-entry record's entry part holds: binary, or canonical JSON.
pub(crate) fn decode_entry(body: &[u8]) -> Result<AuditEntry, DecodeError> {
    let Some((&AUDIT_V1, rest)) = body.split_first() else {
        return serde_json::from_slice(body).map_err(|e| e.to_string());
    };
    let message = Entry::decode(rest).map_err(|e| e.to_string())?;
    if message.same != 0 {
        return Err("a single entry names fields of an entry before it".to_owned());
    }
    entry_of(message, &mut Digests::default())
}

/// The fields of an entry that a run's next entry may share, as bits of `same`.
const SHARED_FIELDS: u32 = 5;

/// Clears in `message` the fields equal to `before`'s and names them in `same`.
fn leave_out_shared(message: &mut Entry, before: &Entry) {
    let mut same = 0;
    let mut share = |bit: u32, equal: bool| {
        if equal {
            same |= 1 << bit;
        }
        equal
    };
    if share(0, message.node_id == before.node_id) {
        message.node_id.clear();
    }
    if share(1, message.execution_id == before.execution_id) {
        message.execution_id.clear();
    }
    if share(2, message.program_id == before.program_id) {
        message.program_id.clear();
    }
    if share(3, message.program_version == before.program_version) {
        message.program_version.clear();
    }
    if share(4, message.program_sha256 == before.program_sha256) {
        message.program_sha256 = None;
    }
    message.same = same;
}

/// Fills in `message` the fields its `same` takes from `before`.
fn take_shared(message: &mut Entry, before: &Entry) -> Result<(), DecodeError> {
    let same = message.same;
    if same >> SHARED_FIELDS != 0 {
        return Err(format!("unknown shared fields {same:#x}"));
    }
    let taken = |bit: u32| same & (1 << bit) != 0;
    if taken(0) {
        message.node_id.clone_from(&before.node_id);
    }
    if taken(1) {
        message.execution_id.clone_from(&before.execution_id);
    }
    if taken(2) {
        message.program_id.clone_from(&before.program_id);
    }
    if taken(3) {
        message.program_version.clone_from(&before.program_version);
    }
    if taken(4) {
        message.program_sha256.clone_from(&before.program_sha256);
    }
    message.same = 0;
    Ok(())
}

/// The stored form of a run of `entries` (each given with its own hash: all but the last are
/// stored as a tag), the first chained to the entry whose hash is `previous`.
pub(crate) fn encode_run(previous: &[u8; 32], entries: &[(&AuditEntry, [u8; 32])]) -> Vec<u8> {
    let mut run = Run {
        items: Vec::with_capacity(entries.len()),
    };
    let mut digests = Digests::default();
    let mut before: Option<Entry> = None;
    for (n, (entry, hash)) in entries.iter().enumerate() {
        let full = message_of(entry, &mut digests);
        let mut message = full.clone();
        if let Some(before) = &before {
            leave_out_shared(&mut message, before);
        }
        let stored = if n + 1 == entries.len() {
            &hash[..]
        } else {
            &hash[..TAG_BYTES]
        };
        run.items.push(Item {
            hash: stored.to_vec(),
            entry: Some(message),
        });
        before = Some(full);
    }
    let mut out = Vec::with_capacity(33 + run.encoded_len());
    out.push(AUDIT_RUN_V2);
    out.extend_from_slice(previous);
    out.extend_from_slice(&run.encode_to_vec());
    out
}

/// What a run stores of an entry's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemHash {
    /// The whole hash (a run's last entry; every entry of a run written before 2026-12-02).
    Whole([u8; 32]),
    /// Its first [`TAG_BYTES`] bytes: the hash is recomputed from the entry and the one
    /// before it.
    Tag([u8; TAG_BYTES]),
}

/// A stored run: the hash before its first entry, then each entry with what is stored of
/// its hash.
pub(crate) type DecodedRun = ([u8; 32], Vec<(ItemHash, AuditEntry)>);

/// The run `value` holds.
pub(crate) fn decode_run(value: &[u8]) -> Result<DecodedRun, DecodeError> {
    let (tagged, rest) = match value.split_first() {
        Some((&AUDIT_RUN_V2, rest)) => (true, rest),
        Some((&AUDIT_RUN_V1, rest)) => (false, rest),
        _ => return Err("not a run of audit entries".to_owned()),
    };
    let (previous, rest) = rest
        .split_first_chunk::<32>()
        .ok_or_else(|| format!("a run of {} bytes is too short", value.len()))?;
    let run = Run::decode(rest).map_err(|e| e.to_string())?;
    let count = run.items.len();
    let mut entries = Vec::with_capacity(count);
    let mut digests = Digests::default();
    let mut before: Option<Entry> = None;
    for (n, item) in run.items.into_iter().enumerate() {
        let hash = if tagged && n + 1 < count {
            <[u8; TAG_BYTES]>::try_from(item.hash.as_slice()).map(ItemHash::Tag)
        } else {
            <[u8; 32]>::try_from(item.hash.as_slice()).map(ItemHash::Whole)
        }
        .map_err(|_| format!("item {n}: a hash of {} bytes", item.hash.len()))?;
        let mut message = item.entry.ok_or_else(|| format!("item {n}: no entry"))?;
        match &before {
            Some(before) => {
                take_shared(&mut message, before).map_err(|e| format!("item {n}: {e}"))?
            }
            None if message.same != 0 => {
                return Err("the first item names fields of an entry before it".to_owned());
            }
            None => {}
        }
        before = Some(message.clone());
        let entry = entry_of(message, &mut digests).map_err(|e| format!("item {n}: {e}"))?;
        entries.push((hash, entry));
    }
    Ok((*previous, entries))
}

/// The canonical JSON of a stored entry part (what the chain hashes): the part itself when
/// it is JSON, re-encoded from the binary form otherwise.
pub(crate) fn canonical_entry(body: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    if body.first() == Some(&AUDIT_V1) {
        Ok(std::borrow::Cow::Owned(eyeflow_actors::chain::canonical(
            &decode_entry(body)?,
        )))
    } else {
        Ok(std::borrow::Cow::Borrowed(body))
    }
}

/// How many steps a `journal-steps` record holds, without decoding them.
pub(crate) fn count_steps(bytes: &[u8]) -> u64 {
    match bytes.split_first() {
        Some((&STEPS_V1, mut rest)) => prost::encoding::decode_varint(&mut rest).unwrap_or(0),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(seq: u64, outcome: StepOutcome, fallback: Option<Fallback>) -> StepRecord {
        StepRecord {
            execution_id: "x0000000000000007".into(),
            seq,
            instruction_id: format!("i{seq}"),
            attempt: 2,
            outcome,
            fallback,
            started_ms: 1_764_000_000_000 + seq,
            finished_ms: 1_764_000_000_005 + seq,
        }
    }

    fn json_of(value: &serde_json::Value) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(value)
    }

    #[test]
    fn every_outcome_and_fallback_reads_back_as_written() {
        let mut steps = vec![
            step(
                0,
                StepOutcome::Done {
                    output: json!({"a": [1, 2.5, "é\"x"]}),
                },
                None,
            ),
            step(1, StepOutcome::Skipped, Some(Fallback::Skip)),
            step(
                2,
                StepOutcome::Failed {
                    class: "timeout".into(),
                    message: "took too long".into(),
                },
                None,
            ),
            step(3, StepOutcome::AwaitingApproval, None),
            step(
                4,
                StepOutcome::Started {
                    idempotency_key: "x7/act/1".into(),
                    input: json!({"valve": "v"}),
                },
                None,
            ),
            step(
                5,
                StepOutcome::Ambiguous {
                    idempotency_key: "x7/act/1".into(),
                },
                None,
            ),
        ];
        for (i, fallback) in FALLBACKS.iter().enumerate() {
            steps.push(step(
                6 + i as u64,
                StepOutcome::Done {
                    output: json!(null),
                },
                Some(*fallback),
            ));
        }
        let bytes = encode_steps(&steps, json_of).expect("encode");
        assert_eq!(bytes[0], STEPS_V1);
        assert_eq!(count_steps(&bytes), steps.len() as u64);
        assert_eq!(
            decode_steps("x0000000000000007", &bytes).expect("decode"),
            steps
        );
    }

    #[test]
    fn a_json_record_of_an_earlier_version_still_reads() {
        let old = step(
            3,
            StepOutcome::Done {
                output: json!(12.5),
            },
            Some(Fallback::Retry),
        );
        let bytes = serde_json::to_vec(&old).expect("json");
        assert_eq!(count_steps(&bytes), 1);
        assert_eq!(decode_steps("ignored", &bytes).expect("decode"), vec![old]);
    }

    fn entry(program_sha256: Option<String>, digest: &str) -> AuditEntry {
        AuditEntry {
            node_id: "node-a".into(),
            execution_id: "x0000000000000007".into(),
            program_id: "valve-guard".into(),
            program_version: "1.2.0".into(),
            program_sha256,
            instruction_id: "loop/3/act".into(),
            opcode: "CALL_ACTION".into(),
            input_digest: digest.into(),
            output_digest: "ab".repeat(32),
            outcome: "failed:timeout".into(),
            fallback: Some("retry".into()),
            started_ms: 1_764_000_000_000,
            finished_ms: 1_764_000_000_042,
        }
    }

    #[test]
    fn an_audit_entry_reads_back_exactly_and_hashes_as_its_canonical_json() {
        let entries = [
            entry(Some("0f".repeat(32)), &"12".repeat(32)),
            entry(None, ""),
            // Not lowercase hex of 32 bytes: kept as text, byte for byte.
            entry(Some("0F".repeat(32)), "not-a-digest"),
            AuditEntry {
                fallback: Some(String::new()),
                ..entry(None, &"ff".repeat(31))
            },
            AuditEntry {
                fallback: None,
                ..entry(None, "")
            },
        ];
        for original in entries {
            let stored = encode_entry(&original);
            assert_eq!(stored[0], AUDIT_V1);
            assert_eq!(decode_entry(&stored).expect("decode"), original);
            let canonical = eyeflow_actors::chain::canonical(&original);
            assert_eq!(canonical_entry(&stored).expect("canonical"), canonical);
            // An entry stored as JSON by an earlier version reads the same way.
            assert_eq!(decode_entry(&canonical).expect("json"), original);
            assert_eq!(canonical_entry(&canonical).expect("json"), canonical);
        }
        let full = entry(Some("0f".repeat(32)), &"12".repeat(32));
        assert!(
            encode_entry(&full).len() * 2 < eyeflow_actors::chain::canonical(&full).len(),
            "the binary entry is less than half its JSON"
        );
    }

    #[test]
    fn a_damaged_audit_entry_is_refused() {
        let stored = encode_entry(&entry(None, ""));
        assert!(decode_entry(&stored[..stored.len() - 4]).is_err());
        assert!(canonical_entry(&stored[..stored.len() - 4]).is_err());
    }

    #[test]
    fn a_run_reads_back_exactly_and_stores_what_its_entries_share_once() {
        let first = entry(Some("0f".repeat(32)), &"12".repeat(32));
        let next = AuditEntry {
            instruction_id: "loop/3/next".into(),
            ..first.clone()
        };
        // Another execution of another program, then one without a program hash.
        let other = AuditEntry {
            execution_id: "x0000000000000008".into(),
            program_id: "pump".into(),
            ..entry(Some("aa".repeat(32)), "")
        };
        let last = AuditEntry {
            program_sha256: None,
            ..other.clone()
        };
        let entries = [first, next, other, last];
        let hashes: Vec<[u8; 32]> = (0..4u8).map(|i| [i; 32]).collect();
        let pairs: Vec<(&AuditEntry, [u8; 32])> = entries.iter().zip(hashes).collect();
        let stored = encode_run(&[7; 32], &pairs);
        assert_eq!(stored[0], AUDIT_RUN_V2);
        let (previous, read) = decode_run(&stored).expect("decode");
        assert_eq!(previous, [7; 32]);
        let read_entries: Vec<&AuditEntry> = read.iter().map(|(_, e)| e).collect();
        assert_eq!(read_entries, entries.iter().collect::<Vec<_>>());
        // A tag of each hash, the last one whole.
        let read_hashes: Vec<ItemHash> = read.iter().map(|(h, _)| *h).collect();
        assert_eq!(
            read_hashes,
            [
                ItemHash::Tag([0; TAG_BYTES]),
                ItemHash::Tag([1; TAG_BYTES]),
                ItemHash::Tag([2; TAG_BYTES]),
                ItemHash::Whole([3; 32]),
            ]
        );
        // What the entries share is stored once: the run is smaller than its entries alone.
        let alone: usize = entries.iter().map(|e| encode_entry(e).len() + 64).sum();
        assert!(
            stored.len() + 150 < alone,
            "{} against {alone}",
            stored.len()
        );
    }

    #[test]
    fn a_digest_stored_earlier_in_the_run_is_stored_by_its_position() {
        // The output of one entry is the input of the next and both outputs are equal: the
        // second entry's digests are positions (the first's output, then its own input).
        let first = AuditEntry {
            input_digest: "01".repeat(32),
            output_digest: "02".repeat(32),
            ..entry(None, "")
        };
        let next = AuditEntry {
            input_digest: "02".repeat(32),
            output_digest: "02".repeat(32),
            instruction_id: "next".into(),
            ..first.clone()
        };
        // Text that is not a digest is never shared by position.
        let text = AuditEntry {
            input_digest: "not-a-digest".into(),
            output_digest: "not-a-digest".into(),
            ..first.clone()
        };
        let entries = [first.clone(), next, text, first];
        let pairs: Vec<(&AuditEntry, [u8; 32])> = entries.iter().map(|e| (e, [9; 32])).collect();
        let stored = encode_run(&[0; 32], &pairs);
        let (_, read) = decode_run(&stored).expect("decode");
        let read: Vec<AuditEntry> = read.into_iter().map(|(_, e)| e).collect();
        assert_eq!(read, entries);
        let apart: usize = entries
            .iter()
            .map(|e| encode_run(&[0; 32], &[(e, [9; 32])]).len() - 33)
            .sum();
        // Four digests of 32 bytes became positions of a few bytes each.
        assert!(
            stored.len() + 4 * 28 < apart + 33,
            "{} against {apart}",
            stored.len()
        );
    }

    #[test]
    fn a_damaged_run_is_refused_with_a_reason() {
        let one = entry(None, "");
        let stored = encode_run(&[0; 32], &[(&one, [1; 32]), (&one, [2; 32])]);
        assert!(decode_run(&stored[..stored.len() - 3]).is_err());
        assert!(decode_run(&stored[..20]).is_err());
        assert!(decode_run(&stored[1..]).is_err(), "not a run");
        // A first item that takes fields from an entry before it, an unknown shared field,
        // an item without its 32-byte hash.
        let item = |same: u32, hash: Vec<u8>| Item {
            hash,
            entry: Some(Entry {
                same,
                ..message_of(&one, &mut Digests::default())
            }),
        };
        for (items, reason) in [
            (vec![item(1, vec![1; 32])], "first item"),
            (
                vec![item(0, vec![1; 32]), item(1 << 5, vec![2; 32])],
                "unknown shared",
            ),
            (vec![item(0, vec![1; 31])], "31 bytes"),
        ] {
            let mut bad = vec![AUDIT_RUN_V1];
            bad.extend_from_slice(&[0; 32]);
            bad.extend_from_slice(&Run { items }.encode_to_vec());
            let error = decode_run(&bad).expect_err(reason);
            assert!(error.contains(reason), "{error}");
        }
        // Since 2026-12-02: a tag where the whole hash belongs and the other way round, a
        // digest by a position not stored, a digest both stored and by position.
        let by_position = |earlier: u32, raw: Vec<u8>| Item {
            hash: vec![1; TAG_BYTES],
            entry: Some(Entry {
                output_digest: Some(Hex {
                    raw,
                    earlier,
                    ..Hex::default()
                }),
                ..message_of(&one, &mut Digests::default())
            }),
        };
        for (items, reason) in [
            (vec![item(0, vec![1; TAG_BYTES])], "a hash of 4 bytes"),
            (
                vec![item(0, vec![1; 32]), item(0, vec![2; 32])],
                "a hash of 32 bytes",
            ),
            (
                vec![by_position(3, Vec::new()), item(0, vec![2; 32])],
                "names position 3 of 0",
            ),
            (
                vec![by_position(1, vec![5; 32]), item(0, vec![2; 32])],
                "both stored and named",
            ),
        ] {
            let mut bad = vec![AUDIT_RUN_V2];
            bad.extend_from_slice(&[0; 32]);
            bad.extend_from_slice(&Run { items }.encode_to_vec());
            let error = decode_run(&bad).expect_err(reason);
            assert!(error.contains(reason), "{reason}: {error}");
        }
        // A single entry that names shared fields is refused too.
        let mut single = vec![AUDIT_V1];
        single.extend_from_slice(&item(1, Vec::new()).entry.expect("entry").encode_to_vec());
        assert!(decode_entry(&single).is_err());
    }

    #[test]
    fn a_damaged_record_is_refused_with_a_reason() {
        let steps = [step(0, StepOutcome::Done { output: json!(1) }, None)];
        let mut bytes = encode_steps(&steps, json_of).expect("encode");
        bytes.truncate(bytes.len() - 3);
        assert!(decode_steps("x", &bytes).is_err());
        let mut wrong_count = encode_steps(&steps, json_of).expect("encode");
        wrong_count[1] = 5;
        let error = decode_steps("x", &wrong_count).expect_err("count");
        assert!(error.contains("says 5 steps"), "{error}");
    }
}
