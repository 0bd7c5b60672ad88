//! The execution conductor: walks the program's flow in the server's deterministic order
//! (in each region — the top level or one round of a LOOP body — the first instruction by
//! (sequence_number, id) whose dependencies and BRANCH parents have resolved; one on an
//! untaken arm never runs), sends each instruction to its actor, applies the fallback
//! decisions (retry after its backoff, fallback value, skip, abort with compensation in
//! reverse order) and writes the canonical trace, one line per instruction.

use core::fmt::Write;

use embassy_executor::Spawner;
use embassy_time::{Instant, Timer};
use eyeflow_mcu::limits::MAX_INSTRUCTIONS;
use eyeflow_mcu::trace::{self, ErrorClass, Outcome, Status, Step};
use heapless::Vec;

use crate::actors::{REPLIES, Reply, evaluator, hardware, looping, memory};
use crate::instruction::IROpcode;
use crate::owned::Owned;
use crate::policy::Decision;
use crate::program::{DEFAULT_TIMEOUT_MS, Detail, MAX_LOOP_DEPTH, Program, Set};
use crate::state::{self, Event};

/// The action of a LOAD_RESOURCE that names none (as the server's scripted hardware
/// answers it).
pub const READ: &str = "read";

/// Spawns the actors (once per boot; the board spawns the hardware actor).
pub fn spawn_actors(spawner: Spawner) -> Result<(), embassy_executor::SpawnError> {
    for kind in [
        evaluator::Kind::Eval,
        evaluator::Kind::Branch,
        evaluator::Kind::Return,
    ] {
        spawner.spawn(evaluator::evaluator(kind)?);
    }
    spawner.spawn(memory::memory()?);
    spawner.spawn(looping::looping()?);
    spawner.spawn(crate::actors::arbiter::arbiter()?);
    Ok(())
}

/// Runs one execution of `program` for `event`, writing its trace to `out`; its status.
pub async fn run(program: &Program, event: &'static dyn Event, out: &mut impl Write) -> Status {
    state::begin(program, event);
    let mut walk = Walk {
        program,
        out,
        n: 0,
        marks: [Mark::Pending; MAX_INSTRUCTIONS],
        chosen: [None; MAX_INSTRUCTIONS],
    };
    let (status, returned) = match walk.walk().await {
        Ok(()) => (Status::Completed, Owned::Null),
        Err(Stop::Return(value)) => (Status::Completed, value),
        Err(Stop::Aborted(_)) => (Status::Aborted, Owned::Null),
        Err(Stop::Fail(class)) => (Status::Failed(class), Owned::Null),
    };
    let _ = trace::write_end(walk.out, status, &returned.get());
    status
}

/// How an instruction resolved, for those that follow it.
enum Resolved {
    Done(Owned),
    Skipped,
}

/// Why the walk ends early.
enum Stop {
    Return(Owned),
    /// ABORT: the aborting instruction's compensation is still to run.
    Aborted(ErrorClass),
    Fail(ErrorClass),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Pending,
    Done,
    Skipped,
    /// On an untaken BRANCH arm.
    Dead,
}

/// A LOOP in progress.
struct Frame {
    index: usize,
    round: u32,
    started: Instant,
}

struct Walk<'p, 'o, W: Write> {
    program: &'p Program,
    out: &'o mut W,
    n: u32,
    marks: [Mark; MAX_INSTRUCTIONS],
    chosen: [Option<u8>; MAX_INSTRUCTIONS],
}

fn bit(i: usize) -> Set {
    1 << i
}

impl<W: Write> Walk<'_, '_, W> {
    async fn walk(&mut self) -> Result<(), Stop> {
        let mut loops: Vec<Frame, MAX_LOOP_DEPTH> = Vec::new();
        loop {
            let region = loops
                .last()
                .map_or(self.program.top, |f| self.program.nodes[f.index].body);
            let Some(next) = self.next_ready(region) else {
                let Some(frame) = loops.last_mut() else {
                    return Ok(());
                };
                frame.round += 1;
                self.round(&mut loops).await?;
                continue;
            };
            if !self.live(next, region) {
                self.marks[next] = Mark::Dead;
                continue;
            }
            if self.program.nodes[next].opcode == IROpcode::LOOP.0 {
                // Loop depth was checked when the program loaded.
                let _ = loops.push(Frame {
                    index: next,
                    round: 0,
                    started: Instant::now(),
                });
                self.round(&mut loops).await?;
                continue;
            }
            let resolved = self.instruction(next).await;
            let resolved = self.compensate_on_abort(next, resolved).await?;
            self.settle(next, resolved)?;
        }
    }

    /// The first pending member of `region` whose dependencies and in-region BRANCH
    /// parents have resolved.
    fn next_ready(&self, region: Set) -> Option<usize> {
        let resolved: Set = (0..self.program.nodes.len())
            .filter(|&i| self.marks[i] != Mark::Pending)
            .fold(0, |set, i| set | bit(i));
        self.program.members(region).find(|&m| {
            let node = &self.program.nodes[m];
            self.marks[m] == Mark::Pending && (node.deps | (node.parents & region)) & !resolved == 0
        })
    }

    /// Whether `m` runs: an entry, a follower of a resolved (not dead) dependency, or the
    /// arm its BRANCH chose.
    fn live(&self, m: usize, region: Set) -> bool {
        let node = &self.program.nodes[m];
        let m8 = u8::try_from(m).ok();
        self.program.is_entry(m)
            || self
                .program
                .members(node.deps)
                .any(|d| matches!(self.marks[d], Mark::Done | Mark::Skipped))
            || self
                .program
                .members(node.parents & region)
                .any(|p| self.chosen[p] == m8)
    }

    /// Decides whether the innermost loop runs another round; ends it otherwise.
    async fn round(&mut self, loops: &mut Vec<Frame, MAX_LOOP_DEPTH>) -> Result<(), Stop> {
        let Some(frame) = loops.last() else {
            return Ok(());
        };
        let (index, round) = (frame.index, frame.round);
        let detail = self.program.detail(index);
        looping::JOBS
            .send(looping::Job {
                condition: detail.while_condition,
                round,
                max_iterations: detail.max_iterations,
                started: frame.started,
                timeout_ms: detail.timeout_ms,
            })
            .await;
        let body = self.program.nodes[index].body;
        match REPLIES.receive().await {
            Ok(Owned::Bool(true)) => {
                for m in self.program.members(body) {
                    self.marks[m] = Mark::Pending;
                    self.chosen[m] = None;
                    state::bind(m, None);
                }
                Ok(())
            }
            Ok(_) => {
                loops.pop();
                for m in self.program.members(body) {
                    state::bind(m, None);
                }
                // The trace shows the round count; later expressions see a list, as on
                // the server (which they cannot read).
                let rounds = Owned::Num(f64::from(round));
                self.line(index, 1, Outcome::Ok, &rounds);
                self.settle(index, Resolved::Done(rounds))?;
                state::bind_list(index);
                Ok(())
            }
            Err(class) => {
                loops.pop();
                let decision = if class == ErrorClass::Timeout {
                    detail.policy.on_loop_timeout()
                } else {
                    Decision::Fail
                };
                let resolved = self.conclude(index, 1, decision, class);
                let resolved = self.compensate_on_abort(index, resolved).await?;
                self.settle(index, resolved)
            }
        }
    }

    /// Records how `m` resolved: its mark, a BRANCH's arm, its result; a RETURN stops.
    fn settle(&mut self, m: usize, resolved: Resolved) -> Result<(), Stop> {
        let node = &self.program.nodes[m];
        if node.opcode == IROpcode::BRANCH.0 {
            let taken = matches!(resolved, Resolved::Done(Owned::Bool(true)));
            self.chosen[m] = if taken { node.arms.0 } else { node.arms.1 };
        }
        let (mark, value) = match resolved {
            Resolved::Done(value) => (Mark::Done, value),
            Resolved::Skipped => (Mark::Skipped, Owned::Null),
        };
        self.marks[m] = mark;
        state::bind(m, Some(value.clone()));
        if node.opcode == IROpcode::RETURN.0 && mark == Mark::Done {
            return Err(Stop::Return(value));
        }
        Ok(())
    }

    /// Runs instruction `m` (not a LOOP) with its retries and fallback.
    async fn instruction(&mut self, m: usize) -> Result<Resolved, Stop> {
        let detail = self.program.detail(m);
        let opcode = self.program.nodes[m].opcode;
        if opcode == IROpcode::CALL_ACTION.0 && !detail.can_actuate {
            // The signed program does not grant what this instruction does.
            return self.conclude(m, 1, Decision::Fail, ErrorClass::Denied);
        }
        let mut retries = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.dispatch(m, opcode, &detail).await {
                Ok(value) => {
                    self.line(m, attempt, Outcome::Ok, &value);
                    return Ok(Resolved::Done(value));
                }
                Err(class) => match detail.policy.decide(class, retries) {
                    Decision::Retry(ms) => {
                        Timer::after_millis(ms).await;
                        retries += 1;
                    }
                    decision => return self.conclude(m, attempt, decision, class),
                },
            }
        }
    }

    /// Sends `m`'s job to the actor of its kind and waits for the reply.
    async fn dispatch(&mut self, m: usize, opcode: i32, detail: &Detail) -> Reply {
        match IROpcode(opcode) {
            IROpcode::EVAL | IROpcode::BRANCH | IROpcode::RETURN => {
                let (kind, code) = match IROpcode(opcode) {
                    IROpcode::EVAL => (evaluator::Kind::Eval, detail.expression),
                    IROpcode::BRANCH => (evaluator::Kind::Branch, detail.condition),
                    _ => (evaluator::Kind::Return, detail.expression),
                };
                evaluator::mailbox(kind).send(evaluator::Job { code }).await;
            }
            IROpcode::STORE => {
                memory::JOBS
                    .send(memory::Job::Store {
                        key: detail.key,
                        code: detail.expression,
                    })
                    .await;
            }
            IROpcode::LOAD => {
                memory::JOBS
                    .send(memory::Job::Load {
                        key: detail.key,
                        default: detail.default,
                    })
                    .await;
            }
            IROpcode::CALL_ACTION
            | IROpcode::LOAD_RESOURCE
            | IROpcode::LLM_CALL
            | IROpcode::EMIT_EVENT => {
                let kind = match (IROpcode(opcode), detail.action) {
                    (IROpcode::LLM_CALL, model) => hardware::Kind::Llm {
                        instruction: self.program.nodes[m].id,
                        model,
                    },
                    (IROpcode::EMIT_EVENT, _) => hardware::Kind::Emit {
                        topic: detail.topic,
                        key: detail.event_key,
                    },
                    (IROpcode::LOAD_RESOURCE, "") => hardware::Kind::Call {
                        capability: detail.capability,
                        action: READ,
                    },
                    (_, action) => hardware::Kind::Call {
                        capability: detail.capability,
                        action,
                    },
                };
                hardware::JOBS
                    .send(hardware::Job {
                        kind,
                        params: detail.params.clone(),
                        timeout_ms: detail.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                        priority: detail.priority,
                    })
                    .await;
            }
            // Refused when the program loaded.
            _ => return Err(ErrorClass::Internal),
        }
        REPLIES.receive().await
    }

    /// Applies a final decision after `attempts` attempts; writes the instruction's line.
    fn conclude(
        &mut self,
        m: usize,
        attempts: u32,
        decision: Decision,
        class: ErrorClass,
    ) -> Result<Resolved, Stop> {
        match decision {
            Decision::Value(value) => {
                self.line(m, attempts, Outcome::Fallback, &value);
                Ok(Resolved::Done(value))
            }
            Decision::Skip => {
                self.line(m, attempts, Outcome::Skipped, &Owned::Null);
                Ok(Resolved::Skipped)
            }
            Decision::Abort => {
                self.line(m, attempts, Outcome::Failed(class), &Owned::Null);
                Err(Stop::Aborted(class))
            }
            Decision::Fail | Decision::Retry(_) => {
                self.line(m, attempts, Outcome::Failed(class), &Owned::Null);
                Err(Stop::Fail(class))
            }
        }
    }

    /// After `owner` resolved as `resolved`: on ABORT, runs its compensation first.
    async fn compensate_on_abort(
        &mut self,
        owner: usize,
        resolved: Result<Resolved, Stop>,
    ) -> Result<Resolved, Stop> {
        if let Err(Stop::Aborted(class)) = resolved {
            self.compensate(owner).await;
            return Err(Stop::Aborted(class));
        }
        resolved
    }

    /// Runs the compensation of `owner` in reverse order, best effort (a failing step does
    /// not stop the others; a step that aborts has its own compensation run first).
    async fn compensate(&mut self, owner: usize) {
        let mut pending: Vec<(usize, usize), MAX_LOOP_DEPTH> = Vec::new();
        let _ = pending.push((owner, self.program.nodes[owner].compensation.len()));
        while let Some((list, left)) = pending.last_mut() {
            if *left == 0 {
                pending.pop();
                continue;
            }
            *left -= 1;
            let step = usize::from(self.program.nodes[*list].compensation[*left]);
            match self.instruction(step).await {
                Ok(Resolved::Done(value)) => state::bind(step, Some(value)),
                Ok(Resolved::Skipped) => state::bind(step, Some(Owned::Null)),
                Err(Stop::Aborted(_)) => {
                    // Nested deeper than the stack holds: that compensation is left out.
                    let _ = pending.push((step, self.program.nodes[step].compensation.len()));
                }
                Err(_) => {}
            }
        }
    }

    /// Writes the trace line of instruction `m`.
    fn line(&mut self, m: usize, attempts: u32, outcome: Outcome, value: &Owned) {
        self.n += 1;
        let node = &self.program.nodes[m];
        let _ = trace::write_step(
            self.out,
            &Step {
                n: self.n,
                instruction_id: node.id,
                opcode: node.opcode,
                attempts,
                outcome,
                value: value.get(),
            },
        );
    }
}
