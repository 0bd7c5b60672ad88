//! The embedded store: one fjall database under the node's data directory, one keyspace per
//! concern. Writes that acknowledge something to a caller are persisted with `SyncData`
//! before the call returns.
//!
//! ## Durability and group commit
//!
//! [`EmbeddedStore::commit`] applies a set of writes atomically (one fjall write batch) and
//! then makes them durable according to a [`Durability`]:
//!
//! - [`Durability::Sync`]: the caller fsyncs the fjall journal (`PersistMode::SyncData`)
//!   itself, once per call;
//! - [`Durability::GroupCommit`]: callers that commit at the same time share one fsync. Each
//!   commit takes a ticket once its batch reached the fjall journal; the first caller that
//!   finds no fsync in progress becomes the *leader*: it waits (at most 1 ms) for the
//!   group-commit writes already under way to take their tickets, fsyncs everything written
//!   so far and wakes the *followers* whose tickets that fsync covered; the others wait on
//!   a condition variable. Every call still returns only once its own data is fsynced (or
//!   with the fsync's error);
//! - [`Durability::Buffered`]: no fsync (the write reaches the OS only): for benchmarks and
//!   data that may be lost on power failure.
//!
//! [`EmbeddedStore::write`] applies a set of writes atomically without flushing them: they
//! are visible to readers at once and reach the OS (and the disk) with the next commit or
//! [`EmbeddedStore::persist`] that flushes — every other write path does. The fjall journal
//! is one sequential log, so a flush covers every write before it: a crash loses a suffix
//! of lazy writes, never one in the middle. This is how the records that a durable record
//! follows right away (a journal step's audit entry, a plugin's KV writes before its
//! CALL_ACTION step, steps the executor may re-run) cost no system call of their own.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use eyeflow_ir::Keyring;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};
use eyeflow_actors::sync::{Locked, Waits};

pub mod mark;

/// Every keyspace, in [`Space`] discriminant order, with its on-disk name.
const KEYSPACES: [(Space, &str); 25] = [
    (Space::Catalog, "catalog"),
    (Space::Grants, "grants"),
    (Space::Keyring, "keyring"),
    (Space::PluginKv, "plugin-kv"),
    (Space::JournalEvents, "journal-events"),
    (Space::JournalExecutions, "journal-executions"),
    (Space::JournalOpen, "journal-open"),
    (Space::JournalSteps, "journal-steps"),
    (Space::JournalDecisions, "journal-decisions"),
    (Space::JournalOutcomes, "journal-outcomes"),
    (Space::Audit, "audit"),
    (Space::AuditCheckpoints, "audit-checkpoints"),
    (Space::ClusterLatest, "cluster-latest"),
    (Space::ClusterHistory, "cluster-history"),
    (Space::Events, "events"),
    (Space::EventKeys, "event-keys"),
    (Space::KafkaOutbox, "kafka-outbox"),
    (Space::KafkaOutboxKeys, "kafka-outbox-keys"),
    (Space::KafkaCursors, "kafka-cursors"),
    (Space::SourceCursors, "source-cursors"),
    (Space::AuditByExecution, "audit-by-execution"),
    (Space::Publishers, "publishers"),
    (Space::JournalQuarantine, "journal-quarantine"),
    (Space::RetentionDedupe, "retention-dedupe"),
    (Space::AuditReleased, "audit-released"),
];

// `EmbeddedStore::space` indexes `spaces` by discriminant: keep `KEYSPACES` in that order.
const _: () = {
    let mut i = 0;
    while i < KEYSPACES.len() {
        assert!(KEYSPACES[i].0 as usize == i);
        i += 1;
    }
};

/// The node's embedded database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Database,
    root: PathBuf,
    spaces: Arc<[Keyspace]>,
    group: Arc<GroupSync>,
}

/// One keyspace of the store, by concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Installed plugin versions (id, version, state).
    Catalog,
    /// Operator grants per plugin id.
    Grants,
    /// Trusted and revoked publisher keys.
    Keyring,
    /// Plugins' scratch key-value data.
    PluginKv,
    /// Journal: event id → execution id (the dedupe index).
    JournalEvents,
    /// Journal: execution id → accepted event and acceptance sequence.
    JournalExecutions,
    /// Journal: ids of accepted, unfinished executions.
    JournalOpen,
    /// Journal: `execution_id/seq` (seq zero-padded to 20 digits) → step record.
    JournalSteps,
    /// Journal: `execution_id/instruction_id` → human decision.
    JournalDecisions,
    /// Journal: execution id → how it ended.
    JournalOutcomes,
    /// Audit chain: big-endian entry index → hashes and canonical entry.
    Audit,
    /// Audit chain: big-endian entry index → signed checkpoint of the chain head.
    AuditCheckpoints,
    /// Cluster memory (L3): key → latest value.
    ClusterLatest,
    /// Cluster memory (L3): `key/seq` → every value ever put.
    ClusterHistory,
    /// Emitted events, by topic and offset.
    Events,
    /// Emitted events: idempotency key → where the event landed.
    EventKeys,
    /// Kafka outbox: sequence number (8 bytes big-endian) → record not yet published.
    KafkaOutbox,
    /// Kafka outbox: idempotency key → sequence number it was appended under.
    KafkaOutboxKeys,
    /// Kafka publication cursors (how far the audit chain is published).
    KafkaCursors,
    /// Event sources: `program/trigger index` → the cursor of a polled plugin source.
    SourceCursors,
    /// Audit chain: `execution id ‖ 0 ‖ big-endian index` → nothing (which entries an
    /// execution has).
    AuditByExecution,
    /// Plugin id → the publisher key pinned for it (at first install or by a transfer).
    Publishers,
    /// Journal: `keyspace/key` → a record that could not be read back, moved aside with its
    /// execution marked failed.
    JournalQuarantine,
    /// Retention: finish time (8 bytes big-endian, Unix ms) ‖ event id → execution id: the
    /// dedupe entries kept after their execution was deleted, until the dedupe window ends.
    RetentionDedupe,
    /// Audit chain: big-endian checkpoint index → how that signed checkpoint left the node
    /// (`export`, `kafka`, `operator`): what audit compaction may delete up to.
    AuditReleased,
}

/// How a commit is made durable before it returns (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// One fsync per call.
    Sync,
    /// Concurrent callers share one fsync; each still returns only after its data is
    /// fsynced.
    #[default]
    GroupCommit,
    /// No fsync: the data reaches the OS, not necessarily the disk.
    Buffered,
}

/// One write of an atomic [`EmbeddedStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Store `value` under `key`.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Remove(Space, Vec<u8>),
}

/// The group-commit state shared by every clone of a store.
#[derive(Default)]
struct GroupSync {
    state: Mutex<GroupState>,
    /// Signalled when an fsync ends.
    synced: Condvar,
    /// Signalled when a group-commit write reaches the journal.
    written: Condvar,
    /// Tasks waiting for an fsync ([`EmbeddedStore::commit_with_async`]) are woken here
    /// when one ends.
    synced_tasks: tokio::sync::Notify,
    /// Records how far each fsync reached (see [`mark`]).
    mark: Mutex<Option<mark::MarkWriter>>,
}

#[derive(Default)]
struct GroupState {
    /// Last ticket handed out (tickets start at 1).
    issued: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A leader is fsyncing.
    syncing: bool,
    /// The last failed fsync: tickets up to `.0` get its message.
    failed: Option<(u64, String)>,
    /// Group-commit writes begun, and ended (written, or failed).
    begun: u64,
    ended: u64,
    /// A leader waits for the writes begun to end (signal `written` when one ends).
    gathering: bool,
}

impl GroupState {
    /// How the fsync `ticket` waits for ended, once one covering it has: done, or the
    /// error of the failed fsync (fjall poisons the database when an fsync fails: later
    /// writes fail too).
    fn settled(&self, ticket: u64) -> Option<Result<()>> {
        if self.durable >= ticket {
            return Some(Ok(()));
        }
        let (upto, message) = self.failed.as_ref()?;
        (*upto >= ticket).then(|| {
            Err(Error::Store {
                context: format!("group commit: the shared fsync failed ({message})"),
                source: fjall::Error::Poisoned,
            })
        })
    }
}

/// How long a leader waits for the writes already under way to join its fsync.
const GATHER: Duration = Duration::from_millis(1);

impl GroupSync {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.locked()
    }
}

/// How much the store holds before it writes tables and lets go of its journal files: the
/// bounds of what sits in memory and in journals on disk besides the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSizes {
    /// Most bytes of journal files kept (at least [`StoreSizes::MIN_JOURNAL_BYTES`]): past
    /// it, the memtables the oldest journal holds are written as tables and it is deleted.
    pub journal_bytes: u64,
    /// Bytes a keyspace holds in memory before writing them as a table (at least
    /// [`StoreSizes::MIN_MEMTABLE_BYTES`]).
    pub memtable_bytes: u64,
}

impl StoreSizes {
    /// The smallest journal budget fjall accepts.
    pub const MIN_JOURNAL_BYTES: u64 = 64 << 20;
    /// The smallest memtable accepted.
    pub const MIN_MEMTABLE_BYTES: u64 = 1 << 20;

    /// `self`, or what is out of bounds in words.
    pub fn checked(self) -> std::result::Result<Self, String> {
        if self.journal_bytes < Self::MIN_JOURNAL_BYTES {
            return Err(format!(
                "the journal budget is {} MiB; it must be at least {} MiB",
                self.journal_bytes >> 20,
                Self::MIN_JOURNAL_BYTES >> 20
            ));
        }
        if self.memtable_bytes < Self::MIN_MEMTABLE_BYTES {
            return Err(format!(
                "the memtable size is {} bytes; it must be at least {} MiB",
                self.memtable_bytes,
                Self::MIN_MEMTABLE_BYTES >> 20
            ));
        }
        Ok(self)
    }
}

impl Default for StoreSizes {
    /// 64 MiB of journals (fjall's least) and 8 MiB per memtable, where fjall's own
    /// defaults are 512 and 64: on a 2-minute soak at the saturated rate with retention,
    /// the data directory peaked at 434 MiB instead of 1,260 and the process at 330 MB
    /// instead of 783, for ≈ 5 % fewer completed executions per second (docs/runtime.md).
    fn default() -> Self {
        Self {
            journal_bytes: Self::MIN_JOURNAL_BYTES,
            memtable_bytes: 8 << 20,
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `data_dir/store` with the default
    /// [`StoreSizes`], refusing it with [`Error::StoreDamaged`] when recovery lost records
    /// that were durable (see [`mark`]).
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_sized(data_dir, StoreSizes::default())
    }

    /// [`EmbeddedStore::open`] with `sizes` (refused with [`Error::BadConfig`] when out of
    /// bounds).
    pub fn open_sized(data_dir: &Path, sizes: StoreSizes) -> Result<Self> {
        let (store, damage) = Self::open_checked(data_dir, sizes, false)?;
        debug_assert!(damage.is_none());
        Ok(store)
    }

    /// Opens the store accepting what recovery lost: the store and, when something was
    /// lost, what (in words, with positions) and where the journal files as they were are
    /// kept. For an operator's explicit repair only; the mark restarts from the store as
    /// it is now.
    pub fn open_repairing(data_dir: &Path) -> Result<(Self, Option<(String, PathBuf)>)> {
        Self::open_checked(data_dir, StoreSizes::default(), true)
    }

    fn open_checked(
        data_dir: &Path,
        sizes: StoreSizes,
        accept_damage: bool,
    ) -> Result<(Self, Option<(String, PathBuf)>)> {
        let sizes = sizes.checked().map_err(|reason| Error::BadConfig {
            what: "store sizes".to_owned(),
            reason,
        })?;
        secure_data_dir(data_dir)?;
        let path = data_dir.join("store");
        // Checked before anything touches the store's files: the copies of its journals
        // taken for recovery below belong to the process that holds it.
        refuse_locked(data_dir, &path)?;
        let mut damage = Vec::new();
        let marked = match mark::read(data_dir) {
            Err(Error::StoreDamaged { damage: what, .. }) if accept_damage => {
                damage.push(what);
                None
            }
            other => other?,
        };
        let before = mark::journals(&path)?;
        let preserved = mark::Preserved::take(data_dir, &path, &before)?;
        let db = match Database::builder(&path)
            .max_journaling_size(sizes.journal_bytes)
            .open()
        {
            Ok(db) => db,
            Err(fjall::Error::Locked) => {
                let _ = preserved.discard();
                return Err(Error::Locked {
                    data_dir: data_dir.to_path_buf(),
                });
            }
            Err(e) => {
                // fjall refuses before it cuts anything.
                let _ = preserved.discard();
                let context = if matches!(e, fjall::Error::JournalRecovery(_)) {
                    format!(
                        "open {}: a record of the store's journal is corrupt and the store \
                         refuses to recover past it; restore the data directory from a backup",
                        path.display()
                    )
                } else {
                    format!("open {}", path.display())
                };
                return Err(Error::store(context)(e));
            }
        };
        let spaces = KEYSPACES
            .iter()
            .map(|(_, name)| {
                db.keyspace(name, || {
                    KeyspaceCreateOptions::default().max_memtable_size(sizes.memtable_bytes)
                })
                .map_err(Error::store(format!("open keyspace {name}")))
            })
            .collect::<Result<Arc<[Keyspace]>>>()?;
        let store = Self {
            spaces,
            db,
            root: data_dir.to_path_buf(),
            group: Arc::default(),
        };
        if let Some(marked) = marked {
            let (space, key) = mark::key(marked);
            let cuts = mark::cuts(&before, &mark::journals(&path)?);
            let stored = store
                .scan_from(space, &key, &key, 1)?
                .into_iter()
                .next()
                .map(|(_, value)| value);
            damage.extend(mark::damage(marked, stored.as_deref(), &cuts));
        }
        let damage = if damage.is_empty() {
            preserved.discard()?;
            None
        } else {
            let kept = preserved.keep(data_dir)?;
            let what = damage.join("; ");
            if !accept_damage {
                return Err(Error::StoreDamaged {
                    data_dir: data_dir.to_path_buf(),
                    damage: format!(
                        "{what}; the journal files as they were are kept in {}",
                        kept.display()
                    ),
                });
            }
            Some((what, kept))
        };
        if damage.is_some() {
            // Repaired: the mark restarts from the store as it is now.
            let old = data_dir.join(mark::MARK_FILE);
            std::fs::remove_file(&old).map_err(Error::io(&old))?;
        }
        let writer = mark::MarkWriter::open(data_dir, marked.filter(|_| damage.is_none()))?;
        *store.group.mark.locked() = Some(writer);
        if damage.is_some() {
            store.sync()?;
        }
        Ok((store, damage))
    }

    /// The data directory this store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    fn space(&self, space: Space) -> &Keyspace {
        // `spaces` holds one keyspace per `Space`, in discriminant order (see `KEYSPACES`).
        &self.spaces[space as usize]
    }

    /// Raw value under `key`.
    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .space(space)
            .get(key)
            .map_err(Error::store(format!("read {space:?}")))?
            .map(|v| v.to_vec()))
    }

    /// Stores `value` under `key` and persists it durably before returning.
    pub fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<()> {
        self.space(space)
            .insert(key, value)
            .map_err(Error::store(format!("write {space:?}")))?;
        self.sync()
    }

    /// Removes `key` (durably).
    pub fn remove(&self, space: Space, key: &[u8]) -> Result<()> {
        self.space(space)
            .remove(key)
            .map_err(Error::store(format!("delete {space:?}")))?;
        self.sync()
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan(&self, space: Space, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.space(space)
            .prefix(prefix)
            .map(|guard| {
                let (k, v) = guard
                    .into_inner()
                    .map_err(Error::store(format!("scan {space:?}")))?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// A JSON record under `key`.
    pub fn get_json<T: DeserializeOwned>(&self, space: Space, key: &str) -> Result<Option<T>> {
        self.get(space, key.as_bytes())?
            .map(|bytes| decode_json(key, &bytes))
            .transpose()
    }

    /// Stores a JSON record under `key` durably.
    pub fn put_json<T: Serialize>(&self, space: Space, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::CorruptRecord {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        self.put(space, key.as_bytes(), &bytes)
    }

    /// Every JSON record whose key starts with `prefix`.
    pub fn scan_json<T: DeserializeOwned>(&self, space: Space, prefix: &str) -> Result<Vec<T>> {
        self.scan(space, prefix.as_bytes())?
            .into_iter()
            .map(|(k, v)| decode_json(&String::from_utf8_lossy(&k), &v))
            .collect()
    }

    /// fdatasync of everything written so far, through fjall's own `persist(SyncData)`
    /// (its public API: no reliance on how fjall names or rotates its journal files). fjall
    /// holds its journal lock through the fsync, so writers wait for it meanwhile; measured
    /// against fsyncing the journal file outside that lock (docs/runtime.md, "Speed"), group
    /// commit was as fast either way, and only the one-fsync-per-write measurement mode
    /// ([`Durability::Sync`]) was slower. A failed fsync poisons fjall's database: every
    /// later write fails, as it must after a lost writeback.
    fn sync(&self) -> Result<()> {
        // The audit chain's last record now is flushed below: the mark of this fsync.
        let marked = self
            .last(Space::Audit, b"")?
            .and_then(|(key, value)| mark::Mark::of(&key, &value));
        self.db
            .persist(PersistMode::SyncData)
            .map_err(Error::store("fsync"))?;
        if let Some(marked) = marked
            && let Some(writer) = self.group.mark.locked().as_mut()
            && let Err(e) = writer.record(marked)
        {
            // The data is durable; only the next open's check of it is weaker.
            tracing::warn!("cannot record the store's mark: {e}");
        }
        Ok(())
    }

    fn batch(&self, writes: impl IntoIterator<Item = Write>) -> fjall::OwnedWriteBatch {
        let mut batch = self.db.batch();
        for write in writes {
            match write {
                Write::Put(space, key, value) => batch.insert(self.space(space), key, value),
                Write::Remove(space, key) => batch.remove(self.space(space), key),
            }
        }
        batch
    }

    /// Applies `writes` atomically (all or none survive a crash) without flushing them: they
    /// reach the OS and the disk with the next flushing commit or persist (see the module
    /// documentation). For records that a durable one follows, or that may be lost.
    pub fn write(&self, writes: impl IntoIterator<Item = Write>) -> Result<()> {
        self.batch(writes)
            .durability(None)
            .commit()
            .map_err(Error::store("write"))
    }

    /// Applies `writes` atomically (all or none survive a crash), then makes them durable
    /// as `durability` says before returning.
    pub fn commit(
        &self,
        writes: impl IntoIterator<Item = Write>,
        durability: Durability,
    ) -> Result<()> {
        let batch = self.batch(writes);
        self.commit_with(durability, || {
            batch
                .durability(None)
                .commit()
                .map_err(Error::store("commit"))
        })
    }

    /// Runs `write` — which writes to this store without flushing, e.g. [`Self::write`]
    /// under a lock of its own — then makes everything written so far durable as
    /// `durability` says. Under group commit the write is announced first, so that a
    /// leader about to fsync waits (briefly) for it to join.
    pub fn commit_with<T>(
        &self,
        durability: Durability,
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if durability != Durability::GroupCommit {
            let value = write()?;
            self.persist(durability)?;
            return Ok(value);
        }
        // Announce the write so that a leader about to fsync waits for it. The batch is not
        // flushed here: the leader's fsync flushes everything written before it.
        self.group.lock().begun += 1;
        let written = write();
        let mut state = self.group.lock();
        state.ended += 1;
        if state.gathering {
            self.group.written.notify_all();
        }
        let value = written?;
        self.wait_durable(state)?;
        Ok(value)
    }

    /// Makes everything written so far durable as `durability` says (for
    /// [`Durability::Buffered`]: flushed to the OS).
    pub fn persist(&self, durability: Durability) -> Result<()> {
        match durability {
            Durability::Sync => self.sync(),
            Durability::GroupCommit => self.wait_durable(self.group.lock()),
            Durability::Buffered => self
                .db
                .persist(PersistMode::Buffer)
                .map_err(Error::store("flush")),
        }
    }

    /// Group commit: takes a ticket for everything written so far and waits until an fsync
    /// covers it, leading that fsync when none is in progress.
    fn wait_durable<'a>(&'a self, mut state: MutexGuard<'a, GroupState>) -> Result<()> {
        let group = &self.group;
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if let Some(settled) = state.settled(ticket) {
                return settled;
            }
            if !state.syncing {
                state.syncing = true;
                return self.lead(state);
            }
            state = group.synced.waiting(state);
        }
    }

    /// Leads one group fsync (the caller set `syncing`): lets the writes already under way
    /// reach the journal and take their tickets, so that this fsync covers them too (a
    /// bounded wait), fsyncs, records how far it reached and wakes every waiter — threads
    /// and tasks.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, GroupState>) -> Result<()> {
        let group = &self.group;
        let goal = state.begun;
        let deadline = Instant::now() + GATHER;
        while state.ended < goal {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state.gathering = true;
            state = group.written.waiting_for(state, left);
        }
        state.gathering = false;
        // Every ticket issued so far was taken after its write reached the journal.
        let target = state.issued;
        drop(state);
        let result = self.sync();
        let mut state = group.lock();
        state.syncing = false;
        match &result {
            Ok(()) => state.durable = state.durable.max(target),
            Err(e) => state.failed = Some((target, e.to_string())),
        }
        drop(state);
        group.synced.notify_all();
        group.synced_tasks.notify_waiters();
        result
    }

    /// [`Self::commit_with`] for a task: the write is applied at once, and the task then
    /// waits for the fsync that covers it without holding its thread — under group commit
    /// the fsync is led by a waiting thread or, when only tasks wait, on a thread of the
    /// runtime's blocking pool. [`Durability::Sync`] (one fsync per call, for measurement)
    /// blocks in place.
    pub async fn commit_with_async<T>(
        &self,
        durability: Durability,
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match durability {
            Durability::Buffered => self.commit_with(durability, write),
            Durability::Sync => crate::blocking::run(|| self.commit_with(durability, write)),
            Durability::GroupCommit => {
                self.group.lock().begun += 1;
                let written = write();
                let ticket = {
                    let mut state = self.group.lock();
                    state.ended += 1;
                    if state.gathering {
                        self.group.written.notify_all();
                    }
                    state.issued += 1;
                    state.issued
                };
                let value = written?;
                self.durable_async(ticket).await?;
                Ok(value)
            }
        }
    }

    /// [`Self::persist`] for a task: under group commit it waits for the fsync without
    /// holding its thread; [`Durability::Sync`] blocks in place.
    pub async fn persist_async(&self, durability: Durability) -> Result<()> {
        match durability {
            Durability::GroupCommit => {
                let ticket = {
                    let mut state = self.group.lock();
                    state.issued += 1;
                    state.issued
                };
                self.durable_async(ticket).await
            }
            Durability::Sync => crate::blocking::run(|| self.persist(durability)),
            Durability::Buffered => self.persist(durability),
        }
    }

    /// Waits (as a task) until an fsync covers `ticket`, starting one on the blocking pool
    /// when none is in progress.
    async fn durable_async(&self, ticket: u64) -> Result<()> {
        loop {
            // Registered before looking, so an fsync ending in between wakes this task.
            let synced = self.group.synced_tasks.notified();
            tokio::pin!(synced);
            synced.as_mut().enable();
            {
                let mut state = self.group.lock();
                if let Some(settled) = state.settled(ticket) {
                    return settled;
                }
                if !state.syncing {
                    state.syncing = true;
                    drop(state);
                    let store = self.clone();
                    // Its outcome reaches this task (and every other waiter) through the
                    // group state.
                    drop(tokio::task::spawn_blocking(move || {
                        let state = store.group.lock();
                        let _ = store.lead(state);
                    }));
                }
            }
            synced.await;
        }
    }

    /// Frees the disk space of records of `space` with keys below `below` that were
    /// deleted: drops the tables whose every key is below it (records still in memory or
    /// in a table that also holds later keys stay until fjall's compaction merges them).
    /// Only for keys whose removal is already durable — the dropped tables do not come
    /// back, whatever the journal holds — and never read again. Uses fjall's tree directly
    /// (`Keyspace::tree`, hidden in fjall's docs): fjall is pinned to one version, and
    /// `store::tests::dropping_deleted_tables_frees_their_space_and_keeps_the_rest`
    /// checks it.
    pub fn drop_deleted_below(&self, space: Space, below: &[u8]) -> Result<()> {
        use fjall::AbstractTree as _;
        self.space(space)
            .tree
            .drop_range::<&[u8], _>(..below)
            .map_err(|e| Error::store(format!("drop tables of {space:?}"))(e.into()))
    }

    /// The last `(key, value)` whose key starts with `prefix`.
    pub fn last(&self, space: Space, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.space(space)
            .prefix(prefix)
            .next_back()
            .map(|guard| {
                let (k, v) = guard
                    .into_inner()
                    .map_err(Error::store(format!("scan {space:?}")))?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .transpose()
    }

    /// At most `max` `(key, value)` pairs with `from <= key` and key starting with
    /// `prefix`, in key order.
    pub fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        from: &[u8],
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.space(space)
            .range(from..)
            .map(|guard| {
                guard
                    .into_inner()
                    .map_err(Error::store(format!("scan {space:?}")))
            })
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(max)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect()
    }

    /// At most `max` `(key, value)` pairs with `from <= key < to`, in key order.
    pub fn scan_range(
        &self,
        space: Space,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.space(space)
            .range(from..to)
            .take(max)
            .map(|guard| {
                guard
                    .into_inner()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(Error::store(format!("scan {space:?}")))
            })
            .collect()
    }

    /// Hands `each`, a page of at most `page` keys at a time, the keys `prefix ‖ id ‖ /…`
    /// of `space` whose id is one of `ids` (sorted), read by range scans from the first id
    /// to the last: the keys of other ids in between are left alone. Returns how many keys
    /// it handed.
    pub fn keys_of_ids(
        &self,
        space: Space,
        prefix: &[u8],
        ids: &[&str],
        page: usize,
        mut each: impl FnMut(Vec<Vec<u8>>) -> Result<()>,
    ) -> Result<u64> {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(0);
        };
        let page = page.max(1);
        let mut from = [prefix, first.as_bytes(), b"/"].concat();
        // Past every key of `last`: `/` + 1.
        let to = [prefix, last.as_bytes(), b"0"].concat();
        let mut handed = 0;
        loop {
            let found = self.scan_range(space, &from, &to, page)?;
            let Some((end, _)) = found.last() else {
                return Ok(handed);
            };
            from = [end.as_slice(), &[0]].concat();
            let full = found.len() == page;
            let keys: Vec<Vec<u8>> = found
                .into_iter()
                .map(|(key, _)| key)
                .filter(|key| {
                    key.get(prefix.len()..)
                        .and_then(|rest| rest.split(|b| *b == b'/').next())
                        .and_then(|id| std::str::from_utf8(id).ok())
                        .is_some_and(|id| ids.binary_search(&id).is_ok())
                })
                .collect();
            if !keys.is_empty() {
                handed += keys.len() as u64;
                each(keys)?;
            }
            if !full {
                return Ok(handed);
            }
        }
    }

    /// The `(key, value)` pairs of `space` with key below `before` (every pair when `None`),
    /// highest key first, read lazily: a caller that stops early reads no further.
    pub fn iter_back(
        &self,
        space: Space,
        before: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<> {
        let upper = before.map_or(std::ops::Bound::Unbounded, |key| {
            std::ops::Bound::Excluded(key.to_vec())
        });
        self.space(space)
            .range::<Vec<u8>, _>((std::ops::Bound::Unbounded, upper))
            .rev()
            .map(move |guard| {
                guard
                    .into_inner()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(Error::store(format!("scan {space:?}")))
            })
    }

    /// The number of records in `space` (a full scan).
    pub fn count(&self, space: Space) -> Result<u64> {
        let len = self
            .space(space)
            .len()
            .map_err(Error::store(format!("count {space:?}")))?;
        Ok(u64::try_from(len).unwrap_or(u64::MAX))
    }

    /// `f` folded over the values of `space` in key order (a full scan, read lazily).
    pub fn fold<T>(&self, space: Space, init: T, mut f: impl FnMut(T, &[u8]) -> T) -> Result<T> {
        let mut acc = init;
        for guard in self.space(space).iter() {
            let value = guard
                .value()
                .map_err(Error::store(format!("scan {space:?}")))?;
            acc = f(acc, &value);
        }
        Ok(acc)
    }

    /// The keyring persisted in this store.
    pub fn keyring(&self) -> Result<Keyring> {
        let mut keyring = Keyring::new();
        for (id, value) in self.scan(Space::Keyring, b"")? {
            let id = String::from_utf8_lossy(&id).into_owned();
            let corrupt = |reason: &str| Error::CorruptRecord {
                key: format!("keyring/{id}"),
                reason: reason.to_owned(),
            };
            let (key, revoked) = value
                .split_at_checked(32)
                .ok_or_else(|| corrupt("short record"))?;
            let key = <[u8; 32]>::try_from(key).map_err(|_| corrupt("bad key length"))?;
            let key = VerifyingKey::from_bytes(&key).map_err(|_| corrupt("not an Ed25519 key"))?;
            keyring.trust(key);
            if revoked.first() == Some(&1) {
                keyring.revoke(&id);
            }
        }
        Ok(keyring)
    }

    /// Adds `key` to the persisted keyring and returns its id (a revoked key stays revoked).
    pub fn trust_key(&self, key: &VerifyingKey) -> Result<String> {
        let id = eyeflow_ir::keys::key_id(key);
        if self.get(Space::Keyring, id.as_bytes())?.is_none() {
            let mut record = key.to_bytes().to_vec();
            record.push(0);
            self.put(Space::Keyring, id.as_bytes(), &record)?;
        }
        Ok(id)
    }

    /// Marks key `id` revoked; returns false when the keyring does not hold it.
    pub fn revoke_key(&self, id: &str) -> Result<bool> {
        let Some(mut record) = self.get(Space::Keyring, id.as_bytes())? else {
            return Ok(false);
        };
        record.truncate(32);
        record.push(1);
        self.put(Space::Keyring, id.as_bytes(), &record)?;
        Ok(true)
    }
}

fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptRecord {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// [`Error::Locked`] when another handle holds the lock of the fjall database at `store`
/// (fjall takes an exclusive `flock` on its `lock` file for as long as it is open). A
/// database just closed releases it once its background threads end, so the lock is tried
/// again as fjall itself does (three tries, 100 ms apart) before it counts as held.
fn refuse_locked(data_dir: &Path, store: &Path) -> Result<()> {
    const TRIES: u32 = 3;
    let path = store.join("lock");
    let Ok(file) = File::open(&path) else {
        // No database yet (or no lock file): nobody holds it.
        return Ok(());
    };
    for attempt in 1..=TRIES {
        match file.try_lock_shared() {
            Ok(()) => return file.unlock().map_err(Error::io(&path)),
            Err(std::fs::TryLockError::WouldBlock) if attempt < TRIES => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => break,
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
        }
    }
    Err(Error::Locked {
        data_dir: data_dir.to_path_buf(),
    })
}

/// Makes `data_dir` private to the node's user before anything is opened in it: the
/// process's umask becomes `077` (every file created afterwards — the store's own, program
/// files, caches — is `0600`, every directory `0700`), the directory is created `0700`, and
/// what a previous run left in it is tightened to those modes. A no-op off Unix.
pub fn secure_data_dir(data_dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(Error::io(data_dir))?;
        // Walked with a heap stack; symbolic links are left alone (never followed). An entry
        // gone while walked (a table file a just-closed store's compaction removed) needs
        // no tightening.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let mut stack = vec![data_dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta = match std::fs::symlink_metadata(&path) {
                Err(e) if gone(&e) => continue,
                other => other.map_err(Error::io(&path))?,
            };
            let mode = if meta.is_dir() {
                let entries = match std::fs::read_dir(&path) {
                    Err(e) if gone(&e) => continue,
                    other => other.map_err(Error::io(&path))?,
                };
                for entry in entries {
                    match entry {
                        Err(e) if gone(&e) => {}
                        other => stack.push(other.map_err(Error::io(&path))?.path()),
                    }
                }
                0o700
            } else if meta.is_file() {
                0o600
            } else {
                continue;
            };
            if meta.permissions().mode() & 0o777 != mode {
                match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)) {
                    Err(e) if gone(&e) => {}
                    other => other.map_err(Error::io(&path))?,
                }
            }
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(data_dir).map_err(Error::io(data_dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_another_handle_holds_is_refused_as_locked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _held = EmbeddedStore::open(dir.path()).expect("opens");
        match EmbeddedStore::open(dir.path()) {
            Err(Error::Locked { data_dir }) => assert_eq!(data_dir, dir.path()),
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_small_memtable_is_written_as_tables_and_sizes_out_of_bounds_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sizes = StoreSizes {
            memtable_bytes: StoreSizes::MIN_MEMTABLE_BYTES,
            ..StoreSizes::default()
        };
        let store = EmbeddedStore::open_sized(dir.path(), sizes).expect("opens");
        for i in 0u64..64 {
            store
                .write([Write::Put(
                    Space::Audit,
                    i.to_be_bytes().to_vec(),
                    vec![7; 64 << 10],
                )])
                .expect("write");
        }
        eyeflow_tests::eventually(
            "4 MiB through a 1 MiB memtable reach tables",
            Duration::from_secs(30),
            || (store.space(Space::Audit).table_count() > 0).then_some(()),
        );
        assert_eq!(
            store.get(Space::Audit, &63u64.to_be_bytes()).expect("get"),
            Some(vec![7; 64 << 10])
        );
        drop(store);
        for sizes in [
            StoreSizes {
                journal_bytes: 32 << 20,
                ..StoreSizes::default()
            },
            StoreSizes {
                memtable_bytes: 4096,
                ..StoreSizes::default()
            },
        ] {
            match EmbeddedStore::open_sized(dir.path(), sizes) {
                Err(Error::BadConfig { reason, .. }) => {
                    assert!(reason.contains("at least"), "{reason}")
                }
                other => panic!("expected BadConfig, got {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn dropping_deleted_tables_frees_their_space_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sizes = StoreSizes {
            memtable_bytes: 8 << 20,
            ..StoreSizes::default()
        };
        let store = EmbeddedStore::open_sized(dir.path(), sizes).expect("opens");
        let key = |i: u64| i.to_be_bytes().to_vec();
        let value = |i: u64| vec![(i % 251) as u8; 64 << 10];
        // 160 MiB: more than one table of fjall's 64 MiB target, written in key order as
        // the audit chain is.
        const N: u64 = 2560;
        for batch in 0..N / 16 {
            store
                .write(
                    (batch * 16..batch * 16 + 16)
                        .map(|i| Write::Put(Space::Audit, key(i), value(i))),
                )
                .expect("write");
        }
        let tables = || store.space(Space::Audit).table_count();
        eyeflow_tests::eventually(
            "the records reach several tables",
            Duration::from_secs(60),
            || (tables() >= 3).then_some(()),
        );
        let cut = N * 3 / 4;
        store
            .commit(
                (0..cut).map(|i| Write::Remove(Space::Audit, key(i))),
                Durability::Sync,
            )
            .expect("delete");
        let before = tables();
        store
            .drop_deleted_below(Space::Audit, &key(cut))
            .expect("drop");
        assert!(
            tables() < before,
            "{before} tables before, {} after",
            tables()
        );
        for i in [0, 50, cut - 1] {
            assert_eq!(
                store.get(Space::Audit, &key(i)).expect("get"),
                None,
                "key {i}"
            );
        }
        for i in [cut, cut + 1, N - 1] {
            assert_eq!(
                store.get(Space::Audit, &key(i)).expect("get"),
                Some(value(i)),
                "key {i}"
            );
        }
        drop(store);
        let store = EmbeddedStore::open_sized(dir.path(), sizes).expect("reopens");
        assert_eq!(store.get(Space::Audit, &key(10)).expect("get"), None);
        assert_eq!(
            store.get(Space::Audit, &key(N - 1)).expect("get"),
            Some(value(N - 1))
        );
        assert_eq!(
            store.scan(Space::Audit, b"").expect("scan").len() as u64,
            N - cut
        );
    }

    /// The damage check on open (`mark`) reads fjall's journal files: `<id>.jnl` under
    /// `store/`, preallocated, their written part ending at the first hole. fjall is pinned
    /// to one version (Cargo.toml); this fails when an upgrade changes that layout.
    #[test]
    fn fjall_journal_files_are_where_the_damage_check_reads_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("opens");
        let journals = |store: &EmbeddedStore| {
            mark::journals(&store.root.join("store")).expect("journals readable")
        };
        let before: u64 = journals(&store).values().sum();
        store
            .commit(
                [Write::Put(Space::Audit, vec![0; 8], vec![7; 4096])],
                Durability::Sync,
            )
            .expect("commit");
        let after = journals(&store);
        assert!(!after.is_empty(), "no <id>.jnl journal file in store/");
        let written: u64 = after.values().sum();
        assert!(
            written >= before + 4096,
            "a durable 4 KiB record grew the journals' written part from {before} to {written} bytes only"
        );
    }
}
