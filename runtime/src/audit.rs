//! The embedded audit chain: [`FjallAudit`] keeps it in the `audit` keyspace of the
//! [`EmbeddedStore`] (executions' entries arrive in the journal's own writes, see
//! [`crate::journal`]); [`verify`] recomputes the whole chain and names
//! the first broken entry; signed [`Checkpoint`]s of the chain head make truncation and forks
//! detectable by anyone holding the node's public key.
//!
//! The chain, the canonical bytes of an entry and the signed checkpoints are
//! [`eyeflow_actors::chain`]'s (re-exported here); this module stores them, and [`export`]
//! writes a part of the chain as the self-contained file `eyeflow audit verify --file` checks.
//!
//! ## Stored records
//!
//! The entries of one append (an execution's entries of one journal write, say) are stored
//! as one record, a *run*. Key: the run's last entry index then its first, each 8 bytes
//! big-endian, so that records sort in chain order and the record holding entry `i` is the
//! first whose key is at least `i`'s 8 bytes. Value: the run's compact binary form
//! (`crate::records`: the hash before its first entry, then each entry with a tag of its hash,
//! the last with its whole hash; the others are recomputed on reading).
//! Earlier versions stored one entry per record under its index alone (8 bytes): `hash_{n-1}`
//! (32 bytes) ‖ `hash_n` (32 bytes) ‖ the entry, binary or canonical JSON; those still read.
//! Verification, exports and the Kafka topic use each entry's canonical form, rebuilt from
//! the binary one.
//!
//! ## Checkpoints
//!
//! Stored in the `audit-checkpoints` keyspace (key: index, 8 bytes big-endian; value:
//! [`Checkpoint::to_bytes`], 112 bytes), written every [`AuditConfig::checkpoint_every`]
//! entries when the audit has a signing key, and on demand with [`FjallAudit::checkpoint`].
//!
//! A plain hash chain detects edits but not a truncated tail: [`verify`] reports a chain
//! that ends before a stored checkpoint. Deleting the checkpoints too is detected only
//! against checkpoints published outside the node ([`verify_with`]).
//!
//! ## Compaction
//!
//! Entries covered by a checkpoint that left the node ([`FjallAudit::release`]) and older
//! than the audit window may be deleted, oldest first ([`FjallAudit::compact`]); the kept
//! chain starts right after a stored checkpoint, and [`verify`] starts from it.

use std::sync::Mutex;

use ed25519_dalek::{SigningKey, VerifyingKey};
pub use eyeflow_actors::chain::{
    AuditBroken, Checkpoint, EntryRecord, Programs, VerifyReport, canonical, canonical_json,
    operator_entry,
};
use eyeflow_actors::chain::{
    CHECKPOINT_LEN, CheckpointRecord, Header, Record, chain_hash, write_record,
};
use eyeflow_actors::ports::AuditEntry;

use crate::records::ItemHash;
use crate::store::{Durability, EmbeddedStore, Space, Write};
use crate::{Error, Result};
use eyeflow_actors::sync::Locked;

mod compact;

pub use compact::{Compacted, Release};

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
    /// No entry is stored below this index (compaction deleted them): where looking for
    /// the first stored one starts.
    first_hint: std::sync::atomic::AtomicU64,
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
                let last = expand(&key, &value)
                    .map_err(|reason| corrupt(&key, &reason))?
                    .pop()
                    .ok_or_else(|| corrupt(&key, "a record without entries"))?;
                Head {
                    next: last.index + 1,
                    hash: last.hash,
                }
            }
        };
        Ok(Self {
            store,
            config,
            head: Mutex::new(head),
            first_hint: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The number of entries and the hash of the last one (zeros when empty).
    pub fn head(&self) -> (u64, [u8; 32]) {
        let head = self.head.locked();
        (head.next, head.hash)
    }

    /// Signs and stores a checkpoint of the current head; `None` when the chain is empty.
    pub fn checkpoint(&self, key: &SigningKey) -> Result<Option<Checkpoint>> {
        let head = self.head.locked();
        let Some(index) = head.next.checked_sub(1) else {
            return Ok(None);
        };
        let checkpoint = Checkpoint::sign(index, head.hash, crate::now_ms(), key);
        self.store
            .commit([checkpoint_write(&checkpoint)], Durability::Buffered)?;
        drop(head);
        self.store.persist(self.config.durability)?;
        Ok(Some(checkpoint))
    }

    /// At most `max` entries from index `from`, in order.
    pub fn entries(&self, from: u64, max: usize) -> Result<Vec<ChainedEntry>> {
        stored(&self.store, from, max, |stored| {
            Ok(ChainedEntry {
                index: stored.index,
                hash: stored.hash,
                entry: stored.part.entry()?,
            })
        })
    }

    /// At most `max` stored entries from index `from`, in order, in canonical form: what an
    /// export and the Kafka audit topic carry.
    pub fn records(&self, from: u64, max: usize) -> Result<Vec<EntryRecord>> {
        stored(&self.store, from, max, |stored| {
            if stored.altered {
                // Its hash recomputed would hide the change from the file's verifier.
                return Err(
                    "the entry does not match the tag of its stored hash: it was \
                    changed since it was written (`eyeflow audit verify` names it)"
                        .to_owned(),
                );
            }
            Ok(EntryRecord {
                index: stored.index,
                previous: stored.previous,
                hash: stored.hash,
                body: stored.part.into_canonical()?,
            })
        })
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
        let mut writes = Vec::with_capacity(entries.len() + 2 + with.len());
        let mut receipts = Vec::with_capacity(entries.len());
        let mut hashed = Vec::with_capacity(entries.len());
        let mut runs: Vec<(&str, u64, u32)> = Vec::new();
        let mut head = self.head.locked();
        let (first, before) = (head.next, head.hash);
        let (mut index, mut previous) = (first, before);
        for (entry, body) in entries.iter().zip(bodies) {
            let hash = chain_hash(&previous, &body);
            hashed.push((entry, hash));
            // One index record per run of an execution's entries: its first index, and how
            // many follow it.
            match runs.last_mut() {
                Some((id, _, count)) if *id == entry.execution_id.as_str() => *count += 1,
                _ => runs.push((entry.execution_id.as_str(), index, 1)),
            }
            if let Some(key) = &self.config.signing_key
                && self.config.checkpoint_every > 0
                && (index + 1).is_multiple_of(self.config.checkpoint_every)
            {
                writes.push(checkpoint_write(&Checkpoint::sign(
                    index,
                    hash,
                    crate::now_ms(),
                    key,
                )));
            }
            receipts.push(AuditReceipt { index, hash });
            (index, previous) = (index + 1, hash);
        }
        if let Some(last) = index.checked_sub(1).filter(|_| !hashed.is_empty()) {
            writes.push(Write::Put(
                Space::Audit,
                run_key(first, last),
                crate::records::encode_run(&before, &hashed),
            ));
        }
        writes.extend(runs.into_iter().map(|(id, first, count)| {
            Write::Put(
                Space::AuditByExecution,
                execution_key(id, Some(first)),
                count.to_be_bytes().to_vec(),
            )
        }));
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
    /// index written with them: a record per run of its entries appended together, whose
    /// value is the run's length — 4 bytes big-endian; empty, from earlier versions, for
    /// one entry).
    pub fn of_execution(&self, execution_id: &str) -> Result<Vec<ChainedEntry>> {
        let prefix = execution_key(execution_id, None);
        let mut found = Vec::new();
        for (key, value) in self.store.scan(Space::AuditByExecution, &prefix)? {
            let (index, count) = index_run(&prefix, &key, &value)?;
            found.extend(self.entries(index, usize::try_from(count).unwrap_or(usize::MAX))?);
        }
        Ok(found)
    }
}

/// The run a per-execution index record `key` → `value` (under `prefix`) names: its first
/// entry index and how many entries it holds.
fn index_run(prefix: &[u8], key: &[u8], value: &[u8]) -> Result<(u64, u32)> {
    let count = match <[u8; 4]>::try_from(value) {
        Ok(count) => u32::from_be_bytes(count),
        Err(_) if value.is_empty() => 1,
        Err(_) => {
            return Err(Error::CorruptRecord {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: format!("audit index record of {} bytes", value.len()),
            });
        }
    };
    let index = key
        .get(prefix.len()..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::CorruptRecord {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "audit index key without an entry index".to_owned(),
        })?;
    Ok((index, count))
}

/// Recomputes the chain in `store` and checks it against its stored checkpoints (and their
/// signatures, when `key` is given). The outer error is a store failure; the inner one names
/// the first broken entry.
pub fn verify(
    store: &EmbeddedStore,
    key: Option<&VerifyingKey>,
) -> Result<std::result::Result<VerifyReport, AuditBroken>> {
    verify_with(store, key, &[], None)
}

/// [`verify`], also against `published` checkpoints kept outside the node (which detect a
/// truncation even when the stored checkpoints were deleted with the tail) and, when given,
/// against the signed `programs` the entries ran (by their program hash).
pub fn verify_with(
    store: &EmbeddedStore,
    key: Option<&VerifyingKey>,
    published: &[Checkpoint],
    programs: Option<Programs>,
) -> Result<std::result::Result<VerifyReport, AuditBroken>> {
    let mut checkpoints = load_checkpoints(store)?;
    checkpoints.extend_from_slice(published);
    // From the first kept entry: after compaction, from the checkpoint before it.
    let mut verifier = match compact::resumed_verifier(store, checkpoints, key)? {
        Ok(verifier) => verifier,
        Err(broken) => return Ok(Err(broken)),
    };
    if let Some(programs) = programs {
        verifier = verifier.with_programs(programs);
    }
    let from = verifier.expected();
    let mut broken = None;
    walk(store, from, VERIFY_BATCH, |key, value| {
        let entries = match expand(key, value) {
            Ok(entries) => entries,
            Err(reason) => {
                broken = Some(AuditBroken {
                    index: verifier.expected(),
                    reason: format!("the record cannot be read: {reason}"),
                });
                return Ok(false);
            }
        };
        // The record holding entry `from` may begin before it.
        for stored in entries.into_iter().filter(|stored| stored.index >= from) {
            let checked = match stored.part.canonical() {
                Ok(_) if stored.altered => Err(AuditBroken {
                    index: verifier.expected(),
                    reason: "content altered: the hash of the entry does not match its stored tag"
                        .to_owned(),
                }),
                Ok(body) => verifier.check(stored.index, &stored.previous, &stored.hash, &body),
                Err(reason) => Err(AuditBroken {
                    index: verifier.expected(),
                    reason: format!("the entry cannot be read: {reason}"),
                }),
            };
            if let Err(e) = checked {
                broken = Some(e);
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    if let Some(broken) = broken {
        return Ok(Err(broken));
    }
    Ok(verifier.finish())
}

/// Writes entries `from..=to` of `audit` (`to`: its last entry when `None`) to `out` as an
/// audit file — a header naming the node key `key_id`, then each entry followed by the
/// stored checkpoints of it; the checkpoint of entry `from - 1`, if any, comes first, so that
/// the hash verification starts from is signed — and returns the header written.
pub fn export(
    audit: &FjallAudit,
    from: u64,
    to: Option<u64>,
    key_id: &str,
    out: &mut impl std::io::Write,
) -> Result<Header> {
    let (next, _) = audit.head();
    let last = next.checked_sub(1).ok_or_else(|| Error::Conflict {
        what: "audit export".to_owned(),
        reason: "the audit chain is empty: nothing to export".to_owned(),
    })?;
    let to = to.unwrap_or(last);
    if from > to || to > last {
        return Err(Error::Conflict {
            what: format!("audit export of entries {from} to {to}"),
            reason: format!("the chain holds entries 0 to {last}"),
        });
    }
    let header = Header {
        key_id: key_id.to_owned(),
        from,
        entries: to - from + 1,
    };
    let written = |e: std::io::Error| Error::Io {
        path: "the audit export".into(),
        source: e,
    };
    write_record(out, &Record::Header(header.clone())).map_err(written)?;
    let first_checkpoint = from.saturating_sub(1);
    let mut checkpoints = audit
        .checkpoints_from(first_checkpoint, usize::MAX)?
        .into_iter()
        .filter(|c| c.index <= to)
        .peekable();
    let mut next = from;
    while next <= to {
        let batch = audit.records(next, VERIFY_BATCH)?;
        let Some(end) = batch.last().map(|r| r.index) else {
            break;
        };
        for record in batch.into_iter().filter(|r| r.index <= to) {
            let node_id = serde_json::from_slice::<AuditEntry>(&record.body)
                .map(|e| e.node_id)
                .unwrap_or_default();
            let index = record.index;
            // A checkpoint before the first entry exported (of entry `from - 1`) goes first.
            while let Some(checkpoint) = checkpoints.next_if(|c| c.index < index) {
                let record = CheckpointRecord {
                    node_id: String::new(),
                    checkpoint,
                };
                write_record(out, &Record::Checkpoint(record)).map_err(written)?;
            }
            write_record(out, &Record::Entry(record)).map_err(written)?;
            while let Some(checkpoint) = checkpoints.next_if(|c| c.index == index) {
                let record = CheckpointRecord {
                    node_id: node_id.clone(),
                    checkpoint,
                };
                write_record(out, &Record::Checkpoint(record)).map_err(written)?;
            }
        }
        next = end + 1;
    }
    Ok(header)
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
    let stored = stored(store, index, 1, |stored| Ok((stored.index, stored.hash)))?;
    if stored.first() != Some(&(index, hash)) {
        return Ok(Err(AuditBroken {
            index,
            reason: "fork: the hash of this entry differs from the head kept elsewhere".into(),
        }));
    }
    Ok(Ok(()))
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
        reason: format!("checkpoint is not {CHECKPOINT_LEN} bytes"),
    })
}

fn decode_index(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// The key of the run of entries `first..=last`: its last index then its first.
fn run_key(first: u64, last: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&last.to_be_bytes());
    key.extend_from_slice(&first.to_be_bytes());
    key
}

/// The first and last entry index of the record stored under `key` (an earlier version's
/// single entry: its index alone).
fn key_span(key: &[u8]) -> Option<(u64, u64)> {
    match key.len() {
        8 => decode_index(key).map(|index| (index, index)),
        16 => {
            let (last, first) = key.split_at(8);
            let (first, last) = (decode_index(first)?, decode_index(last)?);
            (first <= last).then_some((first, last))
        }
        _ => None,
    }
}

/// One entry as a stored record holds it.
struct Stored {
    index: u64,
    previous: [u8; 32],
    /// Its hash as stored, or recomputed from the entry and `previous` where a run stores
    /// only a tag of it.
    hash: [u8; 32],
    /// The recomputed hash does not begin with the stored tag: the entry changed since it
    /// was written (or the entry before it did).
    altered: bool,
    part: Part,
}

/// An entry's content as stored.
enum Part {
    /// Read from a run.
    Entry(Box<AuditEntry>),
    /// Read from a run, with the canonical JSON its hash was recomputed from.
    Hashed(Box<AuditEntry>, Vec<u8>),
    /// An earlier version's single-entry record: binary or canonical JSON.
    Single(Vec<u8>),
}

impl Part {
    fn entry(self) -> std::result::Result<AuditEntry, String> {
        match self {
            Self::Entry(entry) | Self::Hashed(entry, _) => Ok(*entry),
            Self::Single(body) => crate::records::decode_entry(&body),
        }
    }

    /// [`Part::canonical`], owned (without a copy when it is already made).
    fn into_canonical(self) -> std::result::Result<Vec<u8>, String> {
        match self {
            Self::Hashed(_, body) => Ok(body),
            other => other.canonical().map(std::borrow::Cow::into_owned),
        }
    }

    /// The canonical JSON the chain hashes.
    fn canonical(&self) -> std::result::Result<std::borrow::Cow<'_, [u8]>, String> {
        match self {
            Self::Entry(entry) => Ok(std::borrow::Cow::Owned(canonical(entry))),
            Self::Hashed(_, body) => Ok(std::borrow::Cow::Borrowed(body)),
            Self::Single(body) => crate::records::canonical_entry(body),
        }
    }
}

/// A stored record as read, its hashes not yet recomputed.
enum Unpacked {
    /// An earlier version's single-entry record.
    Single {
        index: u64,
        previous: [u8; 32],
        hash: [u8; 32],
        body: Vec<u8>,
    },
    /// A run of entries from `first`, the first chained to `previous`.
    Run {
        first: u64,
        previous: [u8; 32],
        items: Vec<(ItemHash, AuditEntry)>,
    },
}

/// The record `key` → `value`; why it cannot be read otherwise.
fn unpack(key: &[u8], value: &[u8]) -> std::result::Result<Unpacked, String> {
    let (first, last) =
        key_span(key).ok_or_else(|| format!("stored key of {} bytes", key.len()))?;
    if key.len() == 8 {
        let (previous, rest) = value
            .split_first_chunk::<32>()
            .and_then(|(previous, rest)| Some((previous, rest.split_first_chunk::<32>()?)))
            .ok_or_else(|| format!("record of {} bytes is too short", value.len()))?;
        let (hash, body) = rest;
        return Ok(Unpacked::Single {
            index: first,
            previous: *previous,
            hash: *hash,
            body: body.to_vec(),
        });
    }
    let (previous, items) = crate::records::decode_run(value)?;
    if u64::try_from(items.len()).ok() != (last - first).checked_add(1) {
        return Err(format!(
            "its key names entries {first} to {last} and it holds {}",
            items.len()
        ));
    }
    Ok(Unpacked::Run {
        first,
        previous,
        items,
    })
}

/// The entries of the record `key` → `value` with their indexes, in order, without their
/// hashes (a run's are recomputed only when asked: [`expand`]).
fn entries_of(key: &[u8], value: &[u8]) -> std::result::Result<Vec<(u64, AuditEntry)>, String> {
    match unpack(key, value)? {
        Unpacked::Single { index, body, .. } => {
            Ok(vec![(index, crate::records::decode_entry(&body)?)])
        }
        Unpacked::Run { first, items, .. } => Ok((first..)
            .zip(items)
            .map(|(index, (_, entry))| (index, entry))
            .collect()),
    }
}

/// The entries of the record `key` → `value`, in order, each with its hash (recomputed
/// where a run stores a tag); why it cannot be read otherwise.
fn expand(key: &[u8], value: &[u8]) -> std::result::Result<Vec<Stored>, String> {
    let (first, mut previous, items) = match unpack(key, value)? {
        Unpacked::Single {
            index,
            previous,
            hash,
            body,
        } => {
            return Ok(vec![Stored {
                index,
                previous,
                hash,
                altered: false,
                part: Part::Single(body),
            }]);
        }
        Unpacked::Run {
            first,
            previous,
            items,
        } => (first, previous, items),
    };
    Ok(items
        .into_iter()
        .zip(first..)
        .map(|((stored, entry), index)| {
            let (hash, altered, part) = match stored {
                ItemHash::Whole(hash) => (hash, false, Part::Entry(Box::new(entry))),
                ItemHash::Tag(tag) => {
                    // Its canonical form, made to recompute the hash, is kept for whoever
                    // verifies, exports or publishes the entry next.
                    let body = canonical(&entry);
                    let hash = chain_hash(&previous, &body);
                    let altered = hash[..tag.len()] != tag;
                    (hash, altered, Part::Hashed(Box::new(entry), body))
                }
            };
            let stored = Stored {
                index,
                previous,
                hash,
                altered,
                part,
            };
            previous = hash;
            stored
        })
        .collect())
}

/// Calls `visit` with each stored record's key and value ([`expand`] or [`entries_of`] read
/// it), in chain order from the record holding entry `from`, until it returns `false` or the
/// records end. Reads `records` records per store scan (at most [`VERIFY_BATCH`]): as many
/// as the caller expects to visit.
fn walk(
    store: &EmbeddedStore,
    from: u64,
    records: usize,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    let records = records.clamp(1, VERIFY_BATCH);
    let mut next = from;
    loop {
        let batch = store.scan_from(Space::Audit, b"", &next.to_be_bytes(), records)?;
        let done = batch.len() < records;
        for (key, value) in batch {
            let after = key_span(&key).and_then(|(_, last)| last.checked_add(1));
            if !visit(&key, &value)? {
                return Ok(());
            }
            match after {
                Some(after) => next = after,
                None => return Ok(()),
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// `read` of each of at most `max` stored entries from index `from`, in order; what it
/// cannot read is a corrupt record.
fn stored<T>(
    store: &EmbeddedStore,
    from: u64,
    max: usize,
    read: impl Fn(Stored) -> std::result::Result<T, String>,
) -> Result<Vec<T>> {
    gather(
        store,
        from,
        max,
        |key, value| {
            let entries = expand(key, value)?;
            Ok(entries.into_iter().map(|s| (s.index, s)).collect())
        },
        |_, stored| read(stored),
    )
}

/// `read` of each of at most `max` entries from index `from` (with its index), in order, as
/// `unpack` gives them with their indexes from each record; what it cannot read is a corrupt
/// record.
fn gather<E, T>(
    store: &EmbeddedStore,
    from: u64,
    max: usize,
    unpack: impl Fn(&[u8], &[u8]) -> std::result::Result<Vec<(u64, E)>, String>,
    read: impl Fn(u64, E) -> std::result::Result<T, String>,
) -> Result<Vec<T>> {
    let mut found = Vec::new();
    if max == 0 {
        return Ok(found);
    }
    // Every record holds at least one entry: `max` records hold the entries wanted.
    walk(store, from, max, |key, value| {
        let entries = unpack(key, value).map_err(|reason| corrupt(key, &reason))?;
        for (index, entry) in entries.into_iter().filter(|(index, _)| *index >= from) {
            found.push(read(index, entry).map_err(|reason| Error::CorruptRecord {
                key: format!("audit/{index}"),
                reason,
            })?);
            if found.len() == max {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    Ok(found)
}

fn corrupt(key: &[u8], reason: &str) -> Error {
    Error::CorruptRecord {
        key: format!("audit/{}", hex::encode(key)),
        reason: reason.to_owned(),
    }
}
