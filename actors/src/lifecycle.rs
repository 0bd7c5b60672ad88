//! The life of a node's executions once their event is journaled: admission (is there
//! room, would it start within its `max_wait`?), the program's bulkhead lane, the
//! scheduler, the run as a task of the actor runtime (late admissions take their fallback),
//! and the count of executions in flight that shutdown waits on. The node assembles it from
//! its adapters and gives it a [`Reporter`] for its metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bulkhead::Bulkheads;
use crate::exec::{self, Effects, Program, Report};
use crate::ports::{EventRecord, StepRecord};
use crate::scheduler::{Admission, Scheduler};
use crate::sync::{Locked, Waits};

/// Told how each execution run ended (a pause included) and how long after its acceptance.
pub type Reporter = Box<dyn Fn(&str, &Report, Duration) + Send + Sync>;

/// Why an event is not accepted now (nothing was journaled; the sender may try again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Overloaded(pub String);

/// The executions of a node. Cheap to clone.
#[derive(Clone)]
pub struct Executions {
    inner: Arc<Inner>,
}

struct Inner {
    scheduler: Scheduler,
    bulkheads: Bulkheads,
    effects: Effects,
    max_backlog: usize,
    /// Executions accepted and not ended (queued, in a lane, running), and where
    /// `wait_idle` waits.
    in_flight: (Mutex<usize>, Condvar),
    /// Moving average of how long an execution holds its slot, microseconds: with the
    /// queue's length it predicts how long new work would wait.
    service_us: AtomicU64,
    report: Reporter,
}

impl Inner {
    fn flight(&self) -> MutexGuard<'_, usize> {
        self.in_flight.0.locked()
    }
}

/// An execution in flight, counted until dropped: when its run ends, or when it is dropped
/// unrun (draining: it stays journaled as pending and resumes at the next start).
struct Flight(Arc<Inner>);

impl Drop for Flight {
    fn drop(&mut self) {
        let mut n = self.0.flight();
        *n -= 1;
        // Not at every execution: a wake-up is a context switch.
        if *n == 0 {
            self.0.in_flight.1.notify_all();
        }
    }
}

impl Executions {
    /// Executions that run through `bulkheads` (in front of `scheduler`) with `effects`;
    /// at most `max_backlog` in flight; `report` is told how each run ended.
    pub fn new(
        scheduler: Scheduler,
        bulkheads: Bulkheads,
        effects: Effects,
        max_backlog: usize,
        report: Reporter,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                scheduler,
                bulkheads,
                effects,
                max_backlog: max_backlog.max(1),
                in_flight: (Mutex::new(0), Condvar::new()),
                service_us: AtomicU64::new(0),
                report,
            }),
        }
    }

    /// Whether any new event may be accepted: refused past the backlog.
    pub fn room(&self) -> Result<(), Overloaded> {
        let (backlog, in_flight) = (self.inner.max_backlog, self.in_flight());
        if in_flight >= backlog {
            return Err(Overloaded(format!(
                "{in_flight} executions are queued or running (the limit is {backlog})"
            )));
        }
        Ok(())
    }

    /// Whether an event for `program` may be accepted: refused when the work ahead of it —
    /// the executions queued in the scheduler, each holding a slot for the average service
    /// time, and those waiting in its program's lane, each holding one of the program's
    /// slots for that program's average — would make it wait a third of its `max_wait` or more
    /// (a margin for what is accepted meanwhile), or when the first of its program's
    /// waiting executions has already waited that long, and when its program alone holds
    /// three quarters of the backlog (a quarter stays for the others).
    pub fn admit(&self, program: &Program) -> Result<(), Overloaded> {
        let inner = &self.inner;
        let workers = inner.scheduler.workers().max(1) as u64;
        let service_us = inner.service_us.load(Ordering::Relaxed);
        let queued = inner.scheduler.queue_depth().values().sum::<usize>() as u64;
        let lane = inner.bulkheads.load(program.id());
        let limit = inner.bulkheads.limit() as u64;
        // Back from the journal's fsync, an execution takes its program's next turn first.
        let waiting = (lane.waiting + lane.returning) as u64;
        let predicted_ms = (queued.saturating_mul(service_us) / workers
            + waiting.saturating_mul(lane.service_us) / limit)
            / 1000;
        let may_wait =
            u64::try_from(program.default_priority().max_wait.as_millis()).unwrap_or(u64::MAX);
        if queued + waiting > 0 && predicted_ms.saturating_mul(3) >= may_wait {
            return Err(Overloaded(format!(
                "{} executions wait for a slot ({waiting} of them this program's), about {predicted_ms} ms: a third or more of this program's max_wait of {may_wait} ms",
                queued + waiting
            )));
        }
        // What the average cannot see yet (the work got slower): the first of the
        // program's waiting executions has already waited that long.
        let oldest_ms = u64::try_from(lane.oldest.as_millis()).unwrap_or(u64::MAX);
        if oldest_ms.saturating_mul(2) >= may_wait {
            return Err(Overloaded(format!(
                "this program's first waiting execution has waited {oldest_ms} ms: half or more of its max_wait of {may_wait} ms"
            )));
        }
        let backlog = inner.max_backlog;
        let share = backlog - backlog / 4;
        let held = lane.running + lane.resting + lane.waiting;
        if held >= share {
            return Err(Overloaded(format!(
                "this program has {held} executions queued or running, the most one program may have ({share} of the {backlog} allowed)"
            )));
        }
        Ok(())
    }

    /// Runs execution `execution_id` of `program` for `event` (a journaled acceptance),
    /// resuming after `history`: through its program's lane and the scheduler, as a task of
    /// the actor runtime. Admitted past its `max_wait` (counted from now), it takes its
    /// fallback ([`exec::execute_late`]).
    pub fn schedule(
        &self,
        program: Arc<Program>,
        execution_id: String,
        event: EventRecord,
        history: Vec<StepRecord>,
    ) {
        let priority = program.default_priority();
        let (level, max_wait) = (priority.level, priority.max_wait);
        *self.inner.flight() += 1;
        let flight = Flight(self.inner.clone());
        let accepted = Instant::now();
        // The scheduler keeps the execution's arrival under its id for its boundaries.
        let id = execution_id.clone();
        let program_id = program.id().to_owned();
        self.inner.bulkheads.submit(
            &program_id,
            &id,
            level,
            max_wait,
            Box::new(move |admission: Admission| {
                Box::pin(async move {
                    let inner = &flight.0;
                    let started = Instant::now();
                    // The wait counts from acceptance: in the program's lane, then in the
                    // scheduler's queue.
                    let waited = accepted.elapsed().max(admission.waited);
                    let effects = &inner.effects;
                    let late = waited > max_wait;
                    let report = if late {
                        exec::execute_late(
                            &program,
                            &execution_id,
                            &event,
                            &history,
                            effects,
                            waited,
                        )
                        .await
                    } else {
                        exec::execute(&program, &execution_id, &event, &history, effects).await
                    };
                    // An execution that paused holds no slot while it waits: counted as run.
                    // A late one, which only took its fallback, says nothing of how long the
                    // program's work takes: counting it would shrink the averages admission
                    // predicts from, and let more work in to be late in turn.
                    if !late {
                        let held = started.elapsed();
                        let held_us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
                        let old = inner.service_us.load(Ordering::Relaxed);
                        inner.service_us.store(
                            if old == 0 {
                                held_us
                            } else {
                                (old * 7 + held_us) / 8
                            },
                            Ordering::Relaxed,
                        );
                        inner.bulkheads.record(program.id(), held);
                    }
                    (inner.report)(program.id(), &report, accepted.elapsed());
                })
            }),
        );
    }

    /// Queued executions in the scheduler, by priority level.
    pub fn queue_depth(&self) -> std::collections::BTreeMap<u32, usize> {
        self.inner.scheduler.queue_depth()
    }

    /// Executions accepted in this process and not yet finished or paused.
    pub fn in_flight(&self) -> usize {
        *self.inner.flight()
    }

    /// Waits until no execution is queued or running. Blocking.
    pub fn wait_idle(&self) {
        let mut n = self.inner.flight();
        while *n > 0 {
            n = self.inner.in_flight.1.waiting(n);
        }
    }

    /// Takes no more work and waits until every execution in a lane or in the scheduler
    /// has ended. Blocking: call it from outside the actor runtime.
    pub fn drain(&self) {
        self.inner.bulkheads.drain();
        self.inner.scheduler.drain();
    }

    /// Takes no more work and drops what has not started (in a lane or queued): those
    /// executions stay pending in the journal and resume at the next start; what runs is
    /// left to end or to stop with the actor runtime. Call it before that runtime stops: a
    /// stopping runtime drops each task it is handed, and a lane would otherwise hand it its
    /// next execution for every one dropped.
    pub fn abandon(&self) {
        self.inner.scheduler.close();
        self.inner.bulkheads.abandon();
    }
}
