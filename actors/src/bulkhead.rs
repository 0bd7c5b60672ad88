//! Bulkheads: each program may hold at most `limit` of the scheduler's slots at once, so a
//! program whose executions hold their slots long (retries against a closed port, waits on
//! a slow endpoint) cannot take the slots the other programs run on.
//!
//! An execution of a program at its limit waits in that program's lane, outside the
//! scheduler (holding no slot), and is handed to the scheduler when one of the program's
//! executions ends — also when it panics or is dropped. Each lane keeps a moving average of
//! how long its executions hold a slot, so that admission can tell how long new work of that
//! program would wait.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::scheduler::{Job, Scheduler};
use crate::sync::{Locked, Waits};

/// One execution waiting in its program's lane.
struct Waiting {
    id: String,
    priority: u32,
    max_wait: Duration,
    job: Job,
    /// When it joined the lane.
    since: Instant,
}

/// A program's lane. Kept once created (one per program), so that its average outlives
/// the moments it is empty.
#[derive(Default)]
struct Lane {
    /// Executions handed to the scheduler and not ended.
    running: usize,
    waiting: VecDeque<Waiting>,
    /// Moving average of the time an execution holds a slot, microseconds (0: none yet).
    service_us: u64,
}

impl Lane {
    fn idle(&self) -> bool {
        self.running == 0 && self.waiting.is_empty()
    }
}

/// What a program's lane holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneLoad {
    /// Executions handed to the scheduler (queued there or running).
    pub running: usize,
    /// Executions waiting for the program to be under its limit.
    pub waiting: usize,
    /// Moving average of the time one of its executions holds a slot, microseconds.
    pub service_us: u64,
    /// How long the first execution waiting in the lane has waited.
    pub oldest: Duration,
}

/// The lanes of every program. Cheap to clone.
#[derive(Clone)]
pub struct Bulkheads {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    scheduler: Scheduler,
    state: Mutex<State>,
    /// `drain` waits here for the lanes to empty.
    emptied: Condvar,
}

#[derive(Default)]
struct State {
    lanes: HashMap<String, Lane>,
    closed: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }
}

/// Ends a program's turn when its execution ends (also on panic, or when the scheduler
/// drops the job unrun).
struct Turn {
    inner: Arc<Inner>,
    program: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        Bulkheads {
            inner: self.inner.clone(),
        }
        .end(&self.program);
    }
}

impl Bulkheads {
    /// Lanes of at most `limit` running executions per program, in front of `scheduler`.
    pub fn new(limit: usize, scheduler: Scheduler) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                scheduler,
                state: Mutex::new(State::default()),
                emptied: Condvar::new(),
            }),
        }
    }

    /// The most executions of one program running at once.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Hands `job` (execution `id` of `program`) to the scheduler now if the program is
    /// under its limit, else queues it in the program's lane. False (the job dropped) once
    /// draining.
    pub fn submit(
        &self,
        program: &str,
        id: &str,
        priority: u32,
        max_wait: Duration,
        job: Job,
    ) -> bool {
        let mut state = self.inner.lock();
        if state.closed {
            return false;
        }
        let lane = state.lanes.entry(program.to_owned()).or_default();
        if lane.running >= self.inner.limit {
            lane.waiting.push_back(Waiting {
                id: id.to_owned(),
                priority,
                max_wait,
                job,
                since: Instant::now(),
            });
            return true;
        }
        lane.running += 1;
        drop(state);
        self.launch(program, id, priority, max_wait, job)
    }

    /// Takes no more work and waits until every execution in a lane has been handed to the
    /// scheduler and has ended (then drain the scheduler). Blocking: call it from outside
    /// the scheduler's runtime.
    pub fn drain(&self) {
        let mut state = self.inner.lock();
        state.closed = true;
        while !state.lanes.values().all(Lane::idle) {
            state = self.inner.emptied.waiting(state);
        }
    }

    /// Takes no more work and drops what waits in the lanes (dropped outside the lock, as
    /// a turn's end takes it), without waiting for what runs.
    pub fn abandon(&self) {
        let waiting: Vec<_> = {
            let mut state = self.inner.lock();
            state.closed = true;
            state
                .lanes
                .values_mut()
                .map(|lane| std::mem::take(&mut lane.waiting))
                .collect()
        };
        drop(waiting);
        self.inner.emptied.notify_all();
    }

    /// Records that an execution of `program` held its slot for `held`.
    pub fn record(&self, program: &str, held: Duration) {
        let held = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        if let Some(lane) = self.inner.lock().lanes.get_mut(program) {
            lane.service_us = if lane.service_us == 0 {
                held
            } else {
                (lane.service_us * 7 + held) / 8
            };
        }
    }

    /// What `program`'s lane holds now.
    pub fn load(&self, program: &str) -> LaneLoad {
        self.inner
            .lock()
            .lanes
            .get(program)
            .map(|lane| LaneLoad {
                running: lane.running,
                waiting: lane.waiting.len(),
                service_us: lane.service_us,
                oldest: lane
                    .waiting
                    .front()
                    .map_or(Duration::ZERO, |w| w.since.elapsed()),
            })
            .unwrap_or_default()
    }

    fn launch(&self, program: &str, id: &str, priority: u32, max_wait: Duration, job: Job) -> bool {
        let turn = Turn {
            inner: self.inner.clone(),
            program: program.to_owned(),
        };
        let job: Job = Box::new(move |admission| {
            Box::pin(async move {
                let _turn = turn;
                job(admission).await;
            })
        });
        // A job the closed scheduler drops ends its turn as it goes.
        self.inner.scheduler.submit(id, priority, max_wait, job)
    }

    /// One execution of `program` ended: the next in its lane goes to the scheduler.
    fn end(&self, program: &str) {
        let mut state = self.inner.lock();
        let State { lanes, closed } = &mut *state;
        let Some(lane) = lanes.get_mut(program) else {
            return;
        };
        lane.running = lane.running.saturating_sub(1);
        if self.inner.scheduler.is_closed() {
            // Draining: what waits is dropped (its executions stay pending in the journal
            // and resume at the next start), all at once rather than one turn at a time.
            let dropped = std::mem::take(&mut lane.waiting);
            let idle = *closed && lanes.values().all(Lane::idle);
            drop(state);
            drop(dropped);
            if idle {
                self.inner.emptied.notify_all();
            }
            return;
        }
        let Some(next) = lane.waiting.pop_front() else {
            if *closed && lanes.values().all(Lane::idle) {
                self.inner.emptied.notify_all();
            }
            return;
        };
        lane.running += 1;
        drop(state);
        let Waiting {
            id,
            priority,
            max_wait,
            job,
            ..
        } = next;
        // The scheduler closed meanwhile: the job is dropped, which ends its turn.
        self.launch(program, &id, priority, max_wait, job);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::arbiter::Arbiter;
    use crate::scheduler::SchedulerConfig;

    #[test]
    fn a_program_at_its_limit_waits_in_its_lane_and_others_run() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let scheduler = Scheduler::new(
            SchedulerConfig {
                workers: 4,
                aging: Duration::from_secs(3600),
            },
            Arbiter::new(1),
            runtime.handle().clone(),
        );
        let bulkheads = Bulkheads::new(2, scheduler.clone());
        let (release, released) = tokio::sync::watch::channel(false);
        // Poison: five executions that hold their slot until released.
        let (ended, mut poison_ended) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..5 {
            let (mut released, ended) = (released.clone(), ended.clone());
            assert!(bulkheads.submit(
                "poison",
                &format!("p{n}"),
                128,
                Duration::from_secs(60),
                Box::new(move |_| {
                    Box::pin(async move {
                        let _ = released.wait_for(|r| *r).await;
                        let _ = ended.send(());
                    })
                }),
            ));
        }
        let load = bulkheads.load("poison");
        assert_eq!((load.running, load.waiting), (2, 3));
        // The healthy program runs beside it, on the slots the poison cannot take.
        let ran = Arc::new(AtomicUsize::new(0));
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..10 {
            let (ran, done) = (ran.clone(), done.clone());
            bulkheads.submit(
                "healthy",
                &format!("h{n}"),
                128,
                Duration::from_secs(60),
                Box::new(move |_| {
                    Box::pin(async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                        let _ = done.send(());
                    })
                }),
            );
        }
        runtime.block_on(async {
            for _ in 0..10 {
                finished.recv().await.expect("a healthy execution ended");
            }
        });
        assert_eq!(ran.load(Ordering::SeqCst), 10);
        assert_eq!(
            bulkheads.load("poison").waiting,
            3,
            "the poison still waits"
        );
        // Released, the poison's lane drains through its two slots.
        release.send(true).unwrap();
        runtime.block_on(async {
            for _ in 0..5 {
                poison_ended.recv().await.expect("a poison execution ended");
            }
        });
        scheduler.drain();
        let load = bulkheads.load("poison");
        assert_eq!((load.running, load.waiting), (0, 0));
    }
}
