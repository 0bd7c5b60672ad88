//! Audit compaction: the entries that a signed checkpoint *released* outside the node
//! (exported, confirmed by the Kafka broker, or fetched by an operator) covers, and that are
//! older than the audit window, are deleted oldest first, so that the kept chain is always a
//! contiguous suffix that starts right after a stored signed checkpoint; verification then
//! starts from that checkpoint ([`resumed_verifier`]).
//!
//! Each batch is atomic and leaves a stored checkpoint of the entry before the new first one:
//! the checkpoint already there, or one the node signs of that entry in the same batch.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use ed25519_dalek::{SigningKey, VerifyingKey};
use eyeflow_actors::chain::{AuditBroken, Checkpoint, Verifier};

use super::{
    FjallAudit, checkpoint_write, corrupt, decode_index, entries_of, execution_key, expand, gather,
    index_run, key_span, run_key, walk,
};
use crate::Result;
use crate::store::{Durability, EmbeddedStore, Space, Write, mark};

/// How a signed checkpoint left the node (the value of its `audit-released` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Written to a file by `eyeflow audit export`.
    Export,
    /// Confirmed by the Kafka broker on the audit topic.
    Kafka,
    /// Handed to an operator (`POST /api/audit/checkpoint`).
    Operator,
}

impl Release {
    fn name(self) -> &'static [u8] {
        match self {
            Self::Export => b"export",
            Self::Kafka => b"kafka",
            Self::Operator => b"operator",
        }
    }
}

/// What one compaction deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Entries (with their per-execution index records).
    pub entries: u64,
    /// The first entry kept afterwards, when any was deleted.
    pub first_kept: Option<u64>,
}

impl FjallAudit {
    /// Records durably that the checkpoint of entry `index` left the node (`how`): audit
    /// compaction may delete the entries it covers once they are older than the window.
    pub fn release(&self, index: u64, how: Release) -> Result<()> {
        self.store.commit(
            [Write::Put(
                Space::AuditReleased,
                index.to_be_bytes().to_vec(),
                how.name().to_vec(),
            )],
            Durability::Sync,
        )
    }

    /// The index of the newest released checkpoint, if any.
    pub fn released(&self) -> Result<Option<u64>> {
        Ok(self
            .store
            .last(Space::AuditReleased, b"")?
            .and_then(|(key, _)| decode_index(&key)))
    }

    /// The index of the first stored entry (0 for an empty chain, or one never compacted).
    pub fn first_kept(&self) -> Result<u64> {
        // Scanned from the last one found: the keys before it are deleted, and an LSM scan
        // from the start would walk their tombstones every time.
        let hint = self.first_hint.load(Ordering::Relaxed);
        let first = first_kept_from(&self.store, hint)?.unwrap_or(hint);
        self.first_hint.store(first, Ordering::Relaxed);
        Ok(first)
    }

    /// Deletes, oldest first and in atomic batches of about `batch_keys` keys, the entries
    /// covered by the newest released checkpoint whose `finished_ms` is before `cutoff_ms`
    /// and whose index is below `before` (the first entry some reader still needs, say the
    /// first the Kafka audit topic has not confirmed; `u64::MAX`: none), at most
    /// `max_entries` of them. Never deletes the last entry, nor one the store's mark
    /// names (see [`mark`]), nor past a gap in the chain. A batch whose last entry has no
    /// stored checkpoint gets one signed with `key` (without a key it ends at the last
    /// stored checkpoint, or nothing is deleted). Checkpoints of deleted entries before the
    /// new anchor go with them; the released checkpoint and every later one stay.
    pub fn compact(
        &self,
        key: Option<&SigningKey>,
        cutoff_ms: u64,
        before: u64,
        batch_keys: usize,
        max_entries: u64,
    ) -> Result<Compacted> {
        let mut done = Compacted::default();
        let Some(released) = self.released()? else {
            return Ok(done);
        };
        // Flushed first, so that the mark names the chain's current last entry: compaction
        // stays below it and the next open's check of the mark finds it.
        self.store.persist(Durability::Sync)?;
        // The last record, and the one the store's mark names, stay whole: compaction
        // deletes only entries before the first of them.
        let Some((last, _)) = self
            .store
            .last(Space::Audit, b"")?
            .and_then(|(key, _)| key_span(&key))
        else {
            return Ok(done);
        };
        let marked = match mark::read(self.store.data_dir())? {
            Some(m) => self
                .store
                .scan_from(Space::Audit, b"", &m.index.to_be_bytes(), 1)?
                .first()
                .and_then(|(key, _)| key_span(key))
                .map_or(last, |(first, _)| first.min(last)),
            None => last,
        };
        let Some(limit) = marked
            .min(before)
            .checked_sub(1)
            .map(|below| below.min(released))
        else {
            return Ok(done);
        };
        let per_batch = (batch_keys / 2).max(1);
        while done.entries < max_entries {
            let first = self.first_kept()?;
            if first > limit {
                break;
            }
            let room = (limit - first + 1).min(max_entries - done.entries);
            // Read without their hashes: only the last one deleted may need its hash.
            let entries = gather(
                &self.store,
                first,
                per_batch.min(usize::try_from(room).unwrap_or(usize::MAX)),
                entries_of,
                |index, entry| Ok((index, entry)),
            )?;
            let old: Vec<_> = entries
                .iter()
                .zip(first..)
                .take_while(|((index, entry), expected)| {
                    index == expected && entry.finished_ms < cutoff_ms
                })
                .map(|(e, _)| e)
                .collect();
            let Some(&&(last_old, _)) = old.last() else {
                break;
            };
            let span = usize::try_from(last_old - first + 2).unwrap_or(usize::MAX);
            let stored = self
                .checkpoints_from(first, span)?
                .into_iter()
                .take_while(|c| c.index <= last_old)
                .last();
            let (end, signed) = match (stored, key) {
                (Some(c), _) if c.index == last_old => (c.index, None),
                (_, Some(key)) => {
                    let hash = self
                        .entries(last_old, 1)?
                        .first()
                        .map(|e| e.hash)
                        .ok_or_else(|| corrupt(&last_old.to_be_bytes(), "the entry went"))?;
                    (
                        last_old,
                        Some(Checkpoint::sign(last_old, hash, crate::now_ms(), key)),
                    )
                }
                (Some(c), None) => (c.index, None),
                (None, None) => break,
            };
            let gone = &old[..=usize::try_from(end - first).unwrap_or(usize::MAX)];
            let mut writes = self.cut(first, end)?;
            let executions: BTreeSet<&str> =
                gone.iter().map(|(_, e)| e.execution_id.as_str()).collect();
            for execution in executions {
                writes.extend(self.index_rewrites(execution, end)?);
            }
            writes.extend(signed.as_ref().map(checkpoint_write));
            writes.extend(
                // Those before `first - 1` went with earlier batches.
                self.checkpoints_from(first.saturating_sub(1), span)?
                    .into_iter()
                    .take_while(|c| c.index < end)
                    .map(|c| {
                        Write::Remove(Space::AuditCheckpoints, c.index.to_be_bytes().to_vec())
                    }),
            );
            self.store.write(writes)?;
            self.first_hint.store(end + 1, Ordering::Relaxed);
            done.entries += end - first + 1;
            done.first_kept = Some(end + 1);
        }
        if let Some(first_kept) = done.first_kept {
            // The removals durable first (with the checkpoint that now anchors the chain),
            // then the tables that hold only removed entries go: an append-only keyspace
            // deleted oldest first would otherwise keep them until fjall's compaction
            // happens to merge its levels.
            self.store.persist(Durability::Sync)?;
            self.store
                .drop_deleted_below(Space::Audit, &first_kept.to_be_bytes())?;
        }
        // Only the newest release counts: older records go.
        let older: Vec<Write> = self
            .store
            .scan(Space::AuditReleased, b"")?
            .into_iter()
            .filter(|(key, _)| decode_index(key).is_some_and(|index| index < released))
            .map(|(key, _)| Write::Remove(Space::AuditReleased, key))
            .collect();
        if !older.is_empty() {
            self.store.write(older)?;
        }
        Ok(done)
    }

    /// The writes that delete the stored entries `first..=end`: the records entirely
    /// within go; the one that runs past `end` is stored again from `end + 1`, chained to
    /// the hash of `end`.
    fn cut(&self, first: u64, end: u64) -> Result<Vec<Write>> {
        let mut writes = Vec::new();
        let records = usize::try_from(end - first + 1).unwrap_or(usize::MAX);
        walk(&self.store, first, records, |key, value| {
            let Some((_, last)) = key_span(key).filter(|(start, _)| *start <= end) else {
                return Ok(false);
            };
            writes.push(Write::Remove(Space::Audit, key.to_vec()));
            if last <= end {
                return Ok(true);
            }
            // Only the record across the cut is read (its hashes recomputed).
            let entries = expand(key, value).map_err(|reason| corrupt(key, &reason))?;
            let mut kept = Vec::new();
            let mut previous = None;
            for stored in entries.into_iter().filter(|stored| stored.index > end) {
                previous.get_or_insert(stored.previous);
                let hash = stored.hash;
                kept.push((
                    stored
                        .part
                        .entry()
                        .map_err(|reason| corrupt(key, &reason))?,
                    hash,
                ));
            }
            let previous = previous.ok_or_else(|| corrupt(key, "a run without entries"))?;
            let kept: Vec<_> = kept.iter().map(|(entry, hash)| (entry, *hash)).collect();
            writes.push(Write::Put(
                Space::Audit,
                run_key(end + 1, last),
                crate::records::encode_run(&previous, &kept),
            ));
            Ok(false)
        })?;
        Ok(writes)
    }

    /// The writes that keep execution `execution_id`'s index records true once entries up
    /// to `end` are gone: a run entirely before goes, a run across `end` starts after it.
    fn index_rewrites(&self, execution_id: &str, end: u64) -> Result<Vec<Write>> {
        let prefix = execution_key(execution_id, None);
        let mut writes = Vec::new();
        for (key, value) in self.store.scan(Space::AuditByExecution, &prefix)? {
            let (first, count) = index_run(&prefix, &key, &value)?;
            if first > end {
                break;
            }
            writes.push(Write::Remove(Space::AuditByExecution, key));
            let past = first + u64::from(count);
            if past > end + 1 {
                let left = u32::try_from(past - end - 1).unwrap_or(u32::MAX);
                writes.push(Write::Put(
                    Space::AuditByExecution,
                    execution_key(execution_id, Some(end + 1)),
                    left.to_be_bytes().to_vec(),
                ));
            }
        }
        Ok(writes)
    }
}

fn first_kept(store: &EmbeddedStore) -> Result<u64> {
    Ok(first_kept_from(store, 0)?.unwrap_or(0))
}

/// The index of the first stored entry at or after `from`.
fn first_kept_from(store: &EmbeddedStore, from: u64) -> Result<Option<u64>> {
    Ok(store
        .scan_from(Space::Audit, b"", &from.to_be_bytes(), 1)?
        .first()
        .and_then(|(key, _)| key_span(key))
        .map(|(first, _)| first.max(from)))
}

/// A verifier of the chain in `store` from its first stored entry: from entry 0, or, once
/// compaction deleted the entries before entry `N`, resumed from the signed checkpoint of
/// entry `N - 1` among `checkpoints` (broken when there is none).
pub(super) fn resumed_verifier(
    store: &EmbeddedStore,
    checkpoints: Vec<Checkpoint>,
    key: Option<&VerifyingKey>,
) -> Result<std::result::Result<Verifier, AuditBroken>> {
    let first = first_kept(store)?;
    let Some(before) = first.checked_sub(1) else {
        return Ok(Verifier::new(checkpoints, key));
    };
    let Some(anchor) = checkpoints
        .iter()
        .find(|c| c.index == before)
        .map(|c| c.hash)
    else {
        return Ok(Err(AuditBroken {
            index: first,
            reason: format!(
                "entries 0 to {before} are gone and no signed checkpoint of entry {before} \
                 anchors the first kept entry (compaction always keeps one)"
            ),
        }));
    };
    Ok(Verifier::resume(checkpoints, key, first, anchor))
}

#[cfg(test)]
mod tests {
    use eyeflow_actors::ports::AuditEntry;

    use super::*;
    use crate::audit::{AuditConfig, verify};

    struct Chain {
        _dir: tempfile::TempDir,
        store: EmbeddedStore,
        audit: FjallAudit,
        key: SigningKey,
    }

    /// 50 entries, finished at `10 × index` ms, in runs of 4 per execution (`x0` holds
    /// entries 0..=3, `x7` entries 28..=31), a checkpoint every 10 entries.
    fn chain() -> Chain {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let key = SigningKey::from_bytes(&[9; 32]);
        let audit = FjallAudit::open(
            store.clone(),
            AuditConfig {
                durability: Durability::Buffered,
                checkpoint_every: 10,
                signing_key: Some(key.clone()),
            },
        )
        .expect("audit");
        for run in 0..13u64 {
            let entries: Vec<AuditEntry> = (run * 4..(run * 4 + 4).min(50))
                .map(|index| entry(&format!("x{run}"), index * 10))
                .collect();
            audit.append_all(&entries).expect("append");
        }
        Chain {
            _dir: dir,
            store,
            audit,
            key,
        }
    }

    fn entry(execution_id: &str, finished_ms: u64) -> AuditEntry {
        AuditEntry {
            node_id: "n".into(),
            execution_id: execution_id.into(),
            program_id: "p".into(),
            program_version: "1.0.0".into(),
            program_sha256: None,
            instruction_id: "i".into(),
            opcode: "CALL_ACTION".into(),
            input_digest: "ab".repeat(32),
            output_digest: "cd".repeat(32),
            outcome: "done".into(),
            fallback: None,
            started_ms: finished_ms,
            finished_ms,
        }
    }

    impl Chain {
        fn compact(&self, cutoff_ms: u64, max_entries: u64) -> Compacted {
            self.compact_before(cutoff_ms, u64::MAX, max_entries)
        }

        fn compact_before(&self, cutoff_ms: u64, before: u64, max_entries: u64) -> Compacted {
            self.audit
                .compact(Some(&self.key), cutoff_ms, before, 8, max_entries)
                .expect("compact")
        }

        fn verify(&self) -> std::result::Result<eyeflow_actors::chain::VerifyReport, AuditBroken> {
            verify(&self.store, Some(&self.key.verifying_key())).expect("read")
        }

        fn checkpoint_indexes(&self) -> Vec<u64> {
            let all = self.audit.checkpoints().expect("checkpoints");
            all.iter().map(|c| c.index).collect()
        }
    }

    #[test]
    fn records_of_earlier_versions_chain_on_with_runs_and_are_compacted_alike() {
        // Entries 0..=5 as an earlier version stored them: one record each under its index
        // alone (previous hash, hash, binary entry), the first three as canonical JSON.
        let c = chain();
        let entries = c.audit.entries(0, 50).expect("entries");
        let old: Vec<Write> = entries[..6]
            .iter()
            .zip(std::iter::once([0; 32]).chain(entries.iter().map(|e| e.hash)))
            .map(|(e, previous)| {
                let body = if e.index < 3 {
                    crate::audit::canonical(&e.entry)
                } else {
                    crate::records::encode_entry(&e.entry)
                };
                let value = [previous.as_slice(), &e.hash, &body].concat();
                Write::Put(Space::Audit, e.index.to_be_bytes().to_vec(), value)
            })
            .collect();
        let runs = [run_key(0, 3), run_key(4, 7)].map(|key| Write::Remove(Space::Audit, key));
        let mut writes = Vec::from(runs);
        writes.extend(old);
        // Entries 6 and 7 stay a run of their own, chained to entry 5.
        let tail: Vec<_> = entries[6..8].iter().map(|e| (&e.entry, e.hash)).collect();
        writes.push(Write::Put(
            Space::Audit,
            run_key(6, 7),
            crate::records::encode_run(&entries[5].hash, &tail),
        ));
        c.store.write(writes).expect("write");
        assert_eq!(c.audit.entries(0, 50).expect("entries"), entries);
        assert_eq!(c.verify().expect("verifies").entries, 50);
        let reopened = FjallAudit::open(c.store.clone(), AuditConfig::default()).expect("open");
        assert_eq!(reopened.head(), c.audit.head());
        // Compaction deletes old records and runs alike, and splits the run across its cut.
        c.audit.release(9, Release::Operator).expect("release");
        assert_eq!(c.compact(u64::MAX, u64::MAX).first_kept, Some(10));
        let report = c.verify().expect("verifies");
        assert_eq!((report.first, report.entries), (10, 50));
        assert!(report.anchored);
        assert_eq!(c.audit.entries(0, 50).expect("entries"), entries[10..]);
        assert!(
            c.store
                .get(Space::Audit, &run_key(10, 11))
                .expect("read")
                .is_some()
        );
    }

    #[test]
    fn nothing_is_deleted_without_a_released_checkpoint() {
        let c = chain();
        assert_eq!(c.compact(u64::MAX, u64::MAX), Compacted::default());
        assert_eq!(c.audit.first_kept().expect("first"), 0);
        assert_eq!(c.verify().expect("verifies").first, 0);
    }

    #[test]
    fn entries_up_to_the_released_checkpoint_go_and_verify_starts_from_it() {
        let c = chain();
        c.audit.release(19, Release::Export).expect("release");
        c.audit.release(29, Release::Operator).expect("release");
        let done = c.compact(u64::MAX, u64::MAX);
        assert_eq!(
            done,
            Compacted {
                entries: 30,
                first_kept: Some(30)
            }
        );
        assert_eq!(c.audit.first_kept().expect("first"), 30);
        assert_eq!(
            c.checkpoint_indexes(),
            [29, 39, 49],
            "the released one and later stay"
        );
        assert_eq!(c.audit.released().expect("released"), Some(29));
        let report = c.verify().expect("verifies");
        assert_eq!(
            (report.first, report.entries, report.checkpoints),
            (30, 50, 3)
        );
        assert!(report.anchored && report.signatures_checked);
        // An execution's entries: what is left of a run across the boundary, nothing of
        // one before it, all of one after it.
        let indexes = |id: &str| -> Vec<u64> {
            let kept = c.audit.of_execution(id).expect("of execution");
            kept.iter().map(|e| e.index).collect()
        };
        assert_eq!(indexes("x7"), [30, 31]);
        assert_eq!(indexes("x2"), Vec::<u64>::new());
        assert_eq!(indexes("x8"), [32, 33, 34, 35]);
        // The head survives a reopen and the chain goes on.
        let reopened = FjallAudit::open(c.store.clone(), AuditConfig::default()).expect("open");
        assert_eq!(reopened.head(), c.audit.head());
        reopened.append(&entry("x99", 1)).expect("append");
        assert_eq!(c.verify().expect("verifies").entries, 51);
        // Nothing more to do.
        assert_eq!(c.compact(u64::MAX, u64::MAX).entries, 0);
    }

    #[test]
    fn entries_a_reader_still_needs_stay() {
        let c = chain();
        c.audit.release(29, Release::Operator).expect("release");
        // The Kafka audit topic confirmed entries 0..=11 only: 12 and later stay.
        let done = c.compact_before(u64::MAX, 12, u64::MAX);
        assert!(done.entries <= 12, "{done:?}");
        let first = c.audit.first_kept().expect("first");
        assert!(first <= 12, "first kept {first}");
        assert_eq!(c.verify().expect("verifies").first, first);
        assert_eq!(c.compact_before(u64::MAX, 0, u64::MAX).entries, 0);
    }

    #[test]
    fn the_window_holds_entries_back_and_a_batch_ends_on_a_signed_checkpoint() {
        let c = chain();
        c.audit.release(29, Release::Kafka).expect("release");
        // Entries finished before 150 ms: 0..=14.
        let done = c.compact(150, u64::MAX);
        assert_eq!(
            done,
            Compacted {
                entries: 15,
                first_kept: Some(15)
            }
        );
        assert_eq!(c.checkpoint_indexes(), [14, 19, 29, 39, 49]);
        let report = c.verify().expect("verifies");
        assert_eq!((report.first, report.entries), (15, 50));
        // Later, the rest up to the released checkpoint.
        assert_eq!(c.compact(10_000, u64::MAX).first_kept, Some(30));
    }

    #[test]
    fn the_last_entry_and_the_marked_one_are_never_deleted() {
        let c = chain();
        let head = c.audit.checkpoint(&c.key).expect("sign").expect("a head");
        assert_eq!(head.index, 49);
        c.audit.release(49, Release::Operator).expect("release");
        // The last record holds entries 48 and 49: it stays whole.
        let done = c.compact(u64::MAX, u64::MAX);
        assert_eq!(done.first_kept, Some(48));
        assert_eq!(c.verify().expect("verifies").first, 48);
    }

    #[test]
    fn an_interrupted_compaction_leaves_an_anchored_suffix() {
        let c = chain();
        c.audit.release(29, Release::Operator).expect("release");
        // As a kill after a few batches leaves it.
        let done = c.compact(u64::MAX, 6);
        assert_eq!(done.entries, 6);
        let report = c.verify().expect("verifies");
        assert_eq!(report.first, 6);
        assert!(report.anchored);
        assert_eq!(c.compact(u64::MAX, u64::MAX).first_kept, Some(30));
    }

    #[test]
    fn tampering_with_a_kept_entry_or_removing_the_anchor_is_reported() {
        let c = chain();
        c.audit.release(29, Release::Operator).expect("release");
        c.compact(u64::MAX, u64::MAX);
        // Entry 35 is the last of the run 32..=35: its outcome changed, its hash kept.
        let key = run_key(32, 35);
        let value = c
            .store
            .get(Space::Audit, &key)
            .expect("read")
            .expect("kept");
        let (previous, _) = crate::records::decode_run(&value).expect("a run");
        let kept = c.audit.entries(32, 4).expect("entries");
        // Entry `changed` (33: its hash stored as a tag; 35: whole) gets another outcome and
        // keeps what is stored of its hash.
        for changed in [33, 35] {
            let mut entries: Vec<_> = kept.iter().map(|e| (e.entry.clone(), e.hash)).collect();
            entries[changed - 32].0.outcome = "skipped".into();
            let entries: Vec<_> = entries.iter().map(|(entry, hash)| (entry, *hash)).collect();
            let value = crate::records::encode_run(&previous, &entries);
            c.store.put(Space::Audit, &key, &value).expect("write");
            let broken = c.verify().expect_err("tampered");
            assert_eq!(broken.index, changed as u64, "{broken}");
            assert!(broken.reason.contains("content altered"), "{broken}");
        }

        let c = chain();
        c.audit.release(29, Release::Operator).expect("release");
        c.compact(u64::MAX, u64::MAX);
        c.store
            .remove(Space::AuditCheckpoints, &29u64.to_be_bytes())
            .expect("remove");
        let broken = c.verify().expect_err("unanchored");
        assert_eq!(broken.index, 30, "{broken}");
        assert!(
            broken.reason.contains("no signed checkpoint of entry 29"),
            "{broken}"
        );
    }
}
