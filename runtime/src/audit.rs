//! The embedded audit chain: [`FjallAudit`] keeps it in the `audit` keyspace of the
//! [`EmbeddedStore`] (executions' entries arrive in the journal's own writes, see
//! [`crate::journal`]); [`verify`] recomputes the whole chain and names
//! the first broken entry; signed [`Checkpoint`]s of the chain head make truncation and forks
//! detectable by anyone holding the node's public key.
//!
//! ## The chain
//!
//! Entry `n` (from 0) has `hash_n = SHA-256(hash_{n-1} ‖ canonical(entry_n))`, with
//! `hash_{-1}` = 32 zero bytes. One chain per store: appends are serialized by one
//! [`FjallAudit`] (open only one per store), and each returns only once durable according
//! to its [`AuditConfig::durability`].
//!
//! ## Canonical encoding of an entry
//!
//! `canonical(entry)` is the UTF-8 JSON text produced by [`canonical_json`] from the entry's
//! serde form, byte by byte:
//!
//! - one object holding exactly the twelve fields of [`AuditEntry`], keys in ascending byte
//!   order: `execution_id`, `fallback`, `finished_ms`, `input_digest`, `instruction_id`,
//!   `node_id`, `opcode`, `outcome`, `output_digest`, `program_id`, `program_version`,
//!   `started_ms`;
//! - no whitespace anywhere: `{` key `:` value (`,` key `:` value)* `}`;
//! - strings (keys and values) in double quotes; `"` and `\` escaped as `\"` and `\\`;
//!   U+0008, U+0009, U+000A, U+000C, U+000D as `\b`, `\t`, `\n`, `\f`, `\r`; every other
//!   code point below U+0020 as `\u00` + two lowercase hex digits; everything else
//!   (including `/`, U+007F and non-ASCII) as its literal UTF-8 bytes;
//! - integers (`started_ms`, `finished_ms`) in decimal ASCII, no sign, no leading zeros;
//! - `fallback` absent is `null`.
//!
//! For example `{"execution_id":"x1","fallback":null,"finished_ms":2,...,"started_ms":1}`.
//!
//! ## Stored records
//!
//! Key: the entry index as 8 big-endian bytes. Value: `hash_{n-1}` (32 bytes) ‖ `hash_n`
//! (32 bytes) ‖ `canonical(entry_n)`.
//!
//! ## Checkpoints
//!
//! A checkpoint signs the chain head: `index` (of the last entry it covers), `hash` (that
//! entry's hash), `time_ms`. The Ed25519 signature is over [`Checkpoint::payload`]:
//! the 28 ASCII bytes `eyeflow-audit-checkpoint/v1\n` ‖ index (8 bytes big-endian) ‖ hash
//! (32 bytes) ‖ time_ms (8 bytes big-endian). Checkpoints are stored in the
//! `audit-checkpoints` keyspace (key: index, 8 bytes big-endian; value: index ‖ hash ‖
//! time_ms ‖ signature, 112 bytes), written every [`AuditConfig::checkpoint_every`] entries
//! when the audit has a signing key, and on demand with [`FjallAudit::checkpoint`].
//!
//! A plain hash chain detects edits but not a truncated tail: [`verify`] reports a chain
//! that ends before a stored checkpoint. Deleting the checkpoints too is detected only
//! against checkpoints published outside the node ([`verify_with`]).

use std::sync::{Mutex, PoisonError};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use eyeflow_actors::ports::AuditEntry;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{Durability, EmbeddedStore, Space, Write};
use crate::{Error, Result};

/// Domain separation prefix of a checkpoint's signed payload.
const CHECKPOINT_DOMAIN: &[u8; 28] = b"eyeflow-audit-checkpoint/v1\n";

/// Length of a stored checkpoint: index, hash, time, signature.
const CHECKPOINT_LEN: usize = 8 + 32 + 8 + 64;

/// Entries read per store scan while verifying.
const VERIFY_BATCH: usize = 1024;

/// How the audit chain commits and signs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Durability of each append. [`Durability::Buffered`]: the entry is written without a
    /// flush of its own and reaches the OS with the store's next flushing write (the node
    /// journals each step right after its entry: see [`EmbeddedStore::write`]).
    pub durability: Durability,
    /// Sign a checkpoint every this many entries (0: never); needs `signing_key`.
    pub checkpoint_every: u64,
    /// The node's key, for automatic checkpoints.
    pub signing_key: Option<SigningKey>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            checkpoint_every: 1000,
            signing_key: None,
        }
    }
}

/// The audit entry of an operator action (a key trusted or revoked, a plugin transferred):
/// `opcode` names the action, `subject` what it concerns (in `instruction_id`), `input` and
/// `output` are digested like an instruction's. Not an execution's step: node, execution and
/// program are empty.
pub fn operator_entry(
    opcode: &str,
    subject: &str,
    input: &Value,
    output: &Value,
    at_ms: u64,
) -> AuditEntry {
    let digest = |value: &Value| hex::encode(Sha256::digest(canonical_json(value)));
    AuditEntry {
        node_id: String::new(),
        execution_id: String::new(),
        program_id: String::new(),
        program_version: String::new(),
        instruction_id: subject.to_owned(),
        opcode: opcode.to_owned(),
        input_digest: digest(input),
        output_digest: digest(output),
        outcome: "done".to_owned(),
        fallback: None,
        started_ms: at_ms,
        finished_ms: at_ms,
    }
}

/// A signed statement of the chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Index of the last entry covered.
    pub index: u64,
    /// That entry's hash.
    pub hash: [u8; 32],
    /// When it was signed, Unix milliseconds.
    pub time_ms: u64,
    /// Ed25519 signature of [`Checkpoint::payload`].
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// The signed bytes (see the module documentation).
    pub fn payload(&self) -> Vec<u8> {
        payload(self.index, &self.hash, self.time_ms)
    }

    /// Whether the signature is `key`'s (strict verification).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(&self.payload(), &Signature::from_bytes(&self.signature))
            .is_ok()
    }

    /// The checkpoint as JSON — the form the Kafka audit topic carries and
    /// `eyeflow audit checkpoint` writes: `{node_id, index, hash, time_ms, signature}`, hash
    /// and signature in lowercase hex.
    pub fn to_json(&self, node_id: &str) -> Value {
        serde_json::json!({
            "node_id": node_id,
            "index": self.index,
            "hash": hex::encode(self.hash),
            "time_ms": self.time_ms,
            "signature": hex::encode(self.signature),
        })
    }

    /// Reads the JSON form of [`Checkpoint::to_json`]; what is wrong, in words.
    pub fn from_json(value: &Value) -> std::result::Result<Self, String> {
        let number = |field: &str| {
            value
                .get(field)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("field `{field}`: expected an unsigned integer"))
        };
        fn bytes<const N: usize>(
            value: &Value,
            field: &str,
        ) -> std::result::Result<[u8; N], String> {
            value
                .get(field)
                .and_then(Value::as_str)
                .and_then(|text| hex::decode(text).ok())
                .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
                .ok_or_else(|| format!("field `{field}`: expected {N} bytes in hex"))
        }
        Ok(Self {
            index: number("index")?,
            hash: bytes(value, "hash")?,
            time_ms: number("time_ms")?,
            signature: bytes(value, "signature")?,
        })
    }

    fn sign(index: u64, hash: [u8; 32], key: &SigningKey) -> Self {
        let time_ms = crate::now_ms();
        let signature = key.sign(&payload(index, &hash, time_ms)).to_bytes();
        Self {
            index,
            hash,
            time_ms,
            signature,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CHECKPOINT_LEN);
        bytes.extend_from_slice(&self.index.to_be_bytes());
        bytes.extend_from_slice(&self.hash);
        bytes.extend_from_slice(&self.time_ms.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (index, rest) = bytes.split_first_chunk::<8>()?;
        let (hash, rest) = rest.split_first_chunk::<32>()?;
        let (time_ms, rest) = rest.split_first_chunk::<8>()?;
        let signature = <[u8; 64]>::try_from(rest).ok()?;
        Some(Self {
            index: u64::from_be_bytes(*index),
            hash: *hash,
            time_ms: u64::from_be_bytes(*time_ms),
            signature,
        })
    }
}

/// Where an appended entry landed in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReceipt {
    /// Index from 0.
    pub index: u64,
    /// `sha256(previous hash ‖ canonical(entry))`.
    pub hash: [u8; 32],
}

/// One stored entry with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedEntry {
    /// Index from 0.
    pub index: u64,
    /// Its hash.
    pub hash: [u8; 32],
    /// The entry.
    pub entry: AuditEntry,
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of entries.
    pub entries: u64,
    /// Hash of the last entry (32 zero bytes for an empty chain).
    pub head_hash: [u8; 32],
    /// Checkpoints found consistent with the chain.
    pub checkpoints: u64,
    /// Whether their signatures were checked (a verifying key was given).
    pub signatures_checked: bool,
}

/// The first broken entry of a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {index}: {reason}")]
pub struct AuditBroken {
    /// Index of the first entry that does not verify (for a truncated chain: the first
    /// missing one).
    pub index: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// The chain head as held in memory.
struct Head {
    next: u64,
    hash: [u8; 32],
}

/// The audit chain over the embedded store.
pub struct FjallAudit {
    store: EmbeddedStore,
    config: AuditConfig,
    head: Mutex<Head>,
}

impl FjallAudit {
    /// The chain in `store` (its head is read from the last stored entry; run [`verify`]
    /// to check the chain itself).
    pub fn open(store: EmbeddedStore, config: AuditConfig) -> Result<Self> {
        let head = match store.last(Space::Audit, b"")? {
            None => Head {
                next: 0,
                hash: [0; 32],
            },
            Some((key, value)) => {
                let index =
                    decode_index(&key).ok_or_else(|| corrupt(&key, "key is not 8 bytes"))?;
                let (_, hash, _) =
                    split_record(&value).ok_or_else(|| corrupt(&key, "record too short"))?;
                Head {
                    next: index + 1,
                    hash,
                }
            }
        };
        Ok(Self {
            store,
            config,
            head: Mutex::new(head),
        })
    }

    /// The number of entries and the hash of the last one (zeros when empty).
    pub fn head(&self) -> (u64, [u8; 32]) {
        let head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        (head.next, head.hash)
    }

    /// Signs and stores a checkpoint of the current head; `None` when the chain is empty.
    pub fn checkpoint(&self, key: &SigningKey) -> Result<Option<Checkpoint>> {
        let head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(index) = head.next.checked_sub(1) else {
            return Ok(None);
        };
        let checkpoint = Checkpoint::sign(index, head.hash, key);
        self.store
            .commit([checkpoint_write(&checkpoint)], Durability::Buffered)?;
        drop(head);
        self.store.persist(self.config.durability)?;
        Ok(Some(checkpoint))
    }

    /// At most `max` entries from index `from`, in order.
    pub fn entries(&self, from: u64, max: usize) -> Result<Vec<ChainedEntry>> {
        self.store
            .scan_from(Space::Audit, b"", &from.to_be_bytes(), max)?
            .into_iter()
            .map(|(key, value)| {
                let index =
                    decode_index(&key).ok_or_else(|| corrupt(&key, "key is not 8 bytes"))?;
                let (_, hash, body) =
                    split_record(&value).ok_or_else(|| corrupt(&key, "record too short"))?;
                let entry = serde_json::from_slice(body).map_err(|e| Error::CorruptRecord {
                    key: format!("audit/{index}"),
                    reason: e.to_string(),
                })?;
                Ok(ChainedEntry { index, hash, entry })
            })
            .collect()
    }

    /// Every stored checkpoint, by index.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        load_checkpoints(&self.store)
    }

    /// At most `max` checkpoints covering entry `from` or later, by index.
    pub fn checkpoints_from(&self, from: u64, max: usize) -> Result<Vec<Checkpoint>> {
        self.store
            .scan_from(Space::AuditCheckpoints, b"", &from.to_be_bytes(), max)?
            .into_iter()
            .map(|(key, value)| decode_checkpoint(&key, &value))
            .collect()
    }

    /// Appends `entry` durably according to the audit's durability.
    pub fn append(&self, entry: &AuditEntry) -> Result<AuditReceipt> {
        let receipts = self.append_all(std::slice::from_ref(entry))?;
        receipts
            .first()
            .copied()
            .ok_or_else(|| Error::CorruptRecord {
                key: "audit".to_owned(),
                reason: "an append gave no receipt".to_owned(),
            })
    }

    /// Appends `entries` next to each other in one batch, durably according to the
    /// audit's durability; their receipts.
    pub fn append_all(&self, entries: &[AuditEntry]) -> Result<Vec<AuditReceipt>> {
        let receipts = self.append_with(entries, Vec::new())?;
        if self.config.durability != Durability::Buffered {
            self.store.persist(self.config.durability)?;
        }
        Ok(receipts)
    }

    /// Appends `entries` next to each other and applies `with` (a journal segment, say) in
    /// the same atomic store write, made durable by no one here: the caller persists. Both
    /// are in the store or neither is.
    pub fn append_with(
        &self,
        entries: &[AuditEntry],
        with: Vec<Write>,
    ) -> Result<Vec<AuditReceipt>> {
        let bodies: Vec<Vec<u8>> = entries.iter().map(canonical).collect();
        let mut writes = Vec::with_capacity(2 * entries.len() + 1 + with.len());
        let mut receipts = Vec::with_capacity(entries.len());
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut index, mut previous) = (head.next, head.hash);
        for (entry, body) in entries.iter().zip(bodies) {
            let hash = chain_hash(&previous, &body);
            let mut record = Vec::with_capacity(64 + body.len());
            record.extend_from_slice(&previous);
            record.extend_from_slice(&hash);
            record.extend_from_slice(&body);
            writes.push(Write::Put(
                Space::Audit,
                index.to_be_bytes().to_vec(),
                record,
            ));
            writes.push(Write::Put(
                Space::AuditByExecution,
                execution_key(&entry.execution_id, Some(index)),
                Vec::new(),
            ));
            if let Some(key) = &self.config.signing_key
                && self.config.checkpoint_every > 0
                && (index + 1).is_multiple_of(self.config.checkpoint_every)
            {
                writes.push(checkpoint_write(&Checkpoint::sign(index, hash, key)));
            }
            receipts.push(AuditReceipt { index, hash });
            (index, previous) = (index + 1, hash);
        }
        writes.extend(with);
        if writes.is_empty() {
            return Ok(receipts);
        }
        // Written in chain order under the lock; made durable outside it so that
        // concurrent appends share a group commit.
        self.store.write(writes)?;
        (head.next, head.hash) = (index, previous);
        Ok(receipts)
    }
}

/// `execution id ‖ 0 ‖ index (big-endian)`: the per-execution index key (the prefix alone
/// without an index).
fn execution_key(execution_id: &str, index: Option<u64>) -> Vec<u8> {
    let mut key = Vec::with_capacity(execution_id.len() + 9);
    key.extend_from_slice(execution_id.as_bytes());
    key.push(0);
    if let Some(index) = index {
        key.extend_from_slice(&index.to_be_bytes());
    }
    key
}

impl FjallAudit {
    /// The entries of execution `execution_id`, in chain order (from the per-execution
    /// index written with each entry).
    pub fn of_execution(&self, execution_id: &str) -> Result<Vec<ChainedEntry>> {
        let prefix = execution_key(execution_id, None);
        let mut found = Vec::new();
        for (key, _) in self.store.scan(Space::AuditByExecution, &prefix)? {
            let index = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| Error::CorruptRecord {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "audit index key without an entry index".to_owned(),
                })?;
            found.extend(self.entries(index, 1)?);
        }
        Ok(found)
    }
}

/// Recomputes the chain in `store` and checks it against its stored checkpoints (and their
/// signatures, when `key` is given). The outer error is a store failure; the inner one names
/// the first broken entry.
pub fn verify(
    store: &EmbeddedStore,
    key: Option<&VerifyingKey>,
) -> Result<std::result::Result<VerifyReport, AuditBroken>> {
    verify_with(store, key, &[])
}

/// [`verify`], also against `published` checkpoints kept outside the node (which detect a
/// truncation even when the stored checkpoints were deleted with the tail).
pub fn verify_with(
    store: &EmbeddedStore,
    key: Option<&VerifyingKey>,
    published: &[Checkpoint],
) -> Result<std::result::Result<VerifyReport, AuditBroken>> {
    let mut checkpoints = load_checkpoints(store)?;
    checkpoints.extend_from_slice(published);
    checkpoints.sort_by_key(|c| c.index);
    checkpoints.dedup();
    if let Some(key) = key
        && let Some(bad) = checkpoints.iter().find(|c| !c.verify(key))
    {
        return Ok(Err(AuditBroken {
            index: bad.index,
            reason: format!(
                "the checkpoint at this entry (signed at {} ms) does not verify with the given key",
                bad.time_ms
            ),
        }));
    }
    let mut pending = checkpoints.iter().peekable();
    let mut running = [0u8; 32];
    let mut expected = 0u64;
    loop {
        let batch = store.scan_from(Space::Audit, b"", &expected.to_be_bytes(), VERIFY_BATCH)?;
        let done = batch.len() < VERIFY_BATCH;
        for (key, value) in batch {
            let broken = |reason: String| {
                Ok(Err(AuditBroken {
                    index: expected,
                    reason,
                }))
            };
            match decode_index(&key) {
                Some(index) if index == expected => {}
                Some(index) => {
                    return broken(format!(
                        "entry {expected} is missing (the next stored entry is {index})"
                    ));
                }
                None => return broken(format!("stored key of {} bytes", key.len())),
            }
            let Some((previous, stored, body)) = split_record(&value) else {
                return broken(format!("record of {} bytes is too short", value.len()));
            };
            if previous != running {
                return broken(
                    "bad link: its previous hash is not the hash of the entry before".into(),
                );
            }
            let hash = chain_hash(&running, body);
            if hash != stored {
                return broken(
                    "content altered: the hash of the entry does not match the stored hash".into(),
                );
            }
            match serde_json::from_slice::<AuditEntry>(body) {
                Ok(entry) if canonical(&entry) == body => {}
                Ok(_) => return broken("the entry is not in canonical form".into()),
                Err(e) => return broken(format!("the entry is not an audit entry: {e}")),
            }
            while let Some(checkpoint) = pending.next_if(|c| c.index == expected) {
                if checkpoint.hash != hash {
                    return broken(
                        "fork: the hash differs from the one a signed checkpoint states".into(),
                    );
                }
            }
            running = hash;
            expected += 1;
        }
        if done {
            break;
        }
    }
    if let Some(checkpoint) = pending.peek() {
        return Ok(Err(AuditBroken {
            index: expected,
            reason: format!(
                "chain truncated: it ends before entry {expected} but a checkpoint covers entries up to {}",
                checkpoint.index
            ),
        }));
    }
    Ok(Ok(VerifyReport {
        entries: expected,
        head_hash: running,
        checkpoints: u64::try_from(checkpoints.len()).unwrap_or(u64::MAX),
        signatures_checked: key.is_some(),
    }))
}

/// Whether a chain that verified as `report` reaches `head` — an entry index and its hash
/// kept outside the node (printed by `eyeflow audit head`): a chain cut before it, by a
/// truncation or by a recovery that dropped a corrupt record and everything after it, or
/// one whose entry there has another hash, is broken.
pub fn reaches(
    store: &EmbeddedStore,
    report: &VerifyReport,
    head: (u64, [u8; 32]),
) -> Result<std::result::Result<(), AuditBroken>> {
    let (index, hash) = head;
    if report.entries <= index {
        return Ok(Err(AuditBroken {
            index: report.entries,
            reason: format!(
                "chain truncated: it ends before entry {} but the head kept elsewhere is entry {index}",
                report.entries
            ),
        }));
    }
    let stored = store
        .scan_from(Space::Audit, b"", &index.to_be_bytes(), 1)?
        .into_iter()
        .next()
        .and_then(|(_, value)| split_record(&value).map(|(_, stored, _)| stored));
    if stored != Some(hash) {
        return Ok(Err(AuditBroken {
            index,
            reason: "fork: the hash of this entry differs from the head kept elsewhere".into(),
        }));
    }
    Ok(Ok(()))
}

/// The canonical bytes of `entry` (see the module documentation), written field by field
/// in key order (the same bytes as [`canonical_json`] of its serde form, without building
/// that form).
pub fn canonical(entry: &AuditEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(320 + entry.instruction_id.len());
    let mut first = true;
    let mut key = |name: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(if first { b"{\"" } else { b",\"" });
        first = false;
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    let string = |s: &str, out: &mut Vec<u8>| canonical_json_str(s, out);
    key("execution_id", &mut out);
    string(&entry.execution_id, &mut out);
    key("fallback", &mut out);
    match &entry.fallback {
        Some(fallback) => string(fallback, &mut out),
        None => out.extend_from_slice(b"null"),
    }
    key("finished_ms", &mut out);
    out.extend_from_slice(entry.finished_ms.to_string().as_bytes());
    key("input_digest", &mut out);
    string(&entry.input_digest, &mut out);
    key("instruction_id", &mut out);
    string(&entry.instruction_id, &mut out);
    key("node_id", &mut out);
    string(&entry.node_id, &mut out);
    key("opcode", &mut out);
    string(&entry.opcode, &mut out);
    key("outcome", &mut out);
    string(&entry.outcome, &mut out);
    key("output_digest", &mut out);
    string(&entry.output_digest, &mut out);
    key("program_id", &mut out);
    string(&entry.program_id, &mut out);
    key("program_version", &mut out);
    string(&entry.program_version, &mut out);
    key("started_ms", &mut out);
    out.extend_from_slice(entry.started_ms.to_string().as_bytes());
    out.push(b'}');
    out
}

/// Canonical JSON of `value`: object keys in ascending byte order, no whitespace, strings
/// escaped as the module documentation says, numbers as serde_json writes them (integers
/// in decimal; floats in their shortest round-trip form).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    eyeflow_actors::exec::canonical_json(value, &mut out);
    out
}

fn canonical_json_str(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, s);
}

fn chain_hash(previous: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(body);
    hasher.finalize().into()
}

fn payload(index: u64, hash: &[u8; 32], time_ms: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 48);
    bytes.extend_from_slice(CHECKPOINT_DOMAIN);
    bytes.extend_from_slice(&index.to_be_bytes());
    bytes.extend_from_slice(hash);
    bytes.extend_from_slice(&time_ms.to_be_bytes());
    bytes
}

fn checkpoint_write(checkpoint: &Checkpoint) -> Write {
    Write::Put(
        Space::AuditCheckpoints,
        checkpoint.index.to_be_bytes().to_vec(),
        checkpoint.to_bytes(),
    )
}

fn load_checkpoints(store: &EmbeddedStore) -> Result<Vec<Checkpoint>> {
    store
        .scan(Space::AuditCheckpoints, b"")?
        .into_iter()
        .map(|(key, value)| decode_checkpoint(&key, &value))
        .collect()
}

fn decode_checkpoint(key: &[u8], value: &[u8]) -> Result<Checkpoint> {
    Checkpoint::from_bytes(value).ok_or_else(|| Error::CorruptRecord {
        key: format!("audit-checkpoints/{}", hex::encode(key)),
        reason: "checkpoint is not 112 bytes".into(),
    })
}

fn decode_index(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// Previous hash, hash, canonical entry.
fn split_record(value: &[u8]) -> Option<([u8; 32], [u8; 32], &[u8])> {
    let (previous, rest) = value.split_first_chunk::<32>()?;
    let (hash, body) = rest.split_first_chunk::<32>()?;
    Some((*previous, *hash, body))
}

fn corrupt(key: &[u8], reason: &str) -> Error {
    Error::CorruptRecord {
        key: format!("audit/{}", hex::encode(key)),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str, fallback: Option<&str>) -> AuditEntry {
        AuditEntry {
            node_id: format!("node {text}"),
            execution_id: "x0000000000000042".into(),
            program_id: text.into(),
            program_version: "1.0.0".into(),
            instruction_id: format!("loop/3/{text}"),
            opcode: "CALL_ACTION".into(),
            input_digest: "ab".repeat(32),
            output_digest: "cd".repeat(32),
            outcome: "failed:timeout".into(),
            fallback: fallback.map(str::to_owned),
            started_ms: 0,
            finished_ms: u64::MAX,
        }
    }

    #[test]
    fn the_canonical_entry_is_the_canonical_json_of_its_serde_form() {
        for (text, fallback) in [
            ("plain", None),
            (
                "quote \" backslash \\ nl \n ctl \u{1f} del \u{7f} é 漢 /",
                Some("retry"),
            ),
            ("", Some("\u{8}\u{c}\r\t")),
        ] {
            let entry = entry(text, fallback);
            let value = serde_json::to_value(&entry).expect("serde form");
            assert_eq!(
                String::from_utf8(canonical(&entry)).expect("utf-8"),
                String::from_utf8(canonical_json(&value)).expect("utf-8")
            );
        }
    }
}
