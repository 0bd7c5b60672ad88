//! The walk: deterministic DAG order, journaling of every attempt, replay of a history,
//! the fallback engine's decisions, compensation, human validation.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures_util::FutureExt;

use eyeflow_ir::pb::{ErrorClass, IrOpcode, MemoryScope};
use serde_json::{Map, Value};

use super::Effects;
use super::digest::digest;
use super::expr::Vars;
use super::fallback::{Decision, Failure, class_by_name, class_name};
use super::program::{Prepared, Program, is_entry};
use super::scrub::Scrubber;
use crate::gates::Decided;
use crate::ports::{
    AuditEntry, CallError, EventRecord, ExecutionOutcome, Fallback, JournalError, OnResume,
    StepOutcome, StepRecord, ambiguity_id,
};

/// Why the walk stopped before the end of a region.
#[derive(Debug)]
pub(super) enum Stop {
    /// A RETURN gave the execution's value.
    Return(Value),
    /// The execution fails (no fallback, retries exhausted, or aborted after compensation).
    Fail(Failure),
    /// Waiting for a human decision on this instruction (path id).
    Paused(String),
    /// A human rejected this instruction (path id).
    Rejected(String),
    /// The journal or the audit log failed: nothing more may run.
    Journal(JournalError),
}

/// How an instruction ended, for the instructions that follow it.
#[derive(Debug, Clone)]
pub(super) enum Resolved {
    /// It gave a value.
    Done(Value),
    /// It was skipped by a fallback (followers still run; its name is `null`).
    Skipped,
}

/// How the first attempt of an effect found in doubt on resume (intent journaled, result
/// not) is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resumption {
    /// The same attempt again, under the same key, without a new intent.
    Reissue,
    /// This read-only action of the capability instead (CALL_ACTION only).
    ReadBack(String),
}

impl Resumption {
    /// The mark the attempt's result carries in its record's `fallback`.
    fn mark(&self) -> Fallback {
        match self {
            Self::Reissue => Fallback::Reissued,
            Self::ReadBack(_) => Fallback::ReadBack,
        }
    }
}

/// The attempt of an instruction an opcode runs: where to journal its intent.
pub(super) struct Attempt<'p> {
    pub(super) idx: usize,
    pub(super) path: &'p str,
    pub(super) number: u32,
    /// `execution_id/path/number`.
    pub(super) key: String,
}

/// Per-region state of an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    Skipped,
    /// On an untaken BRANCH arm: never runs.
    Dead,
}

/// One execution in progress.
pub(super) struct Run<'a> {
    pub(super) program: &'a Program,
    pub(super) execution_id: &'a str,
    pub(super) fx: &'a Effects,
    /// Journaled steps by path id, in order.
    history: HashMap<String, Vec<StepRecord>>,
    /// The next step's sequence number, shared with the runs of parallel siblings.
    seq: Arc<AtomicU64>,
    /// What expressions see.
    pub(super) vars: Vars,
    /// Current result of each instruction that ran in the current scope.
    pub(super) outputs: HashMap<usize, Value>,
    /// The execution scope memory (L1).
    pub(super) l1: Map<String, Value>,
    /// Whether L1 is visible as the `memory` variable (no instruction output is so named).
    l1_visible: bool,
    /// Steps (with their audit entries) not yet handed to the journal.
    unsaved: Vec<(AuditEntry, StepRecord)>,
    /// Set while the first attempt of an effect in doubt runs again.
    pub(super) resuming: Option<Resumption>,
    /// The journal refused an intent: the attempt failed without acting, and the execution
    /// must stop.
    journal_failed: Option<JournalError>,
    /// Every secret resolved so far: their values are taken out of each attempt's message
    /// and output before they are journaled.
    pub(super) scrubber: Scrubber,
    /// Admitted past its `max_wait` (why, in words): the first instruction to run fails
    /// with `timeout` and takes its fallback.
    pub(super) late: Option<String>,
    /// Whether this is the execution's own run, not one of several parallel siblings: only
    /// it gives the execution's slot up while the journal makes its steps durable (a
    /// sibling's wait would give up the slot the others compute on).
    alone: bool,
    /// Arbiter permits this run holds (`ops::Held`): while it holds one it keeps its slot
    /// through its waits on the journal — executions waiting for that key hold theirs, and
    /// it could not come back.
    pub(super) permits: Arc<AtomicUsize>,
}

/// How long an execution keeps trying to be admitted at an instruction whose actor is down.
const ENTER_WITHIN_MS: u64 = 5_000;

/// Between two tries to reach an instruction actor being restarted.
const REENTER: std::time::Duration = std::time::Duration::from_millis(10);

/// Unsaved steps past which they are written (not durably) to bound the memory of a long
/// execution without effects.
const SAVE_EVERY: usize = 64;

impl<'a> Run<'a> {
    pub(super) fn new(
        program: &'a Program,
        execution_id: &'a str,
        event: &'a EventRecord,
        history: &[StepRecord],
        fx: &'a Effects,
    ) -> Self {
        let mut by_path: HashMap<String, Vec<StepRecord>> = HashMap::new();
        let mut next_seq = 0;
        for step in history.iter().filter(|s| s.execution_id == execution_id) {
            next_seq = next_seq.max(step.seq + 1);
            by_path
                .entry(step.instruction_id.clone())
                .or_default()
                .push(step.clone());
        }
        for steps in by_path.values_mut() {
            steps.sort_by_key(|s| s.seq);
        }
        let mut vars = Vars::default();
        vars.set("event", &event.payload);
        let l1_visible = !program.instructions.iter().any(|i| i.output == "memory");
        if l1_visible {
            vars.set("memory", &Value::Object(Map::new()));
        }
        Self {
            program,
            execution_id,
            fx,
            history: by_path,
            seq: Arc::new(AtomicU64::new(next_seq)),
            vars,
            outputs: HashMap::new(),
            l1: Map::new(),
            l1_visible,
            unsaved: Vec::new(),
            resuming: None,
            journal_failed: None,
            scrubber: Scrubber::new(),
            late: None,
            alone: true,
            permits: Arc::default(),
        }
    }

    /// Runs the program to its end and journals the outcome.
    pub(super) async fn run(mut self) -> super::Report {
        let top = self.program.top.clone();
        let outcome = match self.region(&top, "").await {
            Ok(()) => ExecutionOutcome::Completed { value: Value::Null },
            Err(Stop::Return(value)) => ExecutionOutcome::Completed { value },
            Err(Stop::Fail(f)) => ExecutionOutcome::Failed {
                class: class_name(f.class).to_owned(),
                message: f.message,
            },
            Err(Stop::Rejected(instruction_id)) => ExecutionOutcome::Rejected { instruction_id },
            Err(Stop::Paused(instruction_id)) => {
                return super::Report::Paused { instruction_id };
            }
            Err(Stop::Journal(error)) => return super::Report::Interrupted { error },
        };
        let (entries, steps): (Vec<AuditEntry>, Vec<StepRecord>) =
            std::mem::take(&mut self.unsaved).into_iter().unzip();
        let finish = self
            .fx
            .journal
            .finish(self.execution_id, &steps, &entries, &outcome);
        match self.without_slot(true, finish).await {
            Ok(()) => super::Report::Finished(outcome),
            Err(error) => super::Report::Interrupted { error },
        }
    }

    /// Journals the unsaved steps with their audit entries, in one atomic write;
    /// `durable`: before returning.
    async fn save(&mut self, durable: bool) -> Result<(), JournalError> {
        if self.unsaved.is_empty() && !durable {
            return Ok(());
        }
        let (entries, steps): (Vec<AuditEntry>, Vec<StepRecord>) =
            std::mem::take(&mut self.unsaved).into_iter().unzip();
        let journal = &self.fx.journal;
        let rests = durable && self.alone && self.permits.load(Ordering::SeqCst) == 0;
        if !rests {
            return journal.steps(&steps, &entries, durable).await;
        }
        self.without_slot(false, journal.steps(&steps, &entries, true))
            .await
    }

    /// Runs `write` — a journal write awaited durable — through the scheduler's
    /// [`Boundary::durable`]: the execution holds no slot while it waits for the fsync
    /// (`last`: its end's write, after which it only returns).
    async fn without_slot(
        &self,
        last: bool,
        write: impl std::future::Future<Output = Result<(), JournalError>> + Send,
    ) -> Result<(), JournalError> {
        let mut written = None;
        let wait = async {
            written = Some(write.await);
        };
        self.fx
            .boundary
            .durable(self.program.id(), self.execution_id, last, Box::pin(wait))
            .await;
        written.unwrap_or_else(|| {
            Err(JournalError::new(
                "journal steps",
                "the scheduler's boundary did not run the write",
            ))
        })
    }

    /// Journals the intent of the effect `at` is about to start — durably, with every
    /// unsaved step — unless this attempt re-issues an intent already journaled. An error
    /// means the effect must not start (the execution then stops: see `instruction`).
    pub(super) async fn intent(&mut self, at: &Attempt<'_>, input: &Value) -> Result<(), Failure> {
        if self.resuming.is_some() {
            return Ok(());
        }
        let now = self.fx.clock.now_ms();
        self.push(
            at.idx,
            at.path,
            at.number,
            StepOutcome::Started {
                idempotency_key: at.key.clone(),
                input: input.clone(),
            },
            None,
            now,
            input,
        );
        self.save(true).await.map_err(|e| {
            let failure = Failure::new(
                ErrorClass::Unavailable,
                format!("the journal refused the intent of `{}`: {e}", at.path),
            );
            self.journal_failed = Some(e);
            failure
        })
    }

    /// Sets an L1 entry (and the `memory` variable).
    pub(super) fn set_l1(&mut self, key: &str, value: Value) {
        self.l1.insert(key.to_owned(), value);
        if self.l1_visible {
            self.vars.set("memory", &Value::Object(self.l1.clone()));
        }
    }

    fn bind(&mut self, idx: usize, resolved: &Resolved) {
        let value = match resolved {
            Resolved::Done(v) => v.clone(),
            Resolved::Skipped => Value::Null,
        };
        let name = self.program.instructions[idx].output.clone();
        self.vars.set(&name, &value);
        self.outputs.insert(idx, value);
    }

    fn unbind(&mut self, idx: usize) {
        let name = self.program.instructions[idx].output.clone();
        self.vars.remove(&name);
        self.outputs.remove(&idx);
    }

    /// Runs the instructions of one region (the top level or one loop iteration) in
    /// deterministic order: the first ready member by (sequence_number, id) runs next —
    /// together with every other member ready at the same moment when both may run beside
    /// their siblings (the opcode table's `concurrent`: parallel branches run at once).
    pub(super) async fn region(&mut self, members: &[usize], prefix: &str) -> Result<(), Stop> {
        let program = self.program;
        let mut state: HashMap<usize, State> = HashMap::new();
        let mut chosen: HashMap<usize, Option<usize>> = HashMap::new();
        let inside = |i: &usize| members.contains(i);
        loop {
            let ready: Vec<usize> = members
                .iter()
                .copied()
                .filter(|m| {
                    let ins = &program.instructions[*m];
                    !state.contains_key(m)
                        && ins.deps.iter().all(|d| state.contains_key(d))
                        && ins
                            .branch_parents
                            .iter()
                            .filter(|p| inside(p))
                            .all(|p| state.contains_key(p))
                })
                .collect();
            let Some(&first) = ready.first() else {
                return Ok(());
            };
            let live = |m: usize| {
                let ins = &program.instructions[m];
                is_entry(ins)
                    || ins
                        .deps
                        .iter()
                        .any(|d| matches!(state.get(d), Some(State::Done | State::Skipped)))
                    || ins
                        .branch_parents
                        .iter()
                        .any(|p| chosen.get(p).copied().flatten() == Some(m))
            };
            if !live(first) {
                state.insert(first, State::Dead);
                continue;
            }
            let concurrent = |m: usize| {
                eyeflow_ir::opcode::spec(program.instructions[m].opcode)
                    .is_some_and(|row| row.concurrent)
            };
            let wave: Vec<usize> = if concurrent(first) {
                ready
                    .iter()
                    .copied()
                    .filter(|&m| concurrent(m) && live(m))
                    .collect()
            } else {
                vec![first]
            };
            if let [m] = wave[..] {
                let resolved = self.instruction(m, prefix).await?;
                self.settle(m, resolved, &mut state, &mut chosen)?;
            } else {
                self.parallel(&wave, prefix, &mut state, &mut chosen)
                    .await?;
            }
        }
    }

    /// Runs `wave` (members of one region, ready together, none reading another's result)
    /// at once, each in a run of its own that sees what this run sees; their steps join
    /// this run's in the order of `wave`, and so do their results. The first to stop stops
    /// the region, once every sibling has ended (what they did is journaled).
    async fn parallel(
        &mut self,
        wave: &[usize],
        prefix: &str,
        state: &mut HashMap<usize, State>,
        chosen: &mut HashMap<usize, Option<usize>>,
    ) -> Result<(), Stop> {
        let effects = wave.iter().any(|&m| {
            eyeflow_ir::opcode::spec(self.program.instructions[m].opcode)
                .is_some_and(|row| row.effect.is_effect())
        });
        if effects {
            // An effect's intent is journaled durably with the steps it was decided on:
            // those of this run are written first, so the sibling's durable write covers
            // them.
            self.save(false).await.map_err(Stop::Journal)?;
        }
        let mut siblings: Vec<Run<'a>> = wave.iter().map(|_| self.sibling()).collect();
        let results = futures_util::future::join_all(
            siblings
                .iter_mut()
                .zip(wave)
                .map(|(run, &m)| Box::pin(run.instruction(m, prefix))),
        )
        .await;
        let mut stop = None;
        for ((run, &m), result) in siblings.into_iter().zip(wave).zip(results) {
            self.unsaved.extend(run.unsaved);
            self.scrubber.absorb(run.scrubber);
            // What a sibling replayed from the journal is not replayed again.
            self.history
                .retain(|path, _| run.history.contains_key(path));
            match result {
                Ok(resolved) if stop.is_none() => {
                    if let Err(s) = self.settle(m, resolved, state, chosen) {
                        stop = Some(s);
                    }
                }
                Ok(_) => {}
                Err(s) => {
                    stop.get_or_insert(s);
                }
            }
        }
        stop.map_or(Ok(()), Err)
    }

    /// A run for one of several instructions running at once: this run's variables,
    /// results, L1 memory, known secrets and journaled history, the same step sequence,
    /// nothing unsaved (and the late admission, taken once).
    fn sibling(&mut self) -> Run<'a> {
        Run {
            program: self.program,
            execution_id: self.execution_id,
            fx: self.fx,
            history: self.history.clone(),
            seq: self.seq.clone(),
            vars: self.vars.clone(),
            outputs: self.outputs.clone(),
            l1: self.l1.clone(),
            l1_visible: self.l1_visible,
            unsaved: Vec::new(),
            resuming: None,
            journal_failed: None,
            scrubber: self.scrubber.clone(),
            late: self.late.take(),
            alone: false,
            permits: Arc::default(),
        }
    }

    /// Records how member `m` resolved: its state, a BRANCH's arm, its result's binding; a
    /// RETURN's value stops the region.
    fn settle(
        &mut self,
        m: usize,
        resolved: Resolved,
        state: &mut HashMap<usize, State>,
        chosen: &mut HashMap<usize, Option<usize>>,
    ) -> Result<(), Stop> {
        let ins = &self.program.instructions[m];
        if ins.opcode == IrOpcode::Branch {
            let taken = matches!(resolved, Resolved::Done(Value::Bool(true)));
            chosen.insert(
                m,
                if taken {
                    ins.branch_true
                } else {
                    ins.branch_false
                },
            );
        }
        state.insert(
            m,
            match resolved {
                Resolved::Done(_) => State::Done,
                Resolved::Skipped => State::Skipped,
            },
        );
        self.bind(m, &resolved);
        if ins.opcode == IrOpcode::Return
            && let Resolved::Done(value) = resolved
        {
            return Err(Stop::Return(value));
        }
        Ok(())
    }

    /// Journals one step and its audit entry: at once and durably when the execution then
    /// waits for a decision, with the next write otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &mut self,
        idx: usize,
        path: &str,
        attempt: u32,
        outcome: StepOutcome,
        fallback: Option<Fallback>,
        started_ms: u64,
        inputs: &Value,
    ) -> Result<(), Stop> {
        let pause = outcome.waits_for_decision();
        self.push(idx, path, attempt, outcome, fallback, started_ms, inputs);
        if pause {
            self.save(true).await.map_err(Stop::Journal)
        } else if self.unsaved.len() >= SAVE_EVERY {
            self.save(false).await.map_err(Stop::Journal)
        } else {
            Ok(())
        }
    }

    /// Adds one step and its audit entry to the unsaved segment.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        idx: usize,
        path: &str,
        attempt: u32,
        outcome: StepOutcome,
        fallback: Option<Fallback>,
        started_ms: u64,
        inputs: &Value,
    ) {
        let finished_ms = self.fx.clock.now_ms();
        let step = StepRecord {
            execution_id: self.execution_id.to_owned(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            instruction_id: path.to_owned(),
            attempt,
            outcome,
            fallback,
            started_ms,
            finished_ms,
        };
        let output = match &step.outcome {
            StepOutcome::Done { output } => output,
            _ => &Value::Null,
        };
        let ins = &self.program.instructions[idx];
        let entry = AuditEntry {
            node_id: self.fx.node_id.clone(),
            execution_id: self.execution_id.to_owned(),
            program_id: self.program.id().to_owned(),
            program_version: self.program.version().to_owned(),
            program_sha256: self.program.signed_sha256().map(str::to_owned),
            instruction_id: path.to_owned(),
            opcode: ins.opcode.as_str_name().to_owned(),
            input_digest: digest(inputs),
            output_digest: digest(output),
            outcome: step.outcome.audit_name(),
            fallback: step.fallback.map(|f| f.as_str().to_owned()),
            started_ms,
            finished_ms,
        };
        self.unsaved.push((entry, step));
    }

    /// Re-applies the in-memory effect of a replayed step (L1 STORE).
    fn replay(&mut self, idx: usize, output: &Value) {
        let ins = &self.program.instructions[idx];
        if ins.opcode == IrOpcode::Store
            && let Some(m) = ins
                .memory
                .as_ref()
                .filter(|m| m.scope == MemoryScope::Execution)
        {
            let key = m.key.clone();
            self.set_l1(&key, output.clone());
        }
    }

    /// The human decision on `path`: `Ok(true)` to go on; otherwise the stop (pause, after
    /// journaling AwaitingApproval once, or rejection).
    async fn approval(
        &mut self,
        idx: usize,
        path: &str,
        attempt: u32,
        already_awaiting: bool,
    ) -> Result<(), Stop> {
        match self.fx.journal.decision(self.execution_id, path) {
            Err(e) => Err(Stop::Journal(e)),
            Ok(Some(true)) => Ok(()),
            Ok(Some(false)) => Err(Stop::Rejected(path.to_owned())),
            Ok(None) => {
                if !already_awaiting {
                    let now = self.fx.clock.now_ms();
                    self.record(
                        idx,
                        path,
                        attempt,
                        StepOutcome::AwaitingApproval,
                        None,
                        now,
                        &Value::Null,
                    )
                    .await?;
                }
                Err(Stop::Paused(path.to_owned()))
            }
        }
    }

    /// Admission at instruction `idx` by its instruction actor, when the program runs in a
    /// node's tree. An actor being restarted refuses at once: the execution tries again
    /// (its program actor may have been restarted too, so the stations are read anew) for
    /// up to [`ENTER_WITHIN_MS`].
    async fn enter(&self, idx: usize) -> Result<(), CallError> {
        let deadline = self.fx.clock.now_ms().saturating_add(ENTER_WITHIN_MS);
        loop {
            let Some(stations) = self.program.stations() else {
                return Ok(());
            };
            match stations.enter(idx).await {
                Ok(()) => return Ok(()),
                Err(e) if self.fx.clock.now_ms() >= deadline => return Err(e),
                Err(_) => self.fx.clock.sleep(REENTER).await,
            }
        }
    }

    /// The scheduler's boundary before instruction `ins` runs (where a preemptible
    /// execution may be parked).
    async fn boundary(&self, ins: &Prepared) {
        self.fx
            .boundary
            .checkpoint(
                self.execution_id,
                ins.priority.level,
                ins.priority.preemptible,
            )
            .await;
    }

    /// Runs (or replays) one instruction, with retries, fallbacks and compensation.
    pub(super) async fn instruction(&mut self, idx: usize, prefix: &str) -> Result<Resolved, Stop> {
        let program = self.program;
        let ins = &program.instructions[idx];
        let path = format!("{prefix}{}", ins.id);
        let records = self.history.remove(&path).unwrap_or_default();

        // Reconstruct where the journaled attempts left off.
        let mut attempt = 0;
        let mut retries = 0;
        let mut switched = false;
        let mut done = None;
        let mut awaiting = false;
        let mut pending: Option<(Decision, Failure)> = None;
        // An effect's intent without a result yet (attempt), and whether a resume already
        // found it ambiguous.
        let mut in_doubt: Option<u32> = None;
        let mut ambiguous = false;
        for r in &records {
            attempt = attempt.max(r.attempt);
            match &r.outcome {
                StepOutcome::Started { .. } => in_doubt = Some(r.attempt),
                StepOutcome::Ambiguous { .. } => ambiguous = true,
                _ => (in_doubt, ambiguous) = (None, false),
            }
            match &r.outcome {
                StepOutcome::Started { .. } | StepOutcome::Ambiguous { .. } => {}
                StepOutcome::Done { output } => done = Some(output.clone()),
                StepOutcome::Skipped => return Ok(Resolved::Skipped),
                StepOutcome::AwaitingApproval => awaiting = true,
                StepOutcome::Failed { class, message } => {
                    let failure = Failure::new(
                        class_by_name(class).unwrap_or(ErrorClass::Internal),
                        message.clone(),
                    );
                    pending = None;
                    match r.fallback {
                        Some(Fallback::Retry) => retries += 1,
                        Some(Fallback::FallbackModel) => {
                            switched = true;
                            retries = 0;
                        }
                        Some(Fallback::FallbackValue) => {
                            pending = Some((Decision::Value(ins.policy.value()), failure));
                        }
                        Some(Fallback::Skip) => pending = Some((Decision::Skip, failure)),
                        Some(Fallback::Abort) => pending = Some((Decision::Abort, failure)),
                        Some(Fallback::Reissued | Fallback::ReadBack) | None => {
                            pending = Some((Decision::Fail, failure));
                        }
                    }
                }
            }
        }
        let validate_after = ins.requires_validation && ins.opcode == IrOpcode::LlmCall;
        if let Some(output) = done {
            if validate_after {
                self.approval(idx, &path, attempt, awaiting).await?;
            }
            self.replay(idx, &output);
            return Ok(Resolved::Done(output));
        }
        if let Some((decision, failure)) = pending {
            return self
                .conclude(idx, &path, prefix, attempt, decision, failure)
                .await;
        }
        if attempt == 0
            && let Some(failure) = ins.refused()
        {
            // Never run: the signed program does not grant what this instruction does.
            let now = self.fx.clock.now_ms();
            return self
                .refuse(idx, (&path, prefix), now, failure, Decision::Fail)
                .await;
        }
        if attempt == 0
            && let Some(message) = self.late.take()
        {
            // Admitted past max_wait: this instruction fails `timeout` at once and takes its
            // fallback (no retry: waiting again would only be later).
            let decision = ins.policy.decide(ErrorClass::Timeout, u32::MAX, true);
            let failure = Failure::new(ErrorClass::Timeout, message);
            let now = self.fx.clock.now_ms();
            return self
                .refuse(idx, (&path, prefix), now, failure, decision)
                .await;
        }
        if let Err(e) = self.enter(idx).await {
            // Its instruction actor stayed down for longer than the tree's call timeout:
            // the instruction fails as `unavailable` without running, and its fallback
            // decides (no retry: the wait already was one).
            let now = self.fx.clock.now_ms();
            let failure = Failure::from(e);
            let decision = ins.policy.decide(failure.class, u32::MAX, true);
            return self
                .refuse(idx, (&path, prefix), now, failure, decision)
                .await;
        }
        if ins.opcode == IrOpcode::Loop {
            self.boundary(ins).await;
            return self.run_loop(idx, &path, prefix).await;
        }
        if ins.requires_validation && !validate_after {
            self.approval(idx, &path, 0, awaiting).await?;
        }
        self.boundary(ins).await;
        let mut resume = match in_doubt {
            Some(n) => {
                let how = self.in_doubt(idx, &path, n, ambiguous).await?;
                attempt = n.saturating_sub(1);
                Some(how)
            }
            None => None,
        };
        loop {
            attempt += 1;
            let model = if switched {
                Some(ins.policy.alternative_model().to_owned())
            } else {
                None
            };
            self.resuming = resume.take();
            let mark = self.resuming.as_ref().map(Resumption::mark);
            let started = self.fx.clock.now_ms();
            let mut inputs = Value::Null;
            let result =
                AssertUnwindSafe(self.attempt(idx, &path, attempt, model.as_deref(), &mut inputs))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".to_owned());
                        Err(Failure::new(
                            ErrorClass::Internal,
                            format!("`{}` panicked: {what}", ins.id),
                        ))
                    });
            // Secret values never reach the journal, the audit, the outcome or later steps.
            // Nor does a value the journal could not hold (see `bounds`).
            let result = match result {
                Ok(mut output) => {
                    self.scrubber.scrub_value(&mut output);
                    match super::bounds::check(&output, &format!("the result of `{}`", ins.id)) {
                        None => Ok(output),
                        Some(why) => Err(Failure::new(ErrorClass::InvalidOutput, why)),
                    }
                }
                Err(mut failure) => {
                    self.scrubber.scrub_string(&mut failure.message);
                    super::bounds::cut_message(&mut failure.message);
                    Err(failure)
                }
            };
            self.resuming = None;
            if let Some(error) = self.journal_failed.take() {
                return Err(Stop::Journal(error));
            }
            match result {
                Ok(output) => {
                    self.record(
                        idx,
                        &path,
                        attempt,
                        StepOutcome::Done {
                            output: output.clone(),
                        },
                        mark.or(switched.then_some(Fallback::FallbackModel)),
                        started,
                        &inputs,
                    )
                    .await?;
                    if validate_after {
                        self.approval(idx, &path, attempt, false).await?;
                    }
                    return Ok(Resolved::Done(output));
                }
                Err(failure) => {
                    let decision = ins.policy.decide(failure.class, retries, switched);
                    self.record(
                        idx,
                        &path,
                        attempt,
                        StepOutcome::Failed {
                            class: class_name(failure.class).to_owned(),
                            message: failure.message.clone(),
                        },
                        decision.taken(),
                        started,
                        &inputs,
                    )
                    .await?;
                    self.decided(&path, failure.class, &decision).await;
                    match decision {
                        Decision::Retry { .. } => retries += 1,
                        Decision::Model(_) => {
                            switched = true;
                            retries = 0;
                        }
                        other => {
                            return self
                                .conclude(idx, &path, prefix, attempt, other, failure)
                                .await;
                        }
                    }
                }
            }
        }
    }

    /// How an effect whose intent attempt `n` is journaled without a result runs again, by
    /// what it declares (see the module docs); pauses (after journaling `Ambiguous` once)
    /// while an operator has not decided, stops on a rejection.
    async fn in_doubt(
        &mut self,
        idx: usize,
        path: &str,
        n: u32,
        already_ambiguous: bool,
    ) -> Result<Resumption, Stop> {
        let ins = &self.program.instructions[idx];
        let declared = if already_ambiguous {
            OnResume::Ambiguous
        } else {
            self.on_resume(ins)
        };
        match declared {
            OnResume::Reissue => return Ok(Resumption::Reissue),
            OnResume::ReadBack(action) => return Ok(Resumption::ReadBack(action)),
            OnResume::Ambiguous => {}
        }
        match self
            .fx
            .journal
            .decision(self.execution_id, &ambiguity_id(path, n))
            .map_err(Stop::Journal)?
        {
            Some(true) => Ok(Resumption::Reissue),
            Some(false) => Err(Stop::Rejected(path.to_owned())),
            None => {
                if !already_ambiguous {
                    let now = self.fx.clock.now_ms();
                    let idempotency_key = format!("{}/{path}/{n}", self.execution_id);
                    self.record(
                        idx,
                        path,
                        n,
                        StepOutcome::Ambiguous { idempotency_key },
                        None,
                        now,
                        &Value::Null,
                    )
                    .await?;
                }
                Err(Stop::Paused(path.to_owned()))
            }
        }
    }

    /// What an effect declares for a resume that finds its result unknown.
    fn on_resume(&self, ins: &Prepared) -> OnResume {
        match ins.opcode {
            IrOpcode::CallAction => match &ins.capability {
                Some(capability) => self.fx.plugins.on_resume(capability, &ins.action),
                None => OnResume::Ambiguous,
            },
            // The Idempotency-Key header is sent, but only these methods are idempotent
            // whatever the server does with it.
            IrOpcode::CallApi | IrOpcode::CallService => {
                let method = ins.http.as_ref().map_or("GET", |h| h.method.as_str());
                let idempotent = ["", "GET", "HEAD", "PUT", "DELETE", "OPTIONS"]
                    .iter()
                    .any(|m| method.eq_ignore_ascii_case(m));
                if idempotent {
                    OnResume::Reissue
                } else {
                    OnResume::Ambiguous
                }
            }
            // The event sink drops a repeated key; a cluster STORE puts the same value.
            _ => OnResume::Reissue,
        }
    }

    /// Fails instruction `idx` as one attempt started at `started` (journaled and audited
    /// as failed with `decision`'s name), then applies `decision`.
    async fn refuse(
        &mut self,
        idx: usize,
        (path, prefix): (&str, &str),
        started: u64,
        failure: Failure,
        decision: Decision,
    ) -> Result<Resolved, Stop> {
        self.record(
            idx,
            path,
            1,
            StepOutcome::Failed {
                class: class_name(failure.class).to_owned(),
                message: failure.message.clone(),
            },
            decision.taken(),
            started,
            &Value::Null,
        )
        .await?;
        self.decided(path, failure.class, &decision).await;
        self.conclude(idx, path, prefix, 1, decision, failure).await
    }

    /// Hands `decision` to the fallback engine's actor, which logs it and, for a retry,
    /// answers once the delay has passed. An actor down for longer than its callers wait
    /// has already made the wait longer than any backoff: the execution goes on.
    async fn decided(&self, path: &str, class: ErrorClass, decision: &Decision) {
        let decided = Decided {
            program: format!("{}@{}", self.program.id(), self.program.version()),
            instruction: path.to_owned(),
            class: class_name(class),
            decision: decision.taken().map_or("fail", Fallback::as_str),
            delay: match decision {
                Decision::Retry { delay } => Some(*delay),
                _ => None,
            },
        };
        if let Err(e) = self.fx.fallbacks.decided(decided).await {
            tracing::warn!(execution = self.execution_id, "fallback engine: {e}");
        }
    }

    /// Applies a final decision (journaled as the last failed attempt's fallback).
    async fn conclude(
        &mut self,
        idx: usize,
        path: &str,
        prefix: &str,
        attempt: u32,
        decision: Decision,
        failure: Failure,
    ) -> Result<Resolved, Stop> {
        let now = self.fx.clock.now_ms();
        match decision {
            Decision::Value(value) => {
                self.record(
                    idx,
                    path,
                    attempt,
                    StepOutcome::Done {
                        output: value.clone(),
                    },
                    Some(Fallback::FallbackValue),
                    now,
                    &Value::Null,
                )
                .await?;
                Ok(Resolved::Done(value))
            }
            Decision::Skip => {
                self.record(
                    idx,
                    path,
                    attempt,
                    StepOutcome::Skipped,
                    Some(Fallback::Skip),
                    now,
                    &Value::Null,
                )
                .await?;
                Ok(Resolved::Skipped)
            }
            Decision::Abort => {
                self.compensate(idx, prefix).await?;
                Err(Stop::Fail(Failure::new(
                    failure.class,
                    format!("aborted at `{path}`: {}", failure.message),
                )))
            }
            Decision::Fail | Decision::Retry { .. } | Decision::Model(_) => {
                Err(Stop::Fail(failure))
            }
        }
    }

    /// Runs the compensation steps of `owner` in reverse order, best effort: a failing step
    /// does not stop the others.
    async fn compensate(&mut self, owner: usize, prefix: &str) -> Result<(), Stop> {
        let steps = self.program.instructions[owner].compensation.clone();
        for step in steps.into_iter().rev() {
            // Boxed: compensation recurses through `instruction`.
            match Box::pin(self.instruction(step, prefix)).await {
                Ok(resolved) => self.bind(step, &resolved),
                Err(Stop::Fail(_) | Stop::Return(_) | Stop::Rejected(_)) => {}
                Err(stop) => return Err(stop),
            }
        }
        Ok(())
    }

    /// A LOOP: runs its body once per item (or while its condition holds, or
    /// `max_iterations` times), each iteration a region whose steps are journaled as
    /// `loop/iteration/id`. Its result is the list of per-iteration objects (body output
    /// name → value, for the body instructions that ran).
    async fn run_loop(&mut self, idx: usize, path: &str, prefix: &str) -> Result<Resolved, Stop> {
        let program = self.program;
        let ins = &program.instructions[idx];
        let Some(l) = &ins.looping else {
            return self
                .conclude(
                    idx,
                    path,
                    prefix,
                    1,
                    Decision::Fail,
                    Failure::new(ErrorClass::Internal, "LOOP without a loop config"),
                )
                .await;
        };
        let started = self.fx.clock.now_ms();
        let listed = match &l.items {
            None => Ok(None),
            Some(expr) => match expr.eval(&self.vars) {
                Ok(Value::Array(items)) if items.len() <= l.max_iterations as usize => {
                    Ok(Some(items))
                }
                Ok(Value::Array(items)) => Err(format!(
                    "LOOP `{}` has {} items, more than max_iterations {}",
                    ins.id,
                    items.len(),
                    l.max_iterations
                )),
                Ok(other) => Err(format!(
                    "LOOP `{}`: items_expr gave {}, expected a list",
                    ins.id,
                    super::expr::kind_of(&other)
                )),
                Err(e) => Err(e),
            },
        };
        let items = match listed {
            Ok(items) => items,
            Err(why) => {
                let failure = Failure::new(ErrorClass::InvalidInput, why);
                return self.loop_failed(idx, path, prefix, started, failure).await;
            }
        };
        let rounds = items.as_ref().map_or(l.max_iterations as usize, Vec::len);
        let mut results = Vec::with_capacity(rounds);
        for n in 0..rounds {
            if let Some(limit) = ins.timeout {
                let elapsed = self.fx.clock.now_ms().saturating_sub(started);
                if u128::from(elapsed) > limit.as_millis() {
                    let failure = Failure::new(
                        ErrorClass::Timeout,
                        format!(
                            "LOOP `{}` exceeded {} ms after {n} iterations",
                            ins.id,
                            limit.as_millis()
                        ),
                    );
                    return self.loop_failed(idx, path, prefix, started, failure).await;
                }
            }
            if let Some(cond) = &l.while_condition {
                match cond.eval_bool(&self.vars) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        let failure = Failure::new(ErrorClass::InvalidInput, e);
                        return self.loop_failed(idx, path, prefix, started, failure).await;
                    }
                }
            }
            for &member in &l.body {
                self.unbind(member);
            }
            if let Some(items) = &items {
                self.vars.set(&l.item_var, &items[n]);
            }
            // Boxed: a loop body recurses through `region`.
            Box::pin(self.region(&l.body, &format!("{path}/{n}/"))).await?;
            let mut round = Map::new();
            for &member in &l.body {
                if let Some(v) = self.outputs.get(&member) {
                    round.insert(program.instructions[member].output.clone(), v.clone());
                }
            }
            results.push(Value::Object(round));
        }
        for &member in &l.body {
            self.unbind(member);
        }
        if items.is_some() {
            self.vars.remove(&l.item_var);
        }
        let output = Value::Array(results);
        self.record(
            idx,
            path,
            1,
            StepOutcome::Done {
                output: output.clone(),
            },
            None,
            started,
            &Value::Null,
        )
        .await?;
        Ok(Resolved::Done(output))
    }

    async fn loop_failed(
        &mut self,
        idx: usize,
        path: &str,
        prefix: &str,
        started: u64,
        failure: Failure,
    ) -> Result<Resolved, Stop> {
        let ins = &self.program.instructions[idx];
        let decision = if failure.class == ErrorClass::Timeout {
            ins.policy.on_loop_timeout()
        } else {
            Decision::Fail
        };
        self.refuse(idx, (path, prefix), started, failure, decision)
            .await
    }
}
