//! The embedded journal: [`FjallJournal`] implements the [`Journal`] port over keyspaces of
//! the [`EmbeddedStore`]. It is the record of truth a restarted node resumes from.
//!
//! ## Layout
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `journal-events` | event id | execution id (the dedupe index) |
//! | `journal-executions` | execution id | JSON `{"seq": n, "event": EventRecord}` |
//! | `journal-open` | execution id | empty: accepted and not finished |
//! | `journal-steps` | `execution_id/seq` of the first step (seq zero-padded to 20 digits) | the steps of one write, binary (`records`); from earlier versions, one JSON `StepRecord` |
//! | `journal-decisions` | `execution_id/instruction_id` | `1` approved, `0` rejected |
//! | `journal-outcomes` | execution id | JSON `ExecutionOutcome` |
//! | `journal-quarantine` | `keyspace/key` | a record that could not be read back |
//!
//! Execution ids are `x` followed by the acceptance sequence number zero-padded to 16
//! digits (`x0000000000000042`): unique in one store, ordered by acceptance.
//!
//! ## Guarantees
//!
//! Every method writes one atomic batch and returns only after it is durable according to
//! the journal's [`Durability`] (fsynced, alone or in a group commit, unless
//! [`Durability::Buffered`]), except non-durable `steps`: their batch is written without a
//! flush of its own and becomes durable with the next durable write (see
//! [`EmbeddedStore::write`]).
//! A second `accept` of a known event id — even after a restart —
//! returns [`Accepted::Duplicate`] with the first execution's id (only once that first
//! acceptance is durable).
//!
//! ## Records it cannot read
//!
//! Every record is checked at write time to read back (its JSON, and every JSON value in a
//! binary step record, nests less deeply than the reader's limit; values in it are bounded by `eyeflow_actors::exec::bounds`). A
//! record that still cannot be read (a disk error, a record from a faulty version) never
//! stops the node: an open execution with one is moved aside — its records copied to
//! `journal-quarantine`, the execution finished `failed` (class `internal`) naming them —
//! instead of being resumed on a partial history; a finished execution's view skips it.

use std::sync::{Arc, Mutex};

use eyeflow_actors::ports::{
    Accepted, AuditEntry, EventRecord, ExecutionOutcome, Journal, JournalError, PendingExecution,
    StepOutcome, StepRecord,
};
use serde::{Deserialize, Serialize};

use crate::audit::FjallAudit;
use crate::store::{Durability, EmbeddedStore, Space, Write};
use crate::{Error, Result};
use eyeflow_actors::sync::Locked;

/// An accepted execution as stored in `journal-executions`.
#[derive(Serialize, Deserialize)]
struct ExecutionRecord {
    seq: u64,
    event: EventRecord,
}

/// An execution as the API and CLI show it: the event it runs, its journaled steps in
/// order, and how it ended (`None` while it runs or waits).
pub type ExecutionView = (EventRecord, Vec<StepRecord>, Option<ExecutionOutcome>);

/// What an execution is doing, as the API shows and filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionStatus {
    /// Accepted and not finished, not waiting for anyone (it may still be queued).
    Running,
    /// Paused before an instruction that needs a human approval.
    AwaitingApproval,
    /// A crash left an effect's result unknown and the effect declares no safe way to
    /// learn it: waits for an operator.
    Ambiguous,
    /// Ended with a value.
    Completed,
    /// Ended in a failure.
    Failed,
    /// Ended because a human rejected an instruction.
    Rejected,
}

impl ExecutionStatus {
    /// Every status, in the order the API lists them.
    pub const ALL: [Self; 6] = [
        Self::Running,
        Self::AwaitingApproval,
        Self::Ambiguous,
        Self::Completed,
        Self::Failed,
        Self::Rejected,
    ];

    /// Its name in the API (`running`, `awaiting_approval`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Ambiguous => "ambiguous",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The status of an execution that ended with `outcome` (`None`: not finished) and
    /// whose last journaled step is `last_step`.
    pub fn of(outcome: Option<&ExecutionOutcome>, last_step: Option<&StepRecord>) -> Self {
        match (outcome, last_step.map(|s| &s.outcome)) {
            (Some(ExecutionOutcome::Completed { .. }), _) => Self::Completed,
            (Some(ExecutionOutcome::Failed { .. }), _) => Self::Failed,
            (Some(ExecutionOutcome::Rejected { .. }), _) => Self::Rejected,
            (None, Some(StepOutcome::AwaitingApproval)) => Self::AwaitingApproval,
            (None, Some(StepOutcome::Ambiguous { .. })) => Self::Ambiguous,
            (None, _) => Self::Running,
        }
    }
}

/// One execution in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionSummary {
    /// Its id.
    pub id: String,
    /// The program that runs it.
    pub program: String,
    /// That program's version.
    pub version: String,
    /// Where its event came from.
    pub source: String,
    /// What it is doing.
    pub status: ExecutionStatus,
    /// Acceptance time, Unix milliseconds.
    pub accepted_ms: u64,
    /// When it finished (the end of its last step; its acceptance when it took none),
    /// Unix milliseconds; `None` while unfinished.
    pub finished_ms: Option<u64>,
}

/// Which executions a listing keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only this program's.
    pub program: Option<String>,
    /// Only those in this status.
    pub status: Option<ExecutionStatus>,
    /// Only those accepted at or after this time, Unix milliseconds.
    pub since_ms: Option<u64>,
}

impl ExecutionFilter {
    fn keeps(&self, execution: &ExecutionSummary) -> bool {
        self.program
            .as_ref()
            .is_none_or(|p| *p == execution.program)
            && self.status.is_none_or(|s| s == execution.status)
            && self.since_ms.is_none_or(|t| execution.accepted_ms >= t)
    }
}

/// Where a listing continues: below an execution id (opaque to API clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionCursor(String);

impl ExecutionCursor {
    /// The cursor `text` (as [`ExecutionCursor::as_str`] gave it), `None` when malformed.
    pub fn parse(text: &str) -> Option<Self> {
        // Only the exact form handed out (no sign, no other width).
        parse_execution_id(text.as_bytes())
            .ok()
            .map(execution_id)
            .filter(|id| id == text)
            .map(Self)
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionPage {
    /// The executions kept, newest first.
    pub executions: Vec<ExecutionSummary>,
    /// Where the next page starts; `None` when nothing older is left.
    pub next_cursor: Option<ExecutionCursor>,
}

/// An execution's age, as retention reads it ([`FjallJournal::age`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecutionAge {
    /// Acceptance time, Unix milliseconds.
    pub(crate) accepted_ms: u64,
    /// When it finished, Unix milliseconds; `None` while unfinished (running, paused).
    pub(crate) finished_ms: Option<u64>,
    /// The id of the event it runs (its entry in the dedupe index).
    pub(crate) event_id: String,
}

/// Record counts of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalCounts {
    /// Accepted executions (= distinct event ids).
    pub executions: u64,
    /// Accepted, unfinished executions.
    pub pending: u64,
    /// Finished executions.
    pub finished: u64,
    /// Journaled steps.
    pub steps: u64,
}

/// The journal over the embedded store. One per store: acceptance numbering is held here.
pub struct FjallJournal {
    store: EmbeddedStore,
    durability: Durability,
    /// Next acceptance sequence number; held while checking and writing the dedupe index.
    next_seq: Mutex<u64>,
    /// The audit chain whose entries travel in the journal's step writes.
    audit: Option<Arc<FjallAudit>>,
}

impl FjallJournal {
    /// The journal in `store`, committing with `durability`.
    pub fn open(store: EmbeddedStore, durability: Durability) -> Result<Self> {
        let next_seq = match store.last(Space::JournalExecutions, b"")? {
            Some((key, _)) => parse_execution_id(&key)? + 1,
            None => 0,
        };
        Ok(Self {
            store,
            durability,
            next_seq: Mutex::new(next_seq),
            audit: None,
        })
    }

    /// This journal appending the audit entries of each step write to `audit`, in the
    /// same atomic store write (both must be on this journal's store).
    pub fn with_audit(mut self, audit: Arc<FjallAudit>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// One atomic write of `writes` with `entries` chained into the audit, then durable
    /// when `durable` (as the journal's durability says).
    /// Writes `writes` with the audit entries appended to the chain, in one atomic write;
    /// `durable`: waits for the fsync, without holding the task's thread.
    async fn write_with_audit(
        &self,
        writes: Vec<Write>,
        entries: &[AuditEntry],
        durable: bool,
    ) -> Result<()> {
        let write = || match (&self.audit, entries.is_empty()) {
            (_, true) => self.store.write(writes),
            (Some(audit), false) => audit.append_with(entries, writes).map(drop),
            (None, false) => Err(Error::Node {
                reason: "audit entries given to a journal without an audit chain".into(),
            }),
        };
        if durable {
            self.store.commit_with_async(self.durability, write).await
        } else {
            write()
        }
    }

    /// The durability this journal commits with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The event, steps and outcome of execution `id`, if it exists.
    pub fn execution(&self, id: &str) -> Result<Option<ExecutionView>> {
        let Some(record) = self
            .store
            .get_json::<ExecutionRecord>(Space::JournalExecutions, id)?
        else {
            return Ok(None);
        };
        // The outcome first: an execution's steps are written with its outcome or before
        // it, so a view with the outcome also has every step (read the other way round,
        // the last write could land between the two reads: an outcome without its steps).
        let outcome = self.store.get_json(Space::JournalOutcomes, id)?;
        Ok(Some((record.event, self.steps(id)?, outcome)))
    }

    /// The execution that event `event_id` started, if it was accepted.
    pub fn execution_of_event(&self, event_id: &str) -> Result<Option<String>> {
        self.store
            .get(Space::JournalEvents, event_id.as_bytes())?
            .map(|id| utf8(event_id, id))
            .transpose()
    }

    /// Whether `id` is an execution id this journal handed out (in the exact form it hands
    /// out), whether it is still kept or was deleted by retention: acceptance numbers are
    /// dense and retention always keeps the newest execution, so every number below the
    /// next one was accepted.
    pub fn was_accepted(&self, id: &str) -> bool {
        ExecutionCursor::parse(id)
            .and_then(|id| parse_execution_id(id.as_str().as_bytes()).ok())
            .is_some_and(|seq| seq < *self.next_seq.locked())
    }

    /// What retention needs to know of execution `id`, whose `journal-executions` record is
    /// `record`: when it was accepted and finished, and its event id.
    pub(crate) fn age(&self, id: &str, record: &[u8]) -> Result<ExecutionAge> {
        let ExecutionRecord { event, .. } =
            serde_json::from_slice(record).map_err(|e| Error::CorruptRecord {
                key: format!("journal-executions/{id}"),
                reason: e.to_string(),
            })?;
        let open = self.store.get(Space::JournalOpen, id.as_bytes())?.is_some();
        let summary = self.summary(id, record)?;
        Ok(ExecutionAge {
            accepted_ms: summary.accepted_ms,
            finished_ms: summary.finished_ms.filter(|_| !open),
            event_id: event.event_id,
        })
    }

    /// Record counts (full scans: for status pages, not hot paths). Counted while executions
    /// are accepted and finish, in an order that never shows more finished (or finished and
    /// pending) than accepted: finished first, then pending (an execution finishing in
    /// between is counted in neither, never in both), accepted last (it only grows).
    pub fn counts(&self) -> Result<JournalCounts> {
        let finished = self.store.count(Space::JournalOutcomes)?;
        let pending = self.store.count(Space::JournalOpen)?;
        let steps = self.store.fold(Space::JournalSteps, 0, |n, value| {
            n + crate::records::count_steps(value)
        })?;
        let executions = self.store.count(Space::JournalExecutions)?;
        Ok(JournalCounts {
            executions,
            pending,
            finished,
            steps,
        })
    }

    /// The executions `filter` keeps, newest first, from `cursor` (the newest when `None`):
    /// at most `limit` of them, after examining at most `budget` executions (so that a
    /// filter that skips most of the journal still answers in bounded time; the page may
    /// then be short, even empty, with a cursor to continue from). Reads the journal lazily,
    /// one execution at a time.
    pub fn list_executions(
        &self,
        filter: &ExecutionFilter,
        cursor: Option<&ExecutionCursor>,
        limit: usize,
        budget: usize,
    ) -> Result<ExecutionPage> {
        let mut records = self.store.iter_back(
            Space::JournalExecutions,
            cursor.map(|c| c.as_str().as_bytes()),
        );
        let (mut executions, mut examined, mut last) = (Vec::new(), 0usize, None);
        while executions.len() < limit && examined < budget {
            let Some(record) = records.next() else {
                return Ok(ExecutionPage {
                    executions,
                    next_cursor: None,
                });
            };
            let (key, value) = record?;
            examined += 1;
            let id = utf8("journal-executions", key)?;
            match self.summary(&id, &value) {
                Ok(summary) if filter.keeps(&summary) => executions.push(summary),
                Ok(_) => {}
                Err(e) => tracing::error!(execution = id, "not listed: {e}"),
            }
            last = Some(id);
        }
        // Stopped by the limit or the budget: a cursor only if something older is left.
        let next_cursor = match records.next().transpose()? {
            Some(_) => last.map(ExecutionCursor),
            None => None,
        };
        Ok(ExecutionPage {
            executions,
            next_cursor,
        })
    }

    /// The listing entry of execution `id` whose `journal-executions` record is `record`.
    fn summary(&self, id: &str, record: &[u8]) -> Result<ExecutionSummary> {
        let ExecutionRecord { event, .. } =
            serde_json::from_slice(record).map_err(|e| Error::CorruptRecord {
                key: format!("journal-executions/{id}"),
                reason: e.to_string(),
            })?;
        let outcome: Option<ExecutionOutcome> = self.store.get_json(Space::JournalOutcomes, id)?;
        let last_step = match self
            .store
            .last(Space::JournalSteps, format!("{id}/").as_bytes())?
        {
            Some((key, bytes)) => crate::records::decode_steps(id, &bytes)
                .map_err(|reason| Error::CorruptRecord {
                    key: format!("journal-steps/{}", String::from_utf8_lossy(&key)),
                    reason,
                })?
                .pop(),
            None => None,
        };
        let finished_ms = outcome.as_ref().map(|_| {
            last_step
                .as_ref()
                .map_or(event.accepted_at_ms, |s| s.finished_ms)
        });
        Ok(ExecutionSummary {
            id: id.to_owned(),
            status: ExecutionStatus::of(outcome.as_ref(), last_step.as_ref()),
            program: event.program_id,
            version: event.program_version,
            source: event.source,
            accepted_ms: event.accepted_at_ms,
            finished_ms,
        })
    }

    /// Every accepted, unfinished execution, oldest first, with its steps. One with a
    /// record that cannot be read is quarantined and finished `failed` instead (see the
    /// module documentation).
    pub fn pending_executions(&self) -> Result<Vec<PendingExecution>> {
        let mut pending = Vec::new();
        for (key, _) in self.store.scan(Space::JournalOpen, b"")? {
            let id = utf8("journal-open", key)?;
            let record = match self.store.get(Space::JournalExecutions, id.as_bytes())? {
                None => Err((
                    "journal-executions".to_owned(),
                    Vec::new(),
                    "missing".to_owned(),
                )),
                Some(bytes) => serde_json::from_slice::<ExecutionRecord>(&bytes)
                    .map_err(|e| (format!("journal-executions/{id}"), bytes, e.to_string())),
            };
            let (steps, mut unreadable) = self.read_steps(&id)?;
            let record = record.map_err(|bad| unreadable.push(bad)).ok();
            match record {
                Some(record) if unreadable.is_empty() => {
                    pending.push((record.seq, id, record.event, steps));
                }
                _ => self.quarantine(&id, unreadable)?,
            }
        }
        // Keys are fixed-width acceptance numbers; sort anyway in case the format changes.
        pending.sort_by_key(|(seq, _, _, _)| *seq);
        Ok(pending
            .into_iter()
            .map(|(_, execution_id, event, steps)| PendingExecution {
                steps,
                execution_id,
                event,
            })
            .collect())
    }

    /// Moves the unreadable records of open execution `id` to `journal-quarantine` and
    /// finishes it `failed`, in one durable batch.
    fn quarantine(&self, id: &str, unreadable: Vec<(String, Vec<u8>, String)>) -> Result<()> {
        let named: Vec<String> = unreadable
            .iter()
            .map(|(key, _, why)| format!("{key} ({why})"))
            .collect();
        tracing::error!(
            execution = id,
            "journal records unreadable, quarantined; the execution is failed: {}",
            named.join("; ")
        );
        let outcome = ExecutionOutcome::Failed {
            class: "internal".to_owned(),
            message: format!(
                "its journal records could not be read back and were quarantined: {}",
                named.join("; ")
            ),
        };
        let mut writes = Vec::with_capacity(unreadable.len() * 2 + 2);
        for (key, bytes, _) in unreadable {
            if let Some(step) = key.strip_prefix("journal-steps/") {
                writes.push(Write::Remove(Space::JournalSteps, step.as_bytes().to_vec()));
            }
            writes.push(Write::Put(
                Space::JournalQuarantine,
                key.into_bytes(),
                bytes,
            ));
        }
        writes.push(Write::Put(
            Space::JournalOutcomes,
            id.as_bytes().to_vec(),
            json(id, &outcome)?,
        ));
        writes.push(Write::Remove(Space::JournalOpen, id.as_bytes().to_vec()));
        self.store.commit(writes, self.durability)
    }

    /// The steps of `execution_id` that read back, and the ones that do not (key, bytes,
    /// why).
    #[allow(clippy::type_complexity)]
    fn read_steps(
        &self,
        execution_id: &str,
    ) -> Result<(Vec<StepRecord>, Vec<(String, Vec<u8>, String)>)> {
        let (mut steps, mut unreadable) = (Vec::new(), Vec::new());
        for (key, bytes) in self
            .store
            .scan(Space::JournalSteps, format!("{execution_id}/").as_bytes())?
        {
            match crate::records::decode_steps(execution_id, &bytes) {
                Ok(read) => steps.extend(read),
                Err(why) => unreadable.push((
                    format!("journal-steps/{}", String::from_utf8_lossy(&key)),
                    bytes,
                    why,
                )),
            }
        }
        Ok((steps, unreadable))
    }

    fn steps(&self, execution_id: &str) -> Result<Vec<StepRecord>> {
        let (steps, unreadable) = self.read_steps(execution_id)?;
        for (key, _, why) in unreadable {
            tracing::error!(
                execution = execution_id,
                "journal record {key} unreadable: {why}"
            );
        }
        Ok(steps)
    }

    fn accept_event(&self, event: &EventRecord) -> Result<Accepted> {
        let mut next_seq = self.next_seq.locked();
        if let Some(id) = self.execution_of_event(&event.event_id)? {
            drop(next_seq);
            // Report a duplicate only once the first acceptance is durable.
            self.store.persist(self.durability)?;
            return Ok(Accepted::Duplicate { execution_id: id });
        }
        let seq = *next_seq;
        let execution_id = execution_id(seq);
        let record = json(
            &execution_id,
            &ExecutionRecord {
                seq,
                event: event.clone(),
            },
        )?;
        let id = execution_id.as_bytes().to_vec();
        let writes = [
            Write::Put(
                Space::JournalEvents,
                event.event_id.as_bytes().to_vec(),
                id.clone(),
            ),
            Write::Put(Space::JournalExecutions, id.clone(), record),
            Write::Put(Space::JournalOpen, id, Vec::new()),
        ];
        // Written under the lock (the dedupe check and the index write are one step);
        // made durable outside it so that concurrent acceptances share a group commit.
        self.store.write(writes)?;
        *next_seq = seq + 1;
        drop(next_seq);
        self.store.persist(self.durability)?;
        Ok(Accepted::New { execution_id })
    }

    /// Journals `steps` with `entries` (one atomic batch): durably as the journal's
    /// durability says, or written for the next durable write to carry.
    async fn write_steps(
        &self,
        steps: &[StepRecord],
        entries: &[AuditEntry],
        durable: bool,
    ) -> Result<()> {
        self.write_with_audit(steps_writes(steps)?, entries, durable)
            .await
    }

    async fn write_finish(
        &self,
        execution_id: &str,
        steps: &[StepRecord],
        entries: &[AuditEntry],
        outcome: &ExecutionOutcome,
    ) -> Result<()> {
        let id = execution_id.as_bytes().to_vec();
        let value = json(execution_id, outcome)?;
        let mut writes = steps_writes(steps)?;
        writes.push(Write::Put(Space::JournalOutcomes, id.clone(), value));
        writes.push(Write::Remove(Space::JournalOpen, id));
        self.write_with_audit(writes, entries, true).await
    }
}

/// One `journal-steps` record per execution among `steps` (consecutive steps of one
/// execution share it), keyed by its first step.
fn steps_writes(steps: &[StepRecord]) -> Result<Vec<Write>> {
    steps
        .chunk_by(|a, b| a.execution_id == b.execution_id)
        .map(|run| {
            let key = step_key(&run[0].execution_id, run[0].seq);
            let value = crate::records::encode_steps(run, |value| json(&key, value))?;
            Ok(Write::Put(Space::JournalSteps, key.into_bytes(), value))
        })
        .collect()
}

#[async_trait::async_trait]
impl Journal for FjallJournal {
    fn accept(&self, event: &EventRecord) -> Result<Accepted, JournalError> {
        self.accept_event(event)
            .map_err(journal_error("accept an event"))
    }

    async fn steps(
        &self,
        steps: &[StepRecord],
        audit: &[AuditEntry],
        durable: bool,
    ) -> Result<(), JournalError> {
        self.write_steps(steps, audit, durable)
            .await
            .map_err(journal_error("journal steps"))
    }

    async fn finish(
        &self,
        execution_id: &str,
        steps: &[StepRecord],
        audit: &[AuditEntry],
        outcome: &ExecutionOutcome,
    ) -> Result<(), JournalError> {
        self.write_finish(execution_id, steps, audit, outcome)
            .await
            .map_err(journal_error("journal the end of an execution"))
    }

    fn decide(
        &self,
        execution_id: &str,
        instruction_id: &str,
        approved: bool,
    ) -> Result<(), JournalError> {
        self.store
            .commit(
                [Write::Put(
                    Space::JournalDecisions,
                    decision_key(execution_id, instruction_id),
                    vec![u8::from(approved)],
                )],
                self.durability,
            )
            .map_err(journal_error("journal a decision"))
    }

    fn decision(
        &self,
        execution_id: &str,
        instruction_id: &str,
    ) -> Result<Option<bool>, JournalError> {
        let key = decision_key(execution_id, instruction_id);
        match self
            .store
            .get(Space::JournalDecisions, &key)
            .map_err(journal_error("read a decision"))?
            .as_deref()
        {
            None => Ok(None),
            Some([0]) => Ok(Some(false)),
            Some([1]) => Ok(Some(true)),
            Some(_) => Err(journal_error("read a decision")(Error::CorruptRecord {
                key: format!("journal-decisions/{execution_id}/{instruction_id}"),
                reason: "expected one byte, 0 or 1".into(),
            })),
        }
    }

    fn pending(&self) -> Result<Vec<PendingExecution>, JournalError> {
        self.pending_executions()
            .map_err(journal_error("list pending executions"))
    }
}

/// `x` + the acceptance number zero-padded to 16 digits.
fn execution_id(seq: u64) -> String {
    format!("x{seq:016}")
}

fn parse_execution_id(key: &[u8]) -> Result<u64> {
    key.strip_prefix(b"x")
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| Error::CorruptRecord {
            key: format!("journal-executions/{}", String::from_utf8_lossy(key)),
            reason: "execution id is not `x` + 16 digits".into(),
        })
}

/// `execution_id/seq`, seq zero-padded to 20 digits so that key order is step order.
fn step_key(execution_id: &str, seq: u64) -> String {
    format!("{execution_id}/{seq:020}")
}

fn decision_key(execution_id: &str, instruction_id: &str) -> Vec<u8> {
    format!("{execution_id}/{instruction_id}").into_bytes()
}

/// Deepest nesting the journal writes: below serde_json's reader limit (128), so that every
/// record it writes reads back.
const MAX_RECORD_DEPTH: usize = 120;

fn json<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::CorruptRecord {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    let depth = json_depth(&bytes);
    if depth > MAX_RECORD_DEPTH {
        return Err(Error::CorruptRecord {
            key: key.to_owned(),
            reason: format!(
                "refused at write time: it nests {depth} levels deep and could not be read back (limit {MAX_RECORD_DEPTH})"
            ),
        });
    }
    Ok(bytes)
}

/// The nesting depth of the JSON text `bytes` (brackets outside strings).
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn utf8(key: &str, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::CorruptRecord {
        key: key.to_owned(),
        reason: "not UTF-8".into(),
    })
}

/// A store failure at the port boundary: the journal is unavailable.
fn journal_error(operation: &'static str) -> impl FnOnce(Error) -> JournalError {
    move |error| JournalError::new(operation, error.to_string())
}
