//! Durability ports: the journal of accepted events and instruction outcomes (the record of
//! truth that a restarted node resumes from) and the audit chain.
//!
//! Every write returns only once it is durable (or batched into a group commit that is
//! durable before the call returns), except non-durable [`Journal::steps`] and audit
//! entries, which a later durable journal write carries.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CallError;

/// An event accepted for execution by one program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unique per source; a second delivery of the same id is not executed again.
    pub event_id: String,
    /// Where it came from (`webhook`, `demo`, a topic...).
    pub source: String,
    /// Program that runs it.
    pub program_id: String,
    /// Program version that runs it.
    pub program_version: String,
    /// Event payload, visible to CEL as `event`.
    pub payload: Value,
    /// Priority level the execution runs at (0 = critical … 255 = background).
    pub priority: u32,
    /// Acceptance time, Unix milliseconds.
    pub accepted_at_ms: u64,
}

/// What `accept` did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Journaled as a new execution.
    New {
        /// The new execution's id.
        execution_id: String,
    },
    /// Already journaled (same event id): not executed again.
    Duplicate {
        /// The execution that event started.
        execution_id: String,
    },
}

/// The outcome of one instruction attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepOutcome {
    /// It produced `output` (possibly through a fallback, named in the record).
    Done {
        /// The value later expressions see.
        output: Value,
    },
    /// It was skipped (SKIP fallback, or an untaken BRANCH arm).
    Skipped,
    /// It failed (the execution then falls back or aborts).
    Failed {
        /// Error class name (`timeout`, `unavailable`, ...).
        class: String,
        /// The message.
        message: String,
    },
    /// It waits for a human decision.
    AwaitingApproval,
}

/// One journaled instruction outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Execution the step belongs to.
    pub execution_id: String,
    /// Order within the execution, from 0.
    pub seq: u64,
    /// IR instruction id (`loop/iteration/id` inside loops).
    pub instruction_id: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// What happened.
    pub outcome: StepOutcome,
    /// Fallback strategy taken, if any (`retry`, `fallback_value`, ...).
    pub fallback: Option<String>,
    /// Start, Unix milliseconds.
    pub started_ms: u64,
    /// End, Unix milliseconds.
    pub finished_ms: u64,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExecutionOutcome {
    /// RETURN (or the end of the graph) with a value.
    Completed {
        /// The returned value.
        value: Value,
    },
    /// Aborted (after compensation) or failed without a fallback.
    Failed {
        /// Error class name.
        class: String,
        /// Why.
        message: String,
    },
    /// A human rejected an instruction that required validation.
    Rejected {
        /// The instruction.
        instruction_id: String,
    },
}

/// An execution that was accepted and has not finished (to resume after a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingExecution {
    /// Its id.
    pub execution_id: String,
    /// The event it runs.
    pub event: EventRecord,
    /// Steps already journaled, in order.
    pub steps: Vec<StepRecord>,
}

/// The journal (embedded: fjall; the record of truth).
pub trait Journal: Send + Sync {
    /// Journals an accepted event, or reports that its id was seen before.
    fn accept(&self, event: &EventRecord) -> Result<Accepted, CallError>;
    /// Journals one instruction outcome (durably).
    fn step(&self, step: &StepRecord) -> Result<(), CallError> {
        self.steps(std::slice::from_ref(step), true)
    }
    /// Journals instruction outcomes of one execution, in order, as one atomic write.
    /// `durable`: returns only once they are durable; otherwise they may become durable only
    /// with the journal's next durable write (losing them in a crash is harmless: the
    /// executor runs those instructions again on resume).
    fn steps(&self, steps: &[StepRecord], durable: bool) -> Result<(), CallError>;
    /// Journals the end of an execution, with its last `steps` (possibly none), durably and
    /// atomically.
    fn finish(
        &self,
        execution_id: &str,
        steps: &[StepRecord],
        outcome: &ExecutionOutcome,
    ) -> Result<(), CallError>;
    /// Journals a human decision on `instruction_id` of a paused execution.
    fn decide(
        &self,
        execution_id: &str,
        instruction_id: &str,
        approved: bool,
    ) -> Result<(), CallError>;
    /// The decision on `instruction_id`, if one was made.
    fn decision(&self, execution_id: &str, instruction_id: &str)
    -> Result<Option<bool>, CallError>;
    /// Every accepted, unfinished execution, oldest first.
    fn pending(&self) -> Result<Vec<PendingExecution>, CallError>;
}

/// One audit entry: what one executed instruction did, without secret values (inputs and
/// outputs appear as digests only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Node that executed it.
    pub node_id: String,
    /// Execution.
    pub execution_id: String,
    /// Program id.
    pub program_id: String,
    /// Program version.
    pub program_version: String,
    /// Instruction id.
    pub instruction_id: String,
    /// Opcode name (`CALL_ACTION`, ...).
    pub opcode: String,
    /// Hex SHA-256 of the canonical JSON of the instruction's inputs.
    pub input_digest: String,
    /// Hex SHA-256 of the canonical JSON of its output.
    pub output_digest: String,
    /// `done`, `skipped`, `failed:<class>`, `awaiting_approval`.
    pub outcome: String,
    /// Fallback strategy taken, if any.
    pub fallback: Option<String>,
    /// Start, Unix milliseconds.
    pub started_ms: u64,
    /// End, Unix milliseconds.
    pub finished_ms: u64,
}

/// Where an appended entry landed in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReceipt {
    /// Index from 0.
    pub index: u64,
    /// `sha256(previous hash ‖ canonical(entry))`.
    pub hash: [u8; 32],
}

/// The audit chain (embedded: fjall; published to Kafka by the node service). The executor
/// appends an attempt's entry before journaling the attempt, so a durable journal write
/// also covers the entries before it: an entry is never missing for a journaled step (an
/// attempt re-run after a crash may appear twice).
pub trait AuditLog: Send + Sync {
    /// Appends `entry` to the chain.
    fn append(&self, entry: &AuditEntry) -> Result<AuditReceipt, CallError>;
    /// Appends `entries` to the chain, in order and next to each other, as one write.
    fn append_all(&self, entries: &[AuditEntry]) -> Result<(), CallError>;
}
