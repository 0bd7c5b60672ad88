//! Bulkheads: each program may hold at most `limit` of the scheduler's slots at once, so a
//! program whose executions hold their slots long (retries against a closed port, waits on
//! a slow endpoint) cannot take the slots the other programs run on.
//!
//! An execution of a program at its limit waits in that program's lane, outside the
//! scheduler (holding no slot), and is handed to the scheduler when one of the program's
//! executions ends — also when it panics or is dropped — or gives its turn up while the
//! journal makes its steps durable ([`Boundary::durable`]): an execution coming back from
//! that wait takes the next free turn of its program before any new one. Each lane keeps a
//! moving average of how long its executions hold a slot, so that admission can tell how
//! long new work of that program would wait.
//!
//! The lanes are the executions' [`Boundary`]: instruction boundaries go to the scheduler,
//! and a wait on the journal gives up both the execution's turn and its slot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::gates::Boundary;
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
    /// Executions handed to the scheduler and not ended, nor resting.
    running: usize,
    /// Executions that gave their turn up while the journal makes their steps durable and
    /// have not had it back (those in `returning` too).
    resting: usize,
    /// Executions back from that wait, waiting for a turn (they come before `waiting`).
    returning: VecDeque<oneshot::Sender<()>>,
    waiting: VecDeque<Waiting>,
    /// Moving average of the time an execution holds a slot, microseconds (0: none yet).
    service_us: u64,
}

impl Lane {
    fn idle(&self) -> bool {
        self.running == 0 && self.resting == 0 && self.waiting.is_empty()
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
    /// Executions that gave their turn up while the journal makes their steps durable
    /// and have not had it back (`returning` included).
    pub resting: usize,
    /// Executions back from that wait, waiting for a turn (before `waiting`).
    pub returning: usize,
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
                resting: lane.resting,
                returning: lane.returning.len(),
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

    /// One execution of `program` ended: its turn is handed on.
    fn end(&self, program: &str) {
        let mut state = self.inner.lock();
        if let Some(lane) = state.lanes.get_mut(program) {
            lane.running = lane.running.saturating_sub(1);
        }
        self.hand_on(state, program);
    }

    /// A turn of `program` may be free: it goes to an execution of the program back from
    /// the journal's fsync, else to the next waiting in the lane (handed to the scheduler).
    fn hand_on(&self, mut state: MutexGuard<'_, State>, program: &str) {
        let limit = self.inner.limit;
        let State { lanes, closed } = &mut *state;
        let Some(lane) = lanes.get_mut(program) else {
            return;
        };
        while lane.running < limit {
            let Some(back) = lane.returning.pop_front() else {
                break;
            };
            // One whose task is gone (dropped at shutdown) stopped counting as it went.
            if back.send(()).is_ok() {
                lane.resting -= 1;
                lane.running += 1;
            }
        }
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
        let next = if lane.running < limit {
            lane.waiting.pop_front()
        } else {
            None
        };
        let Some(next) = next else {
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

    /// An execution of `program` gives its turn up while the journal makes its steps
    /// durable; `None` when no execution of `program` holds one (it was not launched here).
    fn rest(&self, program: &str) -> Option<TurnRest> {
        let mut state = self.inner.lock();
        let lane = state
            .lanes
            .get_mut(program)
            .filter(|lane| lane.running > 0)?;
        lane.running -= 1;
        lane.resting += 1;
        self.hand_on(state, program);
        Some(TurnRest {
            bulkheads: self.clone(),
            program: program.to_owned(),
            returning: None,
            back: false,
        })
    }
}

/// A program's turn given up while the journal makes an execution's steps durable;
/// [`TurnRest::back`] takes one again.
struct TurnRest {
    bulkheads: Bulkheads,
    program: String,
    /// Where `back` waits for a turn.
    returning: Option<oneshot::Receiver<()>>,
    back: bool,
}

impl TurnRest {
    /// Takes a turn of the program again: at once when it is under its limit and no other
    /// execution is coming back before this one, else when one is handed on.
    async fn back(mut self) {
        {
            let limit = self.bulkheads.inner.limit;
            let mut state = self.bulkheads.inner.lock();
            let lane = state.lanes.entry(self.program.clone()).or_default();
            if lane.running < limit && lane.returning.is_empty() {
                lane.resting -= 1;
                lane.running += 1;
                self.back = true;
                return;
            }
            let (turn, returning) = oneshot::channel();
            lane.returning.push_back(turn);
            self.returning = Some(returning);
        }
        if let Some(returning) = self.returning.as_mut() {
            // Handed a turn (which counted it), or its sender dropped with the lane.
            let _ = returning.await;
        }
        self.back = true;
    }
}

impl Drop for TurnRest {
    /// Dropped before it is back — its end's write done, or its task dropped (at shutdown)
    /// during the wait: the turn counts as held again, for the execution's own end (its
    /// job's [`Turn`]) to hand on.
    fn drop(&mut self) {
        if self.back {
            return;
        }
        let mut state = self.bulkheads.inner.lock();
        let Some(lane) = state.lanes.get_mut(&self.program) else {
            return;
        };
        // A handover happens under this lock: either it came (the turn is held) or it will
        // find this receiver gone.
        let handed = self
            .returning
            .take()
            .is_some_and(|mut returning| returning.try_recv().is_ok());
        if !handed {
            lane.resting -= 1;
            lane.running += 1;
        }
    }
}

#[async_trait::async_trait]
impl Boundary for Bulkheads {
    async fn checkpoint(&self, execution_id: &str, priority: u32, preemptible: bool) {
        self.inner
            .scheduler
            .checkpoint(execution_id, priority, preemptible)
            .await;
    }

    async fn durable(
        &self,
        program: &str,
        execution_id: &str,
        last: bool,
        wait: BoxFuture<'_, ()>,
    ) {
        let slot = self.inner.scheduler.rest(execution_id);
        let turn = slot.as_ref().and_then(|_| self.rest(program));
        wait.await;
        if last {
            // Its end: the turn counts as held again (dropped unused), for the job's end to
            // hand on, and so does the slot.
            drop(turn);
            if let Some(slot) = slot {
                slot.leave();
            }
            return;
        }
        // The program's turn first, then a slot: as a new execution of it, which holds its
        // turn while it waits in the scheduler.
        if let Some(turn) = turn {
            turn.back().await;
        }
        if let Some(slot) = slot {
            slot.back().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::arbiter::Arbiter;
    use crate::scheduler::SchedulerConfig;
    use crate::testing::eventually;

    #[test]
    fn a_program_at_its_limit_waits_in_its_lane_and_others_run() {
        let (runtime, scheduler, bulkheads) = lanes(4, 2);
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

    /// A scheduler of `workers` slots and lanes of `limit`, on a runtime of their own.
    fn lanes(workers: usize, limit: usize) -> (tokio::runtime::Runtime, Scheduler, Bulkheads) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let scheduler = Scheduler::new(
            SchedulerConfig {
                workers,
                aging: Duration::from_secs(3600),
            },
            Arbiter::new(1),
            runtime.handle().clone(),
        );
        let bulkheads = Bulkheads::new(limit, scheduler.clone());
        (runtime, scheduler, bulkheads)
    }

    /// One slot, a limit of one.
    fn single() -> (tokio::runtime::Runtime, Scheduler, Bulkheads) {
        lanes(1, 1)
    }

    /// Counts the executions between their start (or their return from the journal) and
    /// their end (or their wait on it): those that hold a turn and a slot.
    #[derive(Default)]
    struct Holders {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    impl Holders {
        fn take(&self) {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
        }

        fn leave(&self) {
            self.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A job that takes its turn, waits on "the journal" until `fsynced`, then reports
    /// `name` and ends.
    fn resting_job(
        bulkheads: &Bulkheads,
        holders: &Arc<Holders>,
        name: &'static str,
        fsynced: tokio::sync::oneshot::Receiver<()>,
        order: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> Job {
        waiting_job(bulkheads, holders, name, false, fsynced, order)
    }

    /// [`resting_job`], its wait on the journal its end's (`last`) or not.
    fn waiting_job(
        bulkheads: &Bulkheads,
        holders: &Arc<Holders>,
        name: &'static str,
        last: bool,
        fsynced: tokio::sync::oneshot::Receiver<()>,
        order: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> Job {
        let (bulkheads, holders, order) = (bulkheads.clone(), holders.clone(), order.clone());
        Box::new(move |_| {
            Box::pin(async move {
                holders.take();
                let wait = Box::pin(async move {
                    let _ = fsynced.await;
                });
                holders.leave();
                bulkheads.durable("p", name, last, wait).await;
                if !last {
                    holders.take();
                }
                let _ = order.send(name);
                if !last {
                    holders.leave();
                }
            })
        })
    }

    /// Drains the scheduler and the lanes: one execution at most held a turn and a slot at
    /// any time, and program `p` has none running, resting or waiting.
    fn drained(scheduler: &Scheduler, bulkheads: &Bulkheads, holders: &Holders) {
        scheduler.drain();
        bulkheads.drain();
        assert_eq!(holders.most.load(Ordering::SeqCst), 1, "one turn, one slot");
        let load = bulkheads.load("p");
        assert_eq!((load.running, load.resting, load.waiting), (0, 0, 0));
    }

    /// The next execution to report, within 10 s.
    fn next(
        runtime: &tokio::runtime::Runtime,
        ran: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    ) -> Option<&'static str> {
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), ran.recv()).await })
            .expect("an execution ends within 10 s")
    }

    /// Submits an execution of program `p` per name, each a [`resting_job`] (in order);
    /// the senders that end their waits on the journal.
    fn submit_resting<const N: usize>(
        bulkheads: &Bulkheads,
        holders: &Arc<Holders>,
        names: [&'static str; N],
        order: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> [tokio::sync::oneshot::Sender<()>; N] {
        names.map(|name| {
            let (fsync, fsynced) = tokio::sync::oneshot::channel();
            let job = resting_job(bulkheads, holders, name, fsynced, order);
            assert!(bulkheads.submit("p", name, 128, Duration::from_secs(60), job));
            fsync
        })
    }

    /// A job that reports `name` and ends.
    fn plain_job(
        holders: &Arc<Holders>,
        name: &'static str,
        order: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> Job {
        let (holders, order) = (holders.clone(), order.clone());
        Box::new(move |_| {
            Box::pin(async move {
                holders.take();
                let _ = order.send(name);
                holders.leave();
            })
        })
    }

    #[test]
    fn an_execution_waiting_on_the_journal_lets_the_next_run_and_comes_back_first() {
        let (runtime, scheduler, bulkheads) = single();
        let holders = Arc::new(Holders::default());
        let (order, mut ran) = tokio::sync::mpsc::unbounded_channel();
        let long = Duration::from_secs(60);
        // A takes the one slot and the program's one turn, then waits on the journal; B and
        // C of the same program: B runs while A waits, and waits on the journal in turn.
        let [fsync_a, fsync_b] = submit_resting(&bulkheads, &holders, ["a", "b"], &order);
        assert!(bulkheads.submit("p", "c", 128, long, plain_job(&holders, "c", &order)));
        // Neither A nor B is done; C, which came last, ran in the turn B gave up.
        assert_eq!(next(&runtime, &mut ran), Some("c"));
        // A's fsync ends before B's: A ends next.
        fsync_a.send(()).unwrap();
        assert_eq!(next(&runtime, &mut ran), Some("a"));
        fsync_b.send(()).unwrap();
        assert_eq!(next(&runtime, &mut ran), Some("b"));
        drained(&scheduler, &bulkheads, &holders);
    }

    #[test]
    fn back_from_the_journal_an_execution_takes_the_next_turn_before_new_work() {
        let (runtime, scheduler, bulkheads) = single();
        let holders = Arc::new(Holders::default());
        let (order, mut ran) = tokio::sync::mpsc::unbounded_channel();
        let long = Duration::from_secs(60);
        let [fsync_a, fsync_b] = submit_resting(&bulkheads, &holders, ["a", "b"], &order);
        // Both wait on the journal now, and the turn is free: A comes back and ends.
        fsync_a.send(()).unwrap();
        assert_eq!(next(&runtime, &mut ran), Some("a"));
        // B is back while C waits in the lane behind a held turn: B goes first.
        let (hold, held) = tokio::sync::oneshot::channel::<()>();
        let holding = holders.clone();
        assert!(bulkheads.submit(
            "p",
            "holder",
            128,
            long,
            Box::new(move |_| {
                Box::pin(async move {
                    holding.take();
                    let _ = held.await;
                    holding.leave();
                })
            })
        ));
        assert!(bulkheads.submit("p", "c", 128, long, plain_job(&holders, "c", &order)));
        fsync_b.send(()).unwrap();
        eventually("B comes back", || bulkheads.load("p").returning > 0);
        hold.send(()).unwrap();
        assert_eq!(next(&runtime, &mut ran), Some("b"));
        assert_eq!(next(&runtime, &mut ran), Some("c"));
        drained(&scheduler, &bulkheads, &holders);
    }

    #[test]
    fn an_execution_whose_end_is_made_durable_ends_without_a_slot() {
        let (runtime, scheduler, bulkheads) = single();
        let holders = Arc::new(Holders::default());
        let (order, mut ran) = tokio::sync::mpsc::unbounded_channel();
        let (fsync_a, a_fsynced) = tokio::sync::oneshot::channel();
        let long = Duration::from_secs(60);
        assert!(bulkheads.submit(
            "p",
            "a",
            128,
            long,
            waiting_job(&bulkheads, &holders, "a", true, a_fsynced, &order)
        ));
        // B takes the slot and the turn A gave up for its end's write, and keeps them.
        let (hold, held) = tokio::sync::oneshot::channel::<()>();
        let holding = holders.clone();
        let b_order = order.clone();
        assert!(bulkheads.submit(
            "p",
            "b",
            128,
            long,
            Box::new(move |_| {
                Box::pin(async move {
                    holding.take();
                    let _ = b_order.send("b started");
                    let _ = held.await;
                    holding.leave();
                    let _ = b_order.send("b");
                })
            })
        ));
        assert_eq!(next(&runtime, &mut ran), Some("b started"));
        // A's end is durable: it ends at once, while B still holds the one slot.
        fsync_a.send(()).unwrap();
        assert_eq!(next(&runtime, &mut ran), Some("a"));
        hold.send(()).unwrap();
        assert_eq!(next(&runtime, &mut ran), Some("b"));
        drained(&scheduler, &bulkheads, &holders);
    }

    #[test]
    fn an_execution_dropped_while_waiting_on_the_journal_leaves_no_count_behind() {
        let (runtime, scheduler, bulkheads) = single();
        let holders = Arc::new(Holders::default());
        let (order, _ran) = tokio::sync::mpsc::unbounded_channel();
        let (_never, never_fsynced) = tokio::sync::oneshot::channel();
        assert!(bulkheads.submit(
            "p",
            "a",
            128,
            Duration::from_secs(60),
            resting_job(&bulkheads, &holders, "a", never_fsynced, &order)
        ));
        // A gave its turn up: it waits on the journal.
        eventually("A waits on the journal", || {
            bulkheads.load("p").running == 0
        });
        // The runtime stops with A waiting on the journal: its task is dropped.
        let (stopped, stop) = std::sync::mpsc::channel();
        let draining = {
            let (scheduler, bulkheads) = (scheduler.clone(), bulkheads.clone());
            std::thread::spawn(move || {
                bulkheads.drain();
                scheduler.drain();
                let _ = stopped.send(());
            })
        };
        runtime.shutdown_background();
        stop.recv_timeout(Duration::from_secs(10))
            .expect("the lanes and the scheduler drain once the waiting task is gone");
        draining.join().unwrap();
        let load = bulkheads.load("p");
        assert_eq!((load.running, load.waiting), (0, 0));
    }
}
