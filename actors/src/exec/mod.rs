//! The execution engine: runs one execution of a prepared LLM-IR [`Program`] to its end (or
//! to a human-validation pause), journaling every instruction attempt as it goes.
//!
//! ```text
//! Program::prepare(ir) ──► execute(&program, execution_id, &event, &history, &effects) ──► Report
//! ```
//!
//! # Order
//!
//! The walk is deterministic. In each region (the top level, or one iteration of a LOOP
//! body) the next instruction is the first, by (`sequence_number`, id), whose `depends_on`
//! and BRANCH parents are all resolved. An instruction runs when it is the entry of its
//! region, when one of its `depends_on` finished or was skipped by a fallback, or when a
//! BRANCH chose it (`branch_true_id` / `branch_false_id`); otherwise it is on an untaken arm
//! and never runs (nor does anything reachable only through it). **Parallel branches
//! (`is_parallel`) run one after the other in that order**: the results are those of a
//! parallel run, and replays take the same path.
//!
//! # Variables
//!
//! CEL expressions see `event` (the event payload), the result of every instruction that
//! finished under its `output_var` (or id; `null` when skipped by a fallback), inside a loop
//! body the loop's `item_var`, in a postcondition `resource` (the value read back), and the
//! execution-scope memory (L1) as the map `memory` (unless an instruction result is called
//! `memory`).
//!
//! # Opcodes
//!
//! | opcode | does | result |
//! |---|---|---|
//! | EVAL | evaluates `expression` | its value |
//! | BRANCH | evaluates `branch_condition` (a bool) and continues with the chosen arm | the bool |
//! | MERGE | joins its `depends_on` | object: input name → result (skipped inputs `null`, untaken ones absent) |
//! | LOOP | runs `loop.body` per element of `items_expr` (bound to `item_var`; more than `max_iterations` elements is `invalid_input`), or while `while_condition` holds, or `max_iterations` times; `timeout` bounds the whole loop | list of per-iteration objects (body result name → value) |
//! | RETURN | evaluates `expression` (or `null`) and ends the execution, Completed | the value |
//! | EMIT_EVENT | `events.emit(emit.topic, key_expr value, expression value, idempotency key)` | the payload |
//! | STORE | stores `expression` in `memory.scope`: execution (L1), node (TTL `ttl_seconds`, default 3600 s), cluster | the value |
//! | LOAD | reads `memory.key` from its scope; absent → `default_json` (or `null`) | the value |
//! | LOAD_RESOURCE | `plugins.read(capability, key, params, call)`; key = the string param `key` if any, else `resource_key` | the resource |
//! | CALL_ACTION | `plugins.invoke(capability, action_name, params, idempotency key)` holding the `resource_key` permit, inside `time_window`, then polls the `postcondition` | the plugin's result |
//! | CALL_API, CALL_SERVICE | `http.send` (method, url, headers of `http`; body = `expression`; `vault_secret_key` → `Authorization: Bearer`); non-2xx: 429 `rate_limit`, 408 `timeout`, 401/403 `denied`, other 4xx `invalid_input`, else `unavailable` | the response body |
//! | CALL_FUNCTION | a pure built-in of [`functions`] | its result |
//! | LLM_CALL | system prompt, few-shot pairs, prompt (`{{slot}}` from vault secrets or runtime CEL) → `llm.complete`; JSON answers parsed and checked against `output_schema` | the answer |
//!
//! `input_schema` / `output_schema`, when set, are checked on params (→ `invalid_input`) and
//! results (→ `invalid_output`). Any instruction with a `resource_key` holds the arbiter's
//! permit for it during its effect (waiting at most the priority's `max_wait_ms`; expiry is
//! `resource_timeout`). `timeout.execution_timeout_ms` (default 30 s) is the port deadline.
//! A panic in an attempt (in a port, say) is caught and is an `internal` failure.
//! Failures go to the [`fallback`] engine.
//!
//! # Journal, audit, resume
//!
//! Every attempt is journaled and audited (inputs and outputs as SHA-256 digests of
//! canonical JSON — secrets are never inputs); the end is journaled with `Journal::finish`.
//! Every secret value resolved during the execution (vault slots, `Authorization` secrets)
//! is replaced by `[secret:NAME]` in each attempt's failure message and output before they
//! are journaled ([`Scrubber`]): a provider's error quoting the prompt stores no secret.
//! An execution keeps its steps in memory and hands them to the journal in one atomic
//! write per segment, **with their audit entries in the same write**: a step and its entry
//! are durable together or lost together.
//!
//! **Write-ahead for effects.** An instruction that acts outside the execution (CALL_ACTION,
//! CALL_API, CALL_SERVICE, EMIT_EVENT, cluster STORE) journals its *intent* — a `Started`
//! step with its idempotency key and input, audited as `started` — durably, together with
//! every earlier unsaved step, right before the effect starts (after its permit, its time
//! window and its human approval). So every answer the effect was decided on (resources
//! read, LLM answers, HTTP answers, memory reads, the clock of the time window) is durable
//! before the effect, and the effect's result is durable before the next effect (whose
//! intent write carries it), at a pause and at the end. Steps without effects are written
//! not durably every 64 steps, to bound memory. Steps inside loops are named
//! `loop/iteration/id`. A failed attempt's record names the decision taken (`retry`,
//! `fallback_value`, `fallback_model`, `skip`, `abort`, or none). Idempotency keys are
//! `execution_id/instruction_id/attempt`.
//!
//! Given the `history` of an interrupted execution, [`execute`] replays it: an instruction
//! with a recorded result is not run again (its effect is not repeated; an L1 STORE is
//! re-applied in memory), so a resumed execution takes the decisions it took before; one
//! whose attempts failed continues with the next attempt number; an attempt that was
//! started but not recorded and had no intent journaled runs again (it had no effect). An
//! effect whose **intent is journaled without a result** is resolved by what it declares:
//! CALL_ACTION asks the capability ([`OnResume`](crate::ports::OnResume)): `Reissue` runs
//! the same attempt again under the same key (without re-checking the time window the
//! intent passed; the result is recorded with fallback `reissued`), `ReadBack(action)`
//! invokes that read-only action with the same input and records its answer (fallback
//! `read_back`), otherwise an `Ambiguous` step is journaled and audited and the execution
//! pauses for an operator: approving issues it again under the same key, rejecting ends the
//! execution `Rejected`. CALL_API / CALL_SERVICE are reissued for the idempotent HTTP
//! methods (GET, HEAD, PUT, DELETE, OPTIONS) and ambiguous otherwise; EMIT_EVENT (the sink
//! drops a repeated key) and cluster STORE (the same value again) are reissued. Untaken
//! BRANCH arms are not journaled: the replayed BRANCH results decide them again.
//!
//! # Human validation
//!
//! An instruction with `requires_human_validation` asks `Journal::decision`: no decision →
//! an `AwaitingApproval` step is journaled (once) and [`execute`] returns
//! [`Report::Paused`]; approved → it runs; rejected → the execution finishes `Rejected`.
//! CALL_ACTION, CALL_API and CALL_SERVICE are held *before* acting; an LLM_CALL's *answer*
//! is held (journaled first, then approved before later instructions see it).

pub mod bounds;
mod digest;
mod engine;
mod error;
mod expr;
pub mod fallback;
pub mod functions;
mod ops;
mod program;
mod scrub;
mod trace;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use digest::{canonical_json, digest, lowercase_hex};
pub use error::Error;
pub use ops::in_window;
pub use program::{EvalError, Priority, Program, Trigger};
pub use scrub::Scrubber;
pub use trace::{canonical_trace, refused_trace};

use crate::gates::{Boundary, Fallbacks, ResourceGate};
use crate::ports::{
    ClusterMemory, EventRecord, EventSink, ExecutionOutcome, HttpPort, Journal, JournalError,
    LlmPort, NodeMemory, PluginPort, SecretSource, StepRecord,
};

/// Time as the engine sees it: time windows, backoff waits, postcondition polling, step
/// timestamps.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// Waits for `duration`: a timer of the actor runtime, never a sleeping thread.
    async fn sleep(&self, duration: Duration);
}

/// Wall-clock time, Unix milliseconds (0 before 1970, saturating far in the future): the
/// one reading of the system clock for the whole node (journal, audit, sources, API).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The system clock and the actor runtime's timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// Every port an execution reaches the world through.
#[derive(Clone)]
pub struct Effects {
    /// This node's id (in audit entries).
    pub node_id: String,
    /// Connectors and capabilities.
    pub plugins: Arc<dyn PluginPort>,
    /// Outgoing HTTP.
    pub http: Arc<dyn HttpPort>,
    /// LLM provider.
    pub llm: Arc<dyn LlmPort>,
    /// EMIT_EVENT sink.
    pub events: Arc<dyn EventSink>,
    /// Node memory (L2).
    pub node_memory: Arc<dyn NodeMemory>,
    /// Cluster memory (L3).
    pub cluster_memory: Arc<dyn ClusterMemory>,
    /// Secrets.
    pub secrets: Arc<dyn SecretSource>,
    /// The journal, which also appends the audit entries of each segment it writes.
    pub journal: Arc<dyn Journal>,
    /// Resource permits.
    pub arbiter: Arc<dyn ResourceGate>,
    /// The fallback engine's actor: decision log and retry timers.
    pub fallbacks: Arc<dyn Fallbacks>,
    /// The scheduler's instruction boundary.
    pub boundary: Arc<dyn Boundary>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// How a call to [`execute`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The execution ended; the outcome is journaled (`Journal::finish`).
    Finished(ExecutionOutcome),
    /// The execution waits for a human decision on `instruction_id` (journaled as
    /// `AwaitingApproval`, or `Ambiguous` for an effect whose result a crash left
    /// unknown); call [`execute`] again with the journaled steps once decided.
    Paused {
        /// The instruction (path id) awaiting the decision.
        instruction_id: String,
    },
    /// The journal (with the audit chain) failed: the execution stopped at its last durable step
    /// and is still pending; resume it later from the journal.
    Interrupted {
        /// The durability failure.
        error: JournalError,
    },
}

/// Runs execution `execution_id` of `program` for `event`, resuming after the steps of
/// `history` (empty for a new execution), until it finishes or pauses. A future: the node
/// runs it as a task of its actor runtime; it waits on the world without holding a thread.
pub async fn execute(
    program: &Program,
    execution_id: &str,
    event: &EventRecord,
    history: &[StepRecord],
    effects: &Effects,
) -> Report {
    engine::Run::new(program, execution_id, event, history, effects)
        .run()
        .await
}

/// [`execute`] for an execution admitted `waited` after its arrival, past its priority's
/// `max_wait`: the first instruction to run fails with `timeout` (the message says how
/// long it waited) and its fallback decides — a value or a skip lets the execution go
/// on, none fails it.
pub async fn execute_late(
    program: &Program,
    execution_id: &str,
    event: &EventRecord,
    history: &[StepRecord],
    effects: &Effects,
    waited: std::time::Duration,
) -> Report {
    let mut run = engine::Run::new(program, execution_id, event, history, effects);
    run.late = Some(format!(
        "waited {} ms for a worker, more than its max_wait",
        waited.as_millis()
    ));
    run.run().await
}
