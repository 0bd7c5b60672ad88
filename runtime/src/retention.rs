//! Retention (`[retention]` in `node.toml`): a periodic task of the node that deletes what
//! the executions window and the dedupe window let go — finished executions with their
//! records, dedupe entries, old event-log entries — in small atomic batches beside normal
//! serving. Paused and running executions are never deleted. The audit chain is compacted
//! only behind a released signed checkpoint, oldest first (see [`crate::audit`]).
//!
//! An execution is deleted steps first and its head (outcome, execution record, dedupe
//! entry) last, in one batch: a crash in between leaves a finished execution with fewer
//! steps, never one that looks open or pending (it is never in `journal-open`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::audit::FjallAudit;
use crate::events::FjallEventLog;
use crate::journal::FjallJournal;
use crate::store::{EmbeddedStore, Space, Write};
use crate::{Error, Result};
use eyeflow_actors::sync::Locked;

/// Default most keys one retention write deletes.
const DEFAULT_BATCH_KEYS: usize = 256;

/// Default most executions one pass deletes.
const DEFAULT_EXECUTIONS_PER_PASS: usize = 100_000;

/// Most audit entries one pass deletes; the rest wait for the next pass. A node at its
/// saturated rate appends ≈ 15,000 entries a second, so a pass every 10 s must be able to
/// delete far more than 150,000 (a cap of 100,000 let the chain grow without bound).
const AUDIT_ENTRIES_PER_PASS: u64 = 10_000_000;

/// Executions read per page of a pass.
const PAGE: usize = 64;

/// `[retention]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Finished executions whose finish is older than this many seconds are deleted (with
    /// their steps, decisions, outcome, emitted events' keys); absent = kept forever.
    pub executions_secs: Option<u64>,
    /// An event id's dedupe entry is deleted this many seconds after its execution
    /// finished (a redelivery after that runs again); default = `executions_secs`, never
    /// shorter than it.
    pub dedupe_secs: Option<u64>,
    /// Time between two retention passes, milliseconds (default: a quarter of the
    /// executions window, between 250 ms and 10 s).
    pub interval_ms: Option<u64>,
    /// Most keys one store write of retention deletes (default 256).
    pub batch_keys: Option<usize>,
    /// Most executions one pass deletes (default 100 000); the rest wait for the next pass.
    pub executions_per_pass: Option<usize>,
    /// Audit entries that finished more than this many seconds ago *and* are covered by a
    /// signed checkpoint that left the node (exported, confirmed by the Kafka broker, or
    /// fetched by an operator) are deleted; absent = the chain is never compacted.
    pub audit_secs: Option<u64>,
}

/// A validated retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Finished executions older than this (by their finish) are deleted
    /// ([`Duration::MAX`]: kept forever, when only the audit window is set).
    pub executions: Duration,
    /// Dedupe entries older than this (by their execution's finish) are deleted; at least
    /// `executions`.
    pub dedupe: Duration,
    /// Time between two passes.
    pub interval: Duration,
    /// Most keys per store write.
    pub batch_keys: usize,
    /// Most executions deleted per pass.
    pub executions_per_pass: usize,
    /// Audit entries older than this and covered by a released checkpoint are deleted;
    /// `None`: never.
    pub audit: Option<Duration>,
}

impl RetentionSection {
    /// The policy this section sets: `None` when executions and the audit chain are kept
    /// forever; a [`Error::BadConfig`] naming the field when a value makes no sense.
    pub fn policy(&self) -> Result<Option<RetentionPolicy>> {
        let bad = |field: &str, reason: String| Error::BadConfig {
            what: format!("[retention] {field}"),
            reason,
        };
        let audit = match self.audit_secs {
            Some(0) => {
                return Err(bad(
                    "audit_secs",
                    "must be at least 1 (omit it to never compact the audit chain)".to_owned(),
                ));
            }
            secs => secs.map(Duration::from_secs),
        };
        let Some(executions_secs) = self.executions_secs else {
            return match (self.dedupe_secs, audit) {
                (Some(_), _) => Err(bad(
                    "dedupe_secs",
                    "needs executions_secs: executions are kept forever, and a dedupe \
                     window shorter than theirs would run their events again"
                        .to_owned(),
                )),
                (None, None) => Ok(None),
                (None, Some(audit)) => Ok(Some(RetentionPolicy {
                    executions: Duration::MAX,
                    dedupe: Duration::MAX,
                    interval: self.interval(audit).map_err(|r| bad("interval_ms", r))?,
                    batch_keys: self.batch_keys().map_err(|r| bad("batch_keys", r))?,
                    executions_per_pass: DEFAULT_EXECUTIONS_PER_PASS,
                    audit: Some(audit),
                })),
            };
        };
        if executions_secs == 0 {
            return Err(bad(
                "executions_secs",
                "must be at least 1 (omit it to keep executions forever)".to_owned(),
            ));
        }
        let dedupe_secs = self.dedupe_secs.unwrap_or(executions_secs);
        if dedupe_secs < executions_secs {
            return Err(bad(
                "dedupe_secs",
                format!(
                    "{dedupe_secs} is shorter than executions_secs ({executions_secs}): a \
                     redelivered event would run again while its first execution is still kept"
                ),
            ));
        }
        let batch_keys = self.batch_keys().map_err(|r| bad("batch_keys", r))?;
        let executions_per_pass = self
            .executions_per_pass
            .unwrap_or(DEFAULT_EXECUTIONS_PER_PASS);
        if executions_per_pass == 0 {
            return Err(bad("executions_per_pass", "must be at least 1".to_owned()));
        }
        let executions = Duration::from_secs(executions_secs);
        let shortest = audit.map_or(executions, |audit| audit.min(executions));
        Ok(Some(RetentionPolicy {
            executions,
            dedupe: Duration::from_secs(dedupe_secs),
            interval: self.interval(shortest).map_err(|r| bad("interval_ms", r))?,
            batch_keys,
            executions_per_pass,
            audit,
        }))
    }

    /// `interval_ms`, or a quarter of the `shortest` window between 250 ms and 10 s.
    fn interval(&self, shortest: Duration) -> std::result::Result<Duration, String> {
        match self.interval_ms {
            Some(0) => Err("must be at least 1".to_owned()),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok((shortest / 4).clamp(Duration::from_millis(250), Duration::from_secs(10))),
        }
    }

    fn batch_keys(&self) -> std::result::Result<usize, String> {
        match self.batch_keys.unwrap_or(DEFAULT_BATCH_KEYS) {
            0 => Err("must be at least 1".to_owned()),
            keys => Ok(keys),
        }
    }
}

/// What one pass deleted, by kind (the `kind` label of `eyeflow_retention_deleted_total`),
/// and the oldest finished execution it kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Executions (their record and outcome).
    pub executions: u64,
    /// Journal step records (each holds the steps one journal write carried).
    pub steps: u64,
    /// Other keys of deleted executions: decisions, emitted events' idempotency keys (the
    /// event log's and the Kafka outbox's).
    pub keys: u64,
    /// Dedupe entries (event id → execution id).
    pub dedupe: u64,
    /// Event-log entries.
    pub events: u64,
    /// Audit entries (compaction behind a released checkpoint).
    pub audit: u64,
    /// The finish time (Unix ms) of the oldest finished execution kept, as far as the pass
    /// looked (executions accepted after the window's start are not read: the finish of
    /// the first of them stands in for theirs).
    pub oldest_finished_ms: Option<u64>,
}

impl Pass {
    /// `(kind, count)` of everything deleted.
    pub fn deleted(&self) -> [(&'static str, u64); 6] {
        [
            ("executions", self.executions),
            ("steps", self.steps),
            ("keys", self.keys),
            ("dedupe", self.dedupe),
            ("events", self.events),
            ("audit", self.audit),
        ]
    }
}

/// Retention over a node's store.
pub struct Retention {
    store: EmbeddedStore,
    journal: Arc<FjallJournal>,
    events: Arc<FjallEventLog>,
    policy: RetentionPolicy,
    audit: Option<AuditCompaction>,
    forget: Option<Forget>,
    /// Where the next pass starts reading executions: the first one the last pass kept
    /// (those before it are deleted; an LSM scan from the start would walk their
    /// tombstones on every pass).
    resume: Mutex<Vec<u8>>,
}

/// Deletes what other parts of the node keep for deleted executions (the plugins'
/// `apply_once` records of their idempotency keys), given their ids in order; returns how
/// many keys went.
pub type Forget = Arc<dyn Fn(&[&str]) -> Result<u64> + Send + Sync>;

/// The audit chain retention compacts, and the node's key that signs the checkpoint each
/// compaction batch leaves before the first kept entry when none is stored there.
pub struct AuditCompaction {
    /// The chain.
    pub audit: Arc<FjallAudit>,
    /// The node's audit key (`None`: batches end at stored checkpoints only).
    pub key: Option<ed25519_dalek::SigningKey>,
    /// The node publishes its audit chain on Kafka: entries the broker has not confirmed
    /// are never compacted, whatever checkpoint was released.
    pub kafka: bool,
}

impl Retention {
    /// Retention of `journal`'s and `events`' records (both on `store`) under `policy`.
    pub fn new(
        store: EmbeddedStore,
        journal: Arc<FjallJournal>,
        events: Arc<FjallEventLog>,
        policy: RetentionPolicy,
    ) -> Self {
        Self {
            store,
            journal,
            events,
            policy,
            audit: None,
            forget: None,
            resume: Mutex::new(Vec::new()),
        }
    }

    /// The same, also calling `forget` for the executions it deletes, before their heads.
    pub fn with_forget(mut self, forget: Forget) -> Self {
        self.forget = Some(forget);
        self
    }

    /// The same, also compacting `audit` when the policy has an audit window.
    pub fn with_audit(mut self, audit: AuditCompaction) -> Self {
        self.audit = Some(audit);
        self
    }

    /// One pass at time `now_ms`: deletes every finished execution that finished before
    /// the executions window, every dedupe entry past the dedupe window, and the event-log
    /// entries older than the executions window.
    pub fn pass(&self, now_ms: u64) -> Result<Pass> {
        let mut pass = Pass::default();
        let cutoff = now_ms.saturating_sub(millis(self.policy.executions));
        self.executions(cutoff, &mut pass)?;
        let dedupe_cutoff = now_ms.saturating_sub(millis(self.policy.dedupe));
        self.expire_dedupe(dedupe_cutoff, &mut pass)?;
        pass.events = self.events.expire(cutoff, self.policy.batch_keys)?;
        if let (Some(window), Some(compaction)) = (self.policy.audit, &self.audit) {
            let audit_cutoff = now_ms.saturating_sub(millis(window));
            let before = if compaction.kafka {
                crate::backends::kafka::audit_entries_confirmed(&self.store)?
            } else {
                u64::MAX
            };
            pass.audit = compaction
                .audit
                .compact(
                    compaction.key.as_ref(),
                    audit_cutoff,
                    before,
                    self.policy.batch_keys,
                    AUDIT_ENTRIES_PER_PASS,
                )?
                .entries;
        }
        Ok(pass)
    }

    /// Deletes the executions that finished before `cutoff`, in acceptance order, up to the
    /// first accepted at or after it (it and every later one finished after `cutoff`), at
    /// most [`RetentionPolicy::executions_per_pass`] of them. The newest execution is always
    /// kept: the next start numbers executions after it.
    fn executions(&self, cutoff: u64, pass: &mut Pass) -> Result<()> {
        let Some((newest, _)) = self.store.last(Space::JournalExecutions, b"")? else {
            return Ok(());
        };
        let mut from = self.resume.locked().clone();
        // The first execution this pass keeps: where the next one starts.
        let mut kept: Option<Vec<u8>> = None;
        let result = self.executions_from(&mut from, &mut kept, &newest, cutoff, pass);
        *self.resume.locked() = kept.unwrap_or(from);
        result
    }

    /// [`Self::executions`] from key `from` on, noting the first execution it keeps. The
    /// executions of a page that go are deleted together ([`Self::delete_executions`]).
    fn executions_from(
        &self,
        from: &mut Vec<u8>,
        kept: &mut Option<Vec<u8>>,
        newest: &[u8],
        cutoff: u64,
        pass: &mut Pass,
    ) -> Result<()> {
        loop {
            let page = self
                .store
                .scan_from(Space::JournalExecutions, b"", from, PAGE)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            *from = last.clone();
            from.push(0);
            let full = page.len() == PAGE;
            let mut doomed = Vec::new();
            let done = self.sort_page(page, kept, newest, cutoff, pass, &mut doomed);
            self.delete_executions(&doomed, pass)?;
            if done || !full {
                return Ok(());
            }
        }
    }

    /// Sorts a page of execution records into those that go (`doomed`: id, event id, finish)
    /// and those kept; whether the pass ends with this page.
    fn sort_page(
        &self,
        page: Vec<(Vec<u8>, Vec<u8>)>,
        kept: &mut Option<Vec<u8>>,
        newest: &[u8],
        cutoff: u64,
        pass: &mut Pass,
        doomed: &mut Vec<(String, String, u64)>,
    ) -> bool {
        let limit = u64::try_from(self.policy.executions_per_pass).unwrap_or(u64::MAX);
        for (key, record) in page {
            let id = String::from_utf8_lossy(&key).into_owned();
            let age = match self.journal.age(&id, &record) {
                Ok(age) => age,
                Err(e) => {
                    // Kept: an operator may want to look at it.
                    tracing::warn!(execution = id, "retention skips it: {e}");
                    kept.get_or_insert_with(|| key.clone());
                    continue;
                }
            };
            let going = u64::try_from(doomed.len()).unwrap_or(u64::MAX);
            if pass.executions.saturating_add(going) >= limit {
                // Left for the next pass: the oldest kept is at most as old as this one.
                kept.get_or_insert_with(|| key.clone());
                let kept_ms = age.finished_ms.unwrap_or(age.accepted_ms);
                pass.oldest_finished_ms =
                    Some(pass.oldest_finished_ms.map_or(kept_ms, |o| o.min(kept_ms)));
                return true;
            }
            let stop = key == newest || age.accepted_ms >= cutoff;
            match age.finished_ms {
                Some(finished) if finished < cutoff && !stop => {
                    doomed.push((id, age.event_id, finished));
                }
                finished => {
                    kept.get_or_insert_with(|| key.clone());
                    let kept_ms = finished.unwrap_or(age.accepted_ms);
                    if finished.is_some() || stop {
                        pass.oldest_finished_ms =
                            Some(pass.oldest_finished_ms.map_or(kept_ms, |o| o.min(kept_ms)));
                    }
                }
            }
            if stop {
                return true;
            }
        }
        false
    }

    /// Deletes finished executions `doomed` (id, event id, finish time; in id order): their
    /// steps, decisions and emitted events' keys first, read by one range scan per keyspace
    /// from the first id to the last (the executions kept in between stay), in batches;
    /// then what [`Forget`] deletes; then each one's outcome, record and dedupe entry (or,
    /// when the dedupe window is longer, the marker that deletes that entry later), in
    /// batches. A crash in between leaves finished executions with fewer steps, never one
    /// that looks open or pending.
    fn delete_executions(&self, doomed: &[(String, String, u64)], pass: &mut Pass) -> Result<()> {
        if doomed.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = doomed.iter().map(|(id, ..)| id.as_str()).collect();
        let batch = self.policy.batch_keys;
        for (space, steps) in [
            (Space::JournalSteps, true),
            (Space::JournalDecisions, false),
            (Space::EventKeys, false),
            (Space::KafkaOutboxKeys, false),
        ] {
            let n = self.store.keys_of_ids(space, b"", &ids, batch, |keys| {
                self.store
                    .write(keys.into_iter().map(|key| Write::Remove(space, key)))
            })?;
            if steps {
                pass.steps += n;
            } else {
                pass.keys += n;
            }
        }
        if let Some(forget) = &self.forget {
            pass.keys += forget(&ids)?;
        }
        let mut heads = Vec::with_capacity(batch.min(3 * doomed.len()));
        for (id, event_id, finished_ms) in doomed {
            let key = id.as_bytes().to_vec();
            heads.push(Write::Remove(Space::JournalOutcomes, key.clone()));
            heads.push(Write::Remove(Space::JournalExecutions, key.clone()));
            if self.policy.dedupe > self.policy.executions {
                heads.push(Write::Put(
                    Space::RetentionDedupe,
                    dedupe_marker(*finished_ms, event_id),
                    key,
                ));
            } else if self.dedupe_entry_is(event_id, id)? {
                heads.push(Write::Remove(
                    Space::JournalEvents,
                    event_id.as_bytes().to_vec(),
                ));
                pass.dedupe += 1;
            }
            pass.executions += 1;
            if heads.len() + 3 > batch {
                self.store.write(std::mem::take(&mut heads))?;
            }
        }
        if !heads.is_empty() {
            self.store.write(heads)?;
        }
        Ok(())
    }

    /// Deletes the dedupe entries whose marker says their execution finished before
    /// `cutoff`, with their markers.
    fn expire_dedupe(&self, cutoff: u64, pass: &mut Pass) -> Result<()> {
        let batch = self.policy.batch_keys.div_ceil(2).max(1);
        loop {
            let page = self
                .store
                .scan_from(Space::RetentionDedupe, b"", b"", batch)?;
            let full = page.len() == batch;
            let mut writes = Vec::with_capacity(page.len() * 2);
            let mut done = !full;
            for (marker, execution) in page {
                let Some((finished, event_id)) = parse_dedupe_marker(&marker) else {
                    return Err(Error::CorruptRecord {
                        key: format!("retention-dedupe/{}", hex::encode(&marker)),
                        reason: "not a finish time followed by an event id".into(),
                    });
                };
                if finished >= cutoff {
                    done = true;
                    break;
                }
                if self.dedupe_entry_is(event_id, &String::from_utf8_lossy(&execution))? {
                    writes.push(Write::Remove(
                        Space::JournalEvents,
                        event_id.as_bytes().to_vec(),
                    ));
                    pass.dedupe += 1;
                }
                writes.push(Write::Remove(Space::RetentionDedupe, marker));
            }
            if !writes.is_empty() {
                self.store.write(writes)?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Whether the dedupe index maps `event_id` to execution `id`.
    fn dedupe_entry_is(&self, event_id: &str, id: &str) -> Result<bool> {
        Ok(self
            .journal
            .execution_of_event(event_id)?
            .is_some_and(|current| current == id))
    }

    /// Runs a pass every interval until `stopped` turns true, each on the blocking pool,
    /// reporting what it deleted in the metrics. A failed pass is logged and the next one
    /// tries again.
    pub async fn run(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let retention = Arc::new(self);
        loop {
            tokio::select! {
                _ = stopped.wait_for(|stopped| *stopped) => return,
                () = tokio::time::sleep(retention.policy.interval) => {}
            }
            let running = retention.clone();
            let now = crate::now_ms();
            match tokio::task::spawn_blocking(move || running.pass(now)).await {
                Ok(Ok(pass)) => crate::metrics::retention(&pass, now),
                Ok(Err(e)) => tracing::warn!("retention pass failed: {e}"),
                Err(e) => tracing::error!("retention pass panicked: {e}"),
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `finished_ms` (8 bytes big-endian) ‖ event id: markers sort by finish time.
fn dedupe_marker(finished_ms: u64, event_id: &str) -> Vec<u8> {
    let mut key = finished_ms.to_be_bytes().to_vec();
    key.extend_from_slice(event_id.as_bytes());
    key
}

fn parse_dedupe_marker(key: &[u8]) -> Option<(u64, &str)> {
    let (time, event_id) = key.split_at_checked(8)?;
    let time = u64::from_be_bytes(time.try_into().ok()?);
    Some((time, std::str::from_utf8(event_id).ok()?))
}

#[cfg(test)]
mod tests {
    use eyeflow_actors::ports::{
        Accepted, EventRecord, EventSink, ExecutionOutcome, Journal, StepOutcome, StepRecord,
    };
    use serde_json::json;

    use super::*;
    use crate::store::Durability;

    /// A journal and event log on a fresh store, and the runtime their async ports run on.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: EmbeddedStore,
        journal: Arc<FjallJournal>,
        events: Arc<FjallEventLog>,
        runtime: tokio::runtime::Runtime,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = EmbeddedStore::open(dir.path()).expect("store");
            Self::on(dir, store)
        }

        fn on(dir: tempfile::TempDir, store: EmbeddedStore) -> Self {
            let journal =
                Arc::new(FjallJournal::open(store.clone(), Durability::Buffered).expect("journal"));
            let events = Arc::new(FjallEventLog::new(store.clone(), Durability::Buffered));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            Self {
                _dir: dir,
                store,
                journal,
                events,
                runtime,
            }
        }

        fn retention(
            &self,
            executions_secs: u64,
            dedupe_secs: u64,
            batch_keys: usize,
        ) -> Retention {
            let policy = RetentionSection {
                executions_secs: Some(executions_secs),
                dedupe_secs: Some(dedupe_secs),
                interval_ms: None,
                batch_keys: Some(batch_keys),
                executions_per_pass: None,
                audit_secs: None,
            }
            .policy()
            .expect("valid")
            .expect("a policy");
            Retention::new(
                self.store.clone(),
                self.journal.clone(),
                self.events.clone(),
                policy,
            )
        }

        /// Accepts event `event_id` at `accepted_ms`: the new execution's id.
        fn accept(&self, event_id: &str, accepted_ms: u64) -> String {
            match self
                .journal
                .accept(&event(event_id, accepted_ms))
                .expect("accept")
            {
                Accepted::New { execution_id } => execution_id,
                Accepted::Duplicate { execution_id } => panic!("duplicate of {execution_id}"),
            }
        }

        /// An execution accepted at `accepted_ms` whose `steps` steps end by `finished_ms`,
        /// completed, with a decision and an emitted event.
        fn finished(
            &self,
            event_id: &str,
            accepted_ms: u64,
            finished_ms: u64,
            steps: u64,
        ) -> String {
            let id = self.accept(event_id, accepted_ms);
            let steps: Vec<StepRecord> = (0..steps)
                .map(|seq| {
                    step(
                        &id,
                        seq,
                        StepOutcome::Done { output: json!(seq) },
                        finished_ms,
                    )
                })
                .collect();
            self.journal.decide(&id, "i0", true).expect("decide");
            self.runtime
                .block_on(
                    self.events
                        .emit("t", "k", &json!(1), &format!("{id}/emit/1")),
                )
                .expect("emit");
            // One journal write per step: one `journal-steps` record each.
            for step in &steps {
                self.runtime
                    .block_on(self.journal.steps(std::slice::from_ref(step), &[], false))
                    .expect("steps");
            }
            self.runtime
                .block_on(self.journal.finish(
                    &id,
                    &[],
                    &[],
                    &ExecutionOutcome::Completed { value: json!(1) },
                ))
                .expect("finish");
            id
        }

        /// An execution accepted at `accepted_ms` paused for an approval.
        fn paused(&self, event_id: &str, accepted_ms: u64) -> String {
            let id = self.accept(event_id, accepted_ms);
            let waits = step(&id, 0, StepOutcome::AwaitingApproval, accepted_ms + 1);
            self.runtime
                .block_on(self.journal.steps(&[waits], &[], true))
                .expect("steps");
            id
        }

        fn keys(&self, space: Space, id: &str) -> usize {
            self.store
                .scan(space, format!("{id}/").as_bytes())
                .expect("scan")
                .len()
        }
    }

    fn event(event_id: &str, accepted_ms: u64) -> EventRecord {
        EventRecord {
            event_id: event_id.into(),
            source: "webhook".into(),
            program_id: "p".into(),
            program_version: "1.0.0".into(),
            payload: json!({}),
            priority: 128,
            accepted_at_ms: accepted_ms,
        }
    }

    fn step(id: &str, seq: u64, outcome: StepOutcome, finished_ms: u64) -> StepRecord {
        StepRecord {
            execution_id: id.into(),
            seq,
            instruction_id: format!("i{seq}"),
            attempt: 1,
            outcome,
            fallback: None,
            started_ms: finished_ms.saturating_sub(1),
            finished_ms,
        }
    }

    #[test]
    fn finished_executions_past_the_window_go_with_their_records_others_stay() {
        let f = Fixture::new();
        let old = f.finished("e0", 1000, 2000, 3);
        let paused = f.paused("e1", 1100);
        let late = f.finished("e2", 1200, 9000, 2);
        let quick = f.finished("e3", 1300, 1400, 2);
        let recent = f.finished("e4", 6000, 6100, 2);
        let newest = f.finished("e5", 7000, 7100, 2);
        // A 5 s window at 10 000 ms: finished before 5000 goes.
        let pass = f.retention(5, 5, 2).pass(10_000).expect("pass");

        for gone in [&old, &quick] {
            assert_eq!(f.journal.execution(gone).expect("read"), None, "{gone}");
            for space in [
                Space::JournalSteps,
                Space::JournalDecisions,
                Space::EventKeys,
            ] {
                assert_eq!(f.keys(space, gone), 0, "{gone} in {space:?}");
            }
            assert!(f.journal.was_accepted(gone), "{gone} was accepted");
        }
        assert_eq!(f.journal.execution_of_event("e0").expect("read"), None);
        for kept in [&paused, &late, &recent, &newest] {
            assert!(f.journal.execution(kept).expect("read").is_some(), "{kept}");
        }
        // The execution kept between two that went keeps every record (deletion reads the
        // range from the first to the last that go).
        assert_eq!(
            [
                Space::JournalSteps,
                Space::JournalDecisions,
                Space::EventKeys
            ]
            .map(|space| f.keys(space, &late)),
            [2, 1, 1]
        );
        let pending = f.journal.pending_executions().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].execution_id, paused);
        assert_eq!(pending[0].steps.len(), 1);
        assert!(!f.journal.was_accepted("x0000000000000099"));
        assert!(!f.journal.was_accepted("nonsense"));
        assert_eq!(
            (pass.executions, pass.steps, pass.keys, pass.dedupe),
            (2, 5, 4, 2),
            "{pass:?}"
        );
        assert_eq!(pass.oldest_finished_ms, Some(6100));

        // Inside the dedupe window a redelivery is refused; after it, it runs again.
        assert_eq!(
            f.journal.accept(&event("e1", 11_000)).expect("accept"),
            Accepted::Duplicate {
                execution_id: paused.clone()
            }
        );
        assert!(matches!(
            f.journal.accept(&event("e0", 11_000)).expect("accept"),
            Accepted::New { .. }
        ));

        // A second pass has nothing more to delete before the window moves.
        let again = f.retention(5, 5, 2).pass(10_000).expect("pass");
        assert_eq!(again.executions, 0);
    }

    #[test]
    fn a_longer_dedupe_window_keeps_the_event_id_until_it_ends() {
        let f = Fixture::new();
        let old = f.finished("e0", 1000, 2000, 1);
        f.finished("e1", 50_000, 50_001, 1);
        let retention = f.retention(5, 20, 16);
        let pass = retention.pass(10_000).expect("pass");
        assert_eq!((pass.executions, pass.dedupe), (1, 0));
        assert_eq!(f.journal.execution(&old).expect("read"), None);
        assert_eq!(
            f.journal.accept(&event("e0", 10_000)).expect("accept"),
            Accepted::Duplicate {
                execution_id: old.clone()
            },
            "inside the dedupe window"
        );
        assert_eq!(retention.pass(21_000).expect("pass").dedupe, 0);
        assert_eq!(retention.pass(22_001).expect("pass").dedupe, 1);
        assert!(
            f.store
                .scan(Space::RetentionDedupe, b"")
                .expect("scan")
                .is_empty()
        );
        assert!(matches!(
            f.journal.accept(&event("e0", 23_000)).expect("accept"),
            Accepted::New { .. }
        ));
    }

    #[test]
    fn the_newest_execution_is_kept_so_that_numbering_goes_on_after_a_restart() {
        let f = Fixture::new();
        let first = f.finished("e0", 1000, 1001, 1);
        let second = f.finished("e1", 1002, 1003, 1);
        let pass = f.retention(1, 1, 8).pass(100_000).expect("pass");
        assert_eq!(pass.executions, 1);
        assert_eq!(f.journal.execution(&first).expect("read"), None);
        assert!(f.journal.execution(&second).expect("read").is_some());
        let Fixture {
            _dir,
            store,
            journal,
            ..
        } = f;
        drop(journal);
        let f = Fixture::on(_dir, store);
        let third = f.accept("e2", 100_001);
        assert!(third > second, "{third} after {second}");
        assert!(f.journal.was_accepted(&first));
    }

    #[test]
    fn an_execution_left_half_deleted_is_finished_not_pending_and_goes_next_time() {
        let f = Fixture::new();
        let old = f.finished("e0", 1000, 2000, 10);
        f.finished("e1", 50_000, 50_001, 1);
        // A crash after the first batches of its steps: steps 0..4 gone, the head kept.
        let keys = f
            .store
            .scan(Space::JournalSteps, format!("{old}/").as_bytes())
            .expect("scan");
        f.store
            .write(
                keys.into_iter()
                    .take(4)
                    .map(|(key, _)| Write::Remove(Space::JournalSteps, key)),
            )
            .expect("write");
        assert!(f.journal.pending_executions().expect("pending").is_empty());
        let (_, steps, outcome) = f.journal.execution(&old).expect("read").expect("kept");
        assert_eq!(steps.len(), 6);
        assert!(outcome.is_some(), "still finished");
        let pass = f.retention(5, 5, 3).pass(10_000).expect("pass");
        assert_eq!((pass.executions, pass.steps), (1, 6));
        assert_eq!(f.keys(Space::JournalSteps, &old), 0);
        assert_eq!(f.journal.execution(&old).expect("read"), None);
    }

    #[test]
    fn old_events_leave_each_topic_but_its_newest_and_offsets_go_on() {
        let f = Fixture::new();
        for (topic, n) in [("t", 4), ("u", 1)] {
            for i in 0..n {
                f.runtime
                    .block_on(
                        f.events
                            .emit(topic, "k", &json!(i), &format!("x/{topic}/{i}")),
                    )
                    .expect("emit");
            }
        }
        let deleted = f
            .events
            .expire(crate::now_ms() + 60_000, 2)
            .expect("expire");
        assert_eq!(deleted, 3);
        let left: Vec<u64> = f
            .events
            .read("t", 0, 10)
            .expect("read")
            .iter()
            .map(|e| e.offset)
            .collect();
        assert_eq!(left, [3]);
        assert_eq!(f.events.read("u", 0, 10).expect("read").len(), 1);
        let fresh = Arc::new(FjallEventLog::new(f.store.clone(), Durability::Buffered));
        f.runtime
            .block_on(fresh.emit("t", "k", &json!(9), "x/t/9"))
            .expect("emit");
        let offsets: Vec<u64> = fresh
            .read("t", 0, 10)
            .expect("read")
            .iter()
            .map(|e| e.offset)
            .collect();
        assert_eq!(offsets, [3, 4]);
        assert_eq!(
            f.events.expire(0, 2).expect("expire"),
            0,
            "nothing older than 0"
        );
    }

    #[test]
    fn the_section_refuses_windows_that_make_no_sense() {
        let section = |executions_secs, dedupe_secs| RetentionSection {
            executions_secs,
            dedupe_secs,
            ..RetentionSection::default()
        };
        assert_eq!(section(None, None).policy().expect("valid"), None);
        let policy = section(Some(8), None)
            .policy()
            .expect("valid")
            .expect("policy");
        assert_eq!(policy.dedupe, Duration::from_secs(8));
        assert_eq!(policy.interval, Duration::from_secs(2));
        assert_eq!(policy.batch_keys, DEFAULT_BATCH_KEYS);
        let audit_only = RetentionSection {
            audit_secs: Some(8),
            ..RetentionSection::default()
        }
        .policy()
        .expect("valid")
        .expect("a policy");
        assert_eq!(audit_only.audit, Some(Duration::from_secs(8)));
        assert_eq!(
            audit_only.executions,
            Duration::MAX,
            "executions kept forever"
        );
        assert_eq!(audit_only.interval, Duration::from_secs(2));
        let never = RetentionSection {
            audit_secs: Some(0),
            ..RetentionSection::default()
        };
        let err = never.policy().expect_err("refused");
        assert!(err.to_string().contains("audit_secs"), "{err}");
        for (executions, dedupe, field) in [
            (Some(10), Some(5), "dedupe_secs"),
            (None, Some(5), "dedupe_secs"),
            (Some(0), None, "executions_secs"),
        ] {
            let err = section(executions, dedupe).policy().expect_err("refused");
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
