//! The walk: deterministic DAG order, journaling of every attempt, replay of a history,
//! the fallback engine's decisions, compensation, human validation.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use eyeflow_ir::pb::{ErrorClass, IrOpcode, MemoryScope};
use serde_json::{Map, Value};

use super::Effects;
use super::digest::digest;
use super::expr::Vars;
use super::fallback::{Decision, Failure, class_by_name, class_name};
use super::program::{Program, is_entry};
use crate::ports::{AuditEntry, CallError, EventRecord, ExecutionOutcome, StepOutcome, StepRecord};

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
    Journal(CallError),
}

/// How an instruction ended, for the instructions that follow it.
#[derive(Debug, Clone)]
pub(super) enum Resolved {
    /// It gave a value.
    Done(Value),
    /// It was skipped by a fallback (followers still run; its name is `null`).
    Skipped,
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
    next_seq: u64,
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
    /// One of them is an effect's: it must be durable before the next effect starts.
    unsaved_effect: bool,
}

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
            next_seq,
            vars,
            outputs: HashMap::new(),
            l1: Map::new(),
            l1_visible,
            unsaved: Vec::new(),
            unsaved_effect: false,
        }
    }

    /// Runs the program to its end and journals the outcome.
    pub(super) fn run(mut self) -> super::Report {
        let top = self.program.top.clone();
        let outcome = match self.region(&top, "") {
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
        let ended = self
            .save_audit()
            .and_then(|steps| self.fx.journal.finish(self.execution_id, &steps, &outcome));
        match ended {
            Ok(()) => super::Report::Finished(outcome),
            Err(error) => super::Report::Interrupted { error },
        }
    }

    /// Appends the audit entries of the unsaved steps to the chain and hands back the
    /// steps, for the journal write that follows at once (and covers the entries).
    fn save_audit(&mut self) -> Result<Vec<StepRecord>, CallError> {
        let (entries, steps): (Vec<AuditEntry>, Vec<StepRecord>) =
            std::mem::take(&mut self.unsaved).into_iter().unzip();
        if !entries.is_empty() {
            self.fx.audit.append_all(&entries)?;
        }
        Ok(steps)
    }

    /// Journals the unsaved steps; `durable`: before returning (and then no unsaved effect
    /// is left).
    fn save(&mut self, durable: bool) -> Result<(), Stop> {
        let steps = self.save_audit().map_err(Stop::Journal)?;
        if durable || !steps.is_empty() {
            self.fx
                .journal
                .steps(&steps, durable)
                .map_err(Stop::Journal)?;
        }
        if durable {
            self.unsaved_effect = false;
        }
        Ok(())
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
    /// deterministic order: the first ready member by (sequence_number, id) runs next.
    pub(super) fn region(&mut self, members: &[usize], prefix: &str) -> Result<(), Stop> {
        let program = self.program;
        let mut state: HashMap<usize, State> = HashMap::new();
        let mut chosen: HashMap<usize, Option<usize>> = HashMap::new();
        let inside = |i: &usize| members.contains(i);
        loop {
            let next = members.iter().copied().find(|m| {
                let ins = &program.instructions[*m];
                !state.contains_key(m)
                    && ins.deps.iter().all(|d| state.contains_key(d))
                    && ins
                        .branch_parents
                        .iter()
                        .filter(|p| inside(p))
                        .all(|p| state.contains_key(p))
            });
            let Some(m) = next else {
                return Ok(());
            };
            let ins = &program.instructions[m];
            let live = is_entry(ins)
                || ins
                    .deps
                    .iter()
                    .any(|d| matches!(state.get(d), Some(State::Done | State::Skipped)))
                || ins
                    .branch_parents
                    .iter()
                    .any(|p| chosen.get(p).copied().flatten() == Some(m));
            if !live {
                state.insert(m, State::Dead);
                continue;
            }
            let resolved = self.instruction(m, prefix)?;
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
        }
    }

    /// Journals one step and its audit entry.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        idx: usize,
        path: &str,
        attempt: u32,
        outcome: StepOutcome,
        fallback: Option<&str>,
        started_ms: u64,
        inputs: &Value,
    ) -> Result<(), Stop> {
        let finished_ms = self.fx.clock.now_ms();
        let step = StepRecord {
            execution_id: self.execution_id.to_owned(),
            seq: self.next_seq,
            instruction_id: path.to_owned(),
            attempt,
            outcome,
            fallback: fallback.map(str::to_owned),
            started_ms,
            finished_ms,
        };
        let (audit_outcome, output) = match &step.outcome {
            StepOutcome::Done { output } => ("done".to_owned(), output.clone()),
            StepOutcome::Skipped => ("skipped".to_owned(), Value::Null),
            StepOutcome::Failed { class, .. } => (format!("failed:{class}"), Value::Null),
            StepOutcome::AwaitingApproval => ("awaiting_approval".to_owned(), Value::Null),
        };
        let ins = &self.program.instructions[idx];
        let entry = AuditEntry {
            node_id: self.fx.node_id.clone(),
            execution_id: self.execution_id.to_owned(),
            program_id: self.program.id().to_owned(),
            program_version: self.program.version().to_owned(),
            instruction_id: path.to_owned(),
            opcode: ins.opcode.as_str_name().to_owned(),
            input_digest: digest(inputs),
            output_digest: digest(&output),
            outcome: audit_outcome,
            fallback: step.fallback.clone(),
            started_ms,
            finished_ms,
        };
        let pause = matches!(step.outcome, StepOutcome::AwaitingApproval);
        self.unsaved.push((entry, step));
        self.next_seq += 1;
        if has_effect(ins) {
            self.unsaved_effect = true;
        }
        if pause {
            self.save(true)
        } else if self.unsaved.len() >= SAVE_EVERY {
            self.save(false)
        } else {
            Ok(())
        }
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
    fn approval(
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
                    )?;
                }
                Err(Stop::Paused(path.to_owned()))
            }
        }
    }

    /// Runs (or replays) one instruction, with retries, fallbacks and compensation.
    pub(super) fn instruction(&mut self, idx: usize, prefix: &str) -> Result<Resolved, Stop> {
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
        for r in &records {
            attempt = attempt.max(r.attempt);
            match &r.outcome {
                StepOutcome::Done { output } => done = Some(output.clone()),
                StepOutcome::Skipped => return Ok(Resolved::Skipped),
                StepOutcome::AwaitingApproval => awaiting = true,
                StepOutcome::Failed { class, message } => {
                    let failure = Failure::new(
                        class_by_name(class).unwrap_or(ErrorClass::Internal),
                        message.clone(),
                    );
                    pending = None;
                    match r.fallback.as_deref() {
                        Some("retry") => retries += 1,
                        Some("fallback_model") => {
                            switched = true;
                            retries = 0;
                        }
                        Some("fallback_value") => {
                            pending = Some((Decision::Value(ins.policy.value()), failure));
                        }
                        Some("skip") => pending = Some((Decision::Skip, failure)),
                        Some("abort") => pending = Some((Decision::Abort, failure)),
                        _ => pending = Some((Decision::Fail, failure)),
                    }
                }
            }
        }
        let validate_after = ins.requires_validation && ins.opcode == IrOpcode::LlmCall;
        if let Some(output) = done {
            if validate_after {
                self.approval(idx, &path, attempt, awaiting)?;
            }
            self.replay(idx, &output);
            return Ok(Resolved::Done(output));
        }
        if let Some((decision, failure)) = pending {
            return self.conclude(idx, &path, prefix, attempt, decision, failure);
        }
        if ins.opcode == IrOpcode::Loop {
            self.fx.boundary.checkpoint(
                self.execution_id,
                ins.priority.level,
                ins.priority.preemptible,
            );
            return self.run_loop(idx, &path, prefix);
        }
        if ins.requires_validation && !validate_after {
            self.approval(idx, &path, 0, awaiting)?;
        }
        self.fx.boundary.checkpoint(
            self.execution_id,
            ins.priority.level,
            ins.priority.preemptible,
        );
        loop {
            attempt += 1;
            let model = if switched {
                Some(ins.policy.alternative_model().to_owned())
            } else {
                None
            };
            if self.unsaved_effect && has_effect(ins) {
                // The results of earlier effects are durable before this one starts.
                self.save(true)?;
            }
            let started = self.fx.clock.now_ms();
            let mut inputs = Value::Null;
            let result = catch_unwind(AssertUnwindSafe(|| {
                self.attempt(idx, &path, attempt, model.as_deref(), &mut inputs)
            }))
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
            match result {
                Ok(output) => {
                    self.record(
                        idx,
                        &path,
                        attempt,
                        StepOutcome::Done {
                            output: output.clone(),
                        },
                        switched.then_some("fallback_model"),
                        started,
                        &inputs,
                    )?;
                    if validate_after {
                        self.approval(idx, &path, attempt, false)?;
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
                        decision.name(),
                        started,
                        &inputs,
                    )?;
                    match decision {
                        Decision::Retry { delay } => {
                            self.fx.clock.sleep(delay);
                            retries += 1;
                        }
                        Decision::Model(_) => {
                            switched = true;
                            retries = 0;
                        }
                        other => {
                            return self.conclude(idx, &path, prefix, attempt, other, failure);
                        }
                    }
                }
            }
        }
    }

    /// Applies a final decision (journaled as the last failed attempt's fallback).
    fn conclude(
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
                    Some("fallback_value"),
                    now,
                    &Value::Null,
                )?;
                Ok(Resolved::Done(value))
            }
            Decision::Skip => {
                self.record(
                    idx,
                    path,
                    attempt,
                    StepOutcome::Skipped,
                    Some("skip"),
                    now,
                    &Value::Null,
                )?;
                Ok(Resolved::Skipped)
            }
            Decision::Abort => {
                self.compensate(idx, prefix)?;
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
    fn compensate(&mut self, owner: usize, prefix: &str) -> Result<(), Stop> {
        let steps = self.program.instructions[owner].compensation.clone();
        for step in steps.into_iter().rev() {
            match self.instruction(step, prefix) {
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
    fn run_loop(&mut self, idx: usize, path: &str, prefix: &str) -> Result<Resolved, Stop> {
        let program = self.program;
        let ins = &program.instructions[idx];
        let Some(l) = &ins.looping else {
            return self.conclude(
                idx,
                path,
                prefix,
                1,
                Decision::Fail,
                Failure::new(ErrorClass::Internal, "LOOP without a loop config"),
            );
        };
        let started = self.fx.clock.now_ms();
        let items = match &l.items {
            None => None,
            Some(expr) => match expr.eval(&self.vars) {
                Ok(Value::Array(items)) if items.len() <= l.max_iterations as usize => Some(items),
                Ok(Value::Array(items)) => {
                    return self.loop_failed(
                        idx,
                        path,
                        prefix,
                        started,
                        Failure::new(
                            ErrorClass::InvalidInput,
                            format!(
                                "LOOP `{}` has {} items, more than max_iterations {}",
                                ins.id,
                                items.len(),
                                l.max_iterations
                            ),
                        ),
                    );
                }
                Ok(other) => {
                    return self.loop_failed(
                        idx,
                        path,
                        prefix,
                        started,
                        Failure::new(
                            ErrorClass::InvalidInput,
                            format!(
                                "LOOP `{}`: items_expr gave {}, expected a list",
                                ins.id,
                                super::expr::kind_of(&other)
                            ),
                        ),
                    );
                }
                Err(e) => {
                    return self.loop_failed(
                        idx,
                        path,
                        prefix,
                        started,
                        Failure::new(ErrorClass::InvalidInput, e),
                    );
                }
            },
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
                    return self.loop_failed(idx, path, prefix, started, failure);
                }
            }
            if let Some(cond) = &l.while_condition {
                match cond.eval_bool(&self.vars) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        let failure = Failure::new(ErrorClass::InvalidInput, e);
                        return self.loop_failed(idx, path, prefix, started, failure);
                    }
                }
            }
            for &member in &l.body {
                self.unbind(member);
            }
            if let Some(items) = &items {
                self.vars.set(&l.item_var, &items[n]);
            }
            self.region(&l.body, &format!("{path}/{n}/"))?;
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
        )?;
        Ok(Resolved::Done(output))
    }

    fn loop_failed(
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
        self.record(
            idx,
            path,
            1,
            StepOutcome::Failed {
                class: class_name(failure.class).to_owned(),
                message: failure.message.clone(),
            },
            decision.name(),
            started,
            &Value::Null,
        )?;
        self.conclude(idx, path, prefix, 1, decision, failure)
    }
}

/// Whether an instruction acts outside the execution (or is too costly to repeat). Its
/// step is durable before the next such instruction starts, before a pause and at the end
/// of the execution (which carries the steps still unsaved then): a crash re-runs at most
/// the last effect started, under the same idempotency key. The other steps are simply run
/// again if a crash loses them.
fn has_effect(ins: &super::program::Prepared) -> bool {
    use eyeflow_ir::pb::{IrOpcode, MemoryScope};
    match ins.opcode {
        IrOpcode::Eval
        | IrOpcode::Branch
        | IrOpcode::Merge
        | IrOpcode::Loop
        | IrOpcode::CallFunction
        | IrOpcode::LoadResource
        | IrOpcode::Load
        | IrOpcode::Return => false,
        // Execution and node scopes do not survive a crash anyway; cluster memory does.
        IrOpcode::Store => ins
            .memory
            .as_ref()
            .is_none_or(|m| m.scope == MemoryScope::Cluster),
        _ => true,
    }
}
