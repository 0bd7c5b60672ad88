//! Durability ports: the journal of accepted events and instruction outcomes (the record of
//! truth that a restarted node resumes from) and the audit chain.
//!
//! Every write returns only once it is durable (or batched into a group commit that is
//! durable before the call returns), except non-durable [`Journal::steps`], which a later
//! durable journal write carries. Audit entries travel in the journal's own writes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// The intent of an effect, journaled durably (with every earlier step) right before the
    /// effect starts: a resume that finds it without a result knows the effect may have
    /// happened.
    Started {
        /// The key the effect is issued under (`execution/instruction/attempt`).
        idempotency_key: String,
        /// What the effect is given (the audit entry holds its digest).
        input: Value,
    },
    /// A resume found the intent of an effect without its result, and the effect declares
    /// no safe way to learn it: the execution waits for an operator (approve = issue it
    /// again under the same key, reject = end the execution).
    Ambiguous {
        /// The key the effect was issued under.
        idempotency_key: String,
    },
}

impl StepOutcome {
    /// The audit chain's name for it: `done`, `skipped`, `failed:<class>`,
    /// `awaiting_approval`, `started`, `ambiguous`.
    pub fn audit_name(&self) -> String {
        match self {
            Self::Done { .. } => "done".to_owned(),
            Self::Skipped => "skipped".to_owned(),
            Self::Failed { class, .. } => format!("failed:{class}"),
            Self::AwaitingApproval => "awaiting_approval".to_owned(),
            Self::Started { .. } => "started".to_owned(),
            Self::Ambiguous { .. } => "ambiguous".to_owned(),
        }
    }

    /// Whether the execution waits for a human decision after this step.
    pub fn waits_for_decision(&self) -> bool {
        matches!(self, Self::AwaitingApproval | Self::Ambiguous { .. })
    }
}

/// The fallback a step was taken under, journaled with it (and named in its audit entry):
/// a resume reads it back to continue where the execution was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The attempt failed; the next attempt follows after a backoff.
    Retry,
    /// The instruction's declared value stands for its result.
    FallbackValue,
    /// The LLM_CALL runs (or ran) on its fallback model.
    FallbackModel,
    /// The instruction is skipped.
    Skip,
    /// The execution compensates and fails.
    Abort,
    /// On resume, an effect in doubt was issued again under its key.
    Reissued,
    /// On resume, an effect in doubt was learned through the capability's read-back action.
    ReadBack,
}

impl Fallback {
    /// Its stable name, as journaled and audited (`retry`, `fallback_value`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::FallbackValue => "fallback_value",
            Self::FallbackModel => "fallback_model",
            Self::Skip => "skip",
            Self::Abort => "abort",
            Self::Reissued => "reissued",
            Self::ReadBack => "read_back",
        }
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// The fallback taken after this attempt, or how a resume ran it, if any.
    pub fallback: Option<Fallback>,
    /// Start, Unix milliseconds.
    pub started_ms: u64,
    /// End, Unix milliseconds.
    pub finished_ms: u64,
}

impl StepRecord {
    /// The id a human decision on this step is journaled under, when the step waits for
    /// one: the instruction path for an approval, `path#attempt` for an ambiguous effect
    /// (so that an instruction's approval is never read as the resolution of its effect).
    pub fn decision_id(&self) -> Option<String> {
        match self.outcome {
            StepOutcome::AwaitingApproval => Some(self.instruction_id.clone()),
            StepOutcome::Ambiguous { .. } => Some(ambiguity_id(&self.instruction_id, self.attempt)),
            _ => None,
        }
    }
}

/// The decision id of an ambiguous effect: `path#attempt`.
pub fn ambiguity_id(path: &str, attempt: u32) -> String {
    format!("{path}#{attempt}")
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

/// A failure of the journal or of the audit chain written with it: what it was doing and
/// why. Nothing more of the execution runs after one (it stays pending, to resume).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal: cannot {operation}: {reason}")]
pub struct JournalError {
    /// What the journal was asked (`accept an event`, `journal steps`, ...).
    pub operation: &'static str,
    /// Why it failed.
    pub reason: String,
}

impl JournalError {
    /// A failure of `operation`.
    pub fn new(operation: &'static str, reason: impl Into<String>) -> Self {
        Self {
            operation,
            reason: reason.into(),
        }
    }
}

/// The journal (embedded: fjall; the record of truth) and, in the same atomic writes, the
/// audit chain: the steps of a segment and their audit entries are durable together or
/// lost together, so a resumed execution never audits one step twice.
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// Journals an accepted event, or reports that its id was seen before.
    fn accept(&self, event: &EventRecord) -> Result<Accepted, JournalError>;
    /// Journals instruction outcomes of one execution, in order, with their audit entries
    /// appended to the chain, as one atomic write. `durable`: returns only once they are
    /// durable; otherwise they may become durable only with the journal's next durable
    /// write (losing them in a crash is harmless: they hold no answer an effect acted on,
    /// and the executor runs those instructions again on resume).
    async fn steps(
        &self,
        steps: &[StepRecord],
        audit: &[AuditEntry],
        durable: bool,
    ) -> Result<(), JournalError>;
    /// Journals the end of an execution, with its last `steps` (possibly none) and their
    /// audit entries, durably and atomically.
    async fn finish(
        &self,
        execution_id: &str,
        steps: &[StepRecord],
        audit: &[AuditEntry],
        outcome: &ExecutionOutcome,
    ) -> Result<(), JournalError>;
    /// Journals a human decision on `instruction_id` of a paused execution.
    fn decide(
        &self,
        execution_id: &str,
        instruction_id: &str,
        approved: bool,
    ) -> Result<(), JournalError>;
    /// The decision on `instruction_id`, if one was made.
    fn decision(
        &self,
        execution_id: &str,
        instruction_id: &str,
    ) -> Result<Option<bool>, JournalError>;
    /// Every accepted, unfinished execution, oldest first.
    fn pending(&self) -> Result<Vec<PendingExecution>, JournalError>;
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
    /// Hex SHA-256 of the signed program's exact bytes (the encoded signed IR the node
    /// deployed), binding the entry to what ran; absent in operator entries and in entries
    /// written before it was recorded (their canonical form has no such key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_sha256: Option<String>,
    /// Instruction id.
    pub instruction_id: String,
    /// Opcode name (`CALL_ACTION`, ...).
    pub opcode: String,
    /// Hex SHA-256 of the canonical JSON of the instruction's inputs.
    pub input_digest: String,
    /// Hex SHA-256 of the canonical JSON of its output.
    pub output_digest: String,
    /// [`StepOutcome::audit_name`]: `done`, `skipped`, `failed:<class>`,
    /// `awaiting_approval`, `started` (an effect's intent), `ambiguous`.
    pub outcome: String,
    /// Fallback strategy taken, if any.
    pub fallback: Option<String>,
    /// Start, Unix milliseconds.
    pub started_ms: u64,
    /// End, Unix milliseconds.
    pub finished_ms: u64,
}
