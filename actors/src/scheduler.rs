//! The scheduler: admission of executions by priority level onto a fixed number of worker
//! slots, and preemption at instruction boundaries.
//!
//! - Levels: 0 critical, 64 high, 128 normal, 192 low, 255 background (lower = more urgent).
//! - One order for every free slot: queued jobs and parked executions compete by
//!   (effective level, arrival), where arrival is the order of [`Scheduler::submit`] and the
//!   effective level is the declared one improved by one for every `aging` (default 100 ms)
//!   since that submission. A free slot goes to the first in this order.
//! - Preemption: at each instruction boundary ([`Boundary::checkpoint`], found by the id
//!   given to `submit`) a *preemptible* execution gives its slot up when no slot is free
//!   and the first waiting candidate has a strictly more urgent *declared* level, so
//!   equal-level work never thrashes, and also comes before it in the order above, since
//!   otherwise the slot would come straight back to it (a NORMAL execution accepted more
//!   than 12.8 s ago is no longer parked, even for CRITICAL work). Non-preemptible
//!   executions are never parked. An execution holding a resource that a more urgent
//!   execution waits for runs at that waiter's level (priority inheritance through the
//!   [`Arbiter`]).
//! - Parked resumption: a parked execution keeps its arrival, so it takes a freed slot
//!   before any queued job of the same or a lower declared level accepted after it.
//! - No starvation: a BACKGROUND job reaches the CRITICAL level after at most
//!   255 × 100 ms = 25.5 s of waiting and is then served in arrival order.
//! - `max_wait`: a job admitted later than its `max_wait` still runs, but is told so
//!   ([`Admission::late`]) and takes its fallback instead of its normal path.
//!
//! Jobs are futures, run as tasks of the runtime the scheduler is given (the node's actor
//! runtime): a slot is a permit to run, not a thread, and a parked execution is a task
//! waiting for its slot to be handed back. A job that waits on the world (a plugin call, a
//! backoff timer) keeps its slot but no thread; one that waits for the journal's fsync gives
//! its slot up meanwhile (`Scheduler::rest`, through the lanes' [`Boundary::durable`]) and
//! takes one back after it, parked in the order above when none is free.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::arbiter::Arbiter;
use crate::gates::Boundary;
use crate::sync::{Locked, Waits};

/// How a job was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Time spent in the queue.
    pub waited: Duration,
    /// Whether that exceeded the job's `max_wait`.
    pub late: bool,
}

/// A unit of work, usually one execution: given its admission, the future to run.
pub type Job = Box<dyn FnOnce(Admission) -> BoxFuture<'static, ()> + Send + 'static>;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Slots: executions running at once (parked ones not counted).
    pub workers: usize,
    /// Each `aging` since its submission improves a job's level by one in the admission
    /// order (queued or parked).
    pub aging: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            aging: Duration::from_millis(100),
        }
    }
}

struct Queued {
    id: String,
    seq: u64,
    enqueued: Instant,
    max_wait: Duration,
    job: Job,
}

/// The arrival of an admitted execution, which it keeps when it is parked, and the level it
/// was submitted at.
#[derive(Clone, Copy)]
struct Ticket {
    seq: u64,
    enqueued: Instant,
    level: u32,
}

/// An execution parked at a boundary, waiting to be handed a slot.
struct Parked {
    enqueued: Instant,
    /// Told when the slot is handed over (a grant wakes only its receiver).
    resume: oneshot::Sender<()>,
}

/// Where the first candidate for a free slot waits.
#[derive(Clone, Copy)]
enum Waiting {
    Queued,
    /// Under its `State::parked` key.
    Parked((u64, u64)),
}

#[derive(Clone, Copy)]
struct Candidate {
    /// (effective level, arrival seq): the one order of admission.
    key: (u32, u64),
    declared: u32,
    waiting: Waiting,
}

#[derive(Default)]
struct State {
    /// Queued jobs by declared level, oldest first (no empty level is kept). Within a level
    /// the oldest job is also the most aged, so only the heads compete for admission.
    queue: BTreeMap<u32, VecDeque<Queued>>,
    /// Parked executions by the level they parked at, then (arrival seq, park number); as in
    /// the queue only the first of each level competes. The park number tells apart two
    /// executions admitted under the same id.
    parked: BTreeMap<u32, BTreeMap<(u64, u64), Parked>>,
    /// Admitted executions whose job has not returned (running or parked), by id.
    tickets: HashMap<String, Ticket>,
    seq: u64,
    parks: u64,
    /// Slots taken, including those handed to a parked execution that has not woken yet.
    running: usize,
    /// Executions parked and not yet handed a slot.
    parked_count: usize,
    /// Executions that gave their slot up while the journal makes their steps durable
    /// ([`Scheduler::rest`]) and have not asked for one again.
    resting: usize,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    /// `drain` waits here.
    settled: Condvar,
    config: SchedulerConfig,
    arbiter: Arbiter,
    /// Where jobs run.
    runtime: tokio::runtime::Handle,
}

/// The scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    fn effective(&self, level: u32, enqueued: Instant, now: Instant) -> u32 {
        let aged = now.saturating_duration_since(enqueued).as_nanos()
            / self.config.aging.as_nanos().max(1);
        level.saturating_sub(u32::try_from(aged).unwrap_or(u32::MAX))
    }

    /// The first in the admission order among queued jobs and parked executions. Within a
    /// level arrival order is also aging order (seq and enqueue instant are taken together),
    /// so only the first of each level needs comparing.
    fn first_waiting(&self, state: &State, now: Instant) -> Option<Candidate> {
        let queued = state.queue.iter().filter_map(|(level, jobs)| {
            jobs.front().map(|job| Candidate {
                key: (self.effective(*level, job.enqueued, now), job.seq),
                declared: *level,
                waiting: Waiting::Queued,
            })
        });
        let parked = state.parked.iter().filter_map(|(level, executions)| {
            executions.iter().next().map(|(at, parked)| Candidate {
                key: (self.effective(*level, parked.enqueued, now), at.0),
                declared: *level,
                waiting: Waiting::Parked(*at),
            })
        });
        queued.chain(parked).min_by_key(|candidate| candidate.key)
    }

    /// Fills free slots in admission order: parked executions are handed theirs here; stops
    /// at the first queued job, which needs a task, and returns its level.
    fn hand_over(&self, state: &mut State, now: Instant) -> Option<u32> {
        while state.running < self.config.workers {
            let first = self.first_waiting(state, now)?;
            let Waiting::Parked(at) = first.waiting else {
                return Some(first.declared);
            };
            let executions = state.parked.get_mut(&first.declared)?;
            let parked = executions.remove(&at);
            if executions.is_empty() {
                state.parked.remove(&first.declared);
            }
            state.parked_count -= 1;
            // A parked execution whose task is gone (dropped at shutdown) takes no slot.
            if let Some(parked) = parked
                && parked.resume.send(()).is_ok()
            {
                state.running += 1;
            }
        }
        None
    }

    /// Takes the job a task should run next (its slot counted), after handing free slots
    /// to parked executions that come first.
    fn next(&self, state: &mut State) -> Option<Queued> {
        let level = self.hand_over(state, Instant::now())?;
        let jobs = state.queue.get_mut(&level)?;
        let job = jobs.pop_front()?;
        if jobs.is_empty() {
            state.queue.remove(&level);
        }
        state.running += 1;
        state.tickets.insert(
            job.id.clone(),
            Ticket {
                seq: job.seq,
                enqueued: job.enqueued,
                level,
            },
        );
        Some(job)
    }
}

impl Inner {
    /// Starts a task for every queued job that gets a free slot.
    fn start(self: &Arc<Self>, state: &mut State) {
        while let Some(job) = self.next(state) {
            self.runtime.spawn(run(self.clone(), job));
        }
    }
}

/// Runs `job`, then the jobs that the slot it frees goes to, as one task.
async fn run(inner: Arc<Inner>, mut job: Queued) {
    loop {
        let Queued {
            id,
            seq,
            enqueued,
            max_wait,
            job: work,
        } = job;
        let waited = enqueued.elapsed();
        let admission = Admission {
            waited,
            late: waited > max_wait,
        };
        // A panicking job must not take its slot down with it.
        let ran = match std::panic::catch_unwind(AssertUnwindSafe(|| work(admission))) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await.is_ok(),
            Err(_) => false,
        };
        if !ran {
            tracing::error!("a scheduled job panicked; its slot is handed on");
        }
        let mut state = inner.lock();
        // Another execution admitted under the same id keeps its own ticket.
        if state
            .tickets
            .get(&id)
            .is_some_and(|ticket| ticket.seq == seq)
        {
            state.tickets.remove(&id);
        }
        state.running -= 1;
        // The freed slot goes to the first in order: a parked execution, or the next job
        // (run by this task).
        match inner.next(&mut state) {
            Some(next) => job = next,
            None => {
                if state.closed {
                    inner.settled.notify_all();
                }
                return;
            }
        }
    }
}

/// Parks an execution with `ticket` at `level` until a free slot is handed to it (and
/// counted in `running`), in the one admission order.
fn park(state: &mut State, level: u32, ticket: Ticket) -> oneshot::Receiver<()> {
    state.parks += 1;
    let at = (ticket.seq, state.parks);
    let (resume, resumed) = oneshot::channel();
    state.parked.entry(level).or_default().insert(
        at,
        Parked {
            enqueued: ticket.enqueued,
            resume,
        },
    );
    state.parked_count += 1;
    resumed
}

/// An execution's slot given up while the journal makes its steps durable
/// ([`Scheduler::rest`]); [`Rest::back`] takes one again. Dropped before it has one again
/// (its task dropped at shutdown), it stops counting, and a slot handed to it meanwhile is
/// handed on.
pub(crate) struct Rest {
    inner: Arc<Inner>,
    ticket: Ticket,
    /// Where `back` waits to be handed a slot.
    parked: Option<oneshot::Receiver<()>>,
    /// Set once the execution counts as running again.
    back: bool,
}

impl Rest {
    /// Takes a slot again: at once when one is free (then no one waits for it: free slots
    /// are handed on at once), else parked, in the admission order by the execution's
    /// level and arrival, until one is handed over.
    pub(crate) async fn back(mut self) {
        {
            let mut state = self.inner.lock();
            state.resting -= 1;
            if state.running < self.inner.config.workers {
                state.running += 1;
                self.back = true;
                return;
            }
            self.parked = Some(park(&mut state, self.ticket.level, self.ticket));
        }
        if let Some(parked) = self.parked.as_mut() {
            // A parked execution is handed its slot, or its sender is dropped at shutdown.
            let _ = parked.await;
        }
        self.back = true;
    }
}

impl Rest {
    /// The execution ends without taking a slot back: it counts as running until its job
    /// returns, which it does at once (the count may exceed the slots by it meanwhile).
    pub(crate) fn leave(mut self) {
        let mut state = self.inner.lock();
        state.resting -= 1;
        state.running += 1;
        self.back = true;
    }
}

impl Drop for Rest {
    fn drop(&mut self) {
        if self.back {
            return;
        }
        let mut state = self.inner.lock();
        match self.parked.take() {
            // Handed a slot it will not use (a handover happens under this lock).
            Some(mut parked) => {
                if parked.try_recv().is_ok() {
                    state.running -= 1;
                    self.inner.start(&mut state);
                }
            }
            None => state.resting -= 1,
        }
        if state.closed {
            self.inner.settled.notify_all();
        }
    }
}

impl Scheduler {
    /// Execution `id` gives its slot up while the journal makes its steps durable (its
    /// task waits for the fsync, and needs no slot for that); the slot goes to the first
    /// waiting. `None` when this scheduler did not admit `id` (it holds no slot here).
    pub(crate) fn rest(&self, id: &str) -> Option<Rest> {
        let mut state = self.inner.lock();
        let ticket = state.tickets.get(id).copied()?;
        state.running -= 1;
        state.resting += 1;
        self.inner.start(&mut state);
        Some(Rest {
            inner: self.inner.clone(),
            ticket,
            parked: None,
            back: false,
        })
    }

    /// A scheduler with `config.workers` slots whose jobs run on `runtime`; `arbiter`
    /// provides priority inheritance.
    pub fn new(config: SchedulerConfig, arbiter: Arbiter, runtime: tokio::runtime::Handle) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                settled: Condvar::new(),
                config,
                arbiter,
                runtime,
            }),
        }
    }

    /// Queues `job`, the execution `id`, at `priority`; returns false (and drops the job)
    /// once the scheduler is closed. The execution's boundaries
    /// ([`Boundary::checkpoint`] with the same `id`) keep the arrival it gets here.
    pub fn submit(&self, id: &str, priority: u32, max_wait: Duration, job: Job) -> bool {
        let mut state = self.inner.lock();
        if state.closed {
            return false;
        }
        state.seq += 1;
        let seq = state.seq;
        state.queue.entry(priority).or_default().push_back(Queued {
            id: id.to_owned(),
            seq,
            enqueued: Instant::now(),
            max_wait,
            job,
        });
        // Without a free slot the job waits for a running one to end or park, and whoever
        // frees the slot hands it over.
        self.inner.start(&mut state);
        true
    }

    /// Its slots (executions running at once).
    pub fn workers(&self) -> usize {
        self.inner.config.workers
    }

    /// Whether [`Scheduler::drain`] closed it (it takes no more jobs).
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Jobs waiting per priority level.
    pub fn queue_depth(&self) -> BTreeMap<u32, usize> {
        self.inner
            .lock()
            .queue
            .iter()
            .map(|(level, jobs)| (*level, jobs.len()))
            .collect()
    }

    /// Stops intake and drops the jobs still queued (not started), without waiting for
    /// those running. Dropped outside the lock: dropping a job may come back here (a
    /// bulkhead's turn ends and asks whether the scheduler is closed).
    pub fn close(&self) {
        let queued = {
            let mut state = self.inner.lock();
            state.closed = true;
            std::mem::take(&mut state.queue)
        };
        drop(queued);
        self.inner.settled.notify_all();
    }

    /// Stops intake and waits until every queued, running and parked job has finished.
    /// Blocking: call it from outside the scheduler's runtime.
    pub fn drain(&self) {
        let mut state = self.inner.lock();
        state.closed = true;
        while !state.queue.is_empty()
            || state.running > 0
            || state.parked_count > 0
            || state.resting > 0
        {
            state = self.inner.settled.waiting(state);
        }
    }
}

#[async_trait::async_trait]
impl Boundary for Scheduler {
    async fn checkpoint(&self, execution_id: &str, priority: u32, preemptible: bool) {
        if !preemptible {
            return;
        }
        let inner = &self.inner;
        let level = inner
            .arbiter
            .inherited_priority(execution_id)
            .map_or(priority, |inherited| inherited.min(priority));
        let resumed = {
            let mut state = inner.lock();
            if state.running < inner.config.workers {
                return;
            }
            // Only an execution this scheduler admitted holds a slot it can give up.
            let Some(ticket) = state.tickets.get(execution_id).copied() else {
                return;
            };
            let now = Instant::now();
            let own = (inner.effective(level, ticket.enqueued, now), ticket.seq);
            let yields = inner
                .first_waiting(&state, now)
                .is_some_and(|first| first.declared < level && first.key < own);
            if !yields {
                return;
            }
            let resumed = park(&mut state, level, ticket);
            state.running -= 1;
            // Give the slot to the first candidate.
            inner.start(&mut state);
            resumed
        };
        // Whoever frees a slot while this execution comes first hands it over (and counts
        // it in `running`).
        let _ = resumed.await;
        if inner.lock().closed {
            inner.settled.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A runtime of its own for each test's scheduler (jobs of some tests block a thread).
    fn runtime() -> tokio::runtime::Handle {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        std::mem::forget(runtime);
        handle
    }

    fn scheduler(workers: usize) -> Scheduler {
        Scheduler::new(
            SchedulerConfig {
                workers,
                aging: Duration::from_secs(3600),
            },
            Arbiter::new(1),
            runtime(),
        )
    }

    /// A job that runs `f` (blocking its thread, as a test may).
    fn job(f: impl FnOnce(Admission) + Send + 'static) -> Job {
        Box::new(move |admission| Box::pin(async move { f(admission) }))
    }

    #[test]
    fn the_most_urgent_queued_job_runs_first() {
        let s = scheduler(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = gate.clone();
        // Occupy the only slot until every job is queued.
        s.submit(
            "gate",
            128,
            Duration::from_secs(60),
            job(move |_| {
                let mut open = g.0.lock().unwrap();
                while !*open {
                    open = g.1.wait(open).unwrap();
                }
            }),
        );
        for (name, level) in [
            ("bg", 255),
            ("low", 192),
            ("crit", 0),
            ("normal", 128),
            ("crit-2", 0),
        ] {
            let order = order.clone();
            s.submit(
                name,
                level,
                Duration::from_secs(60),
                job(move |_| order.lock().unwrap().push(name)),
            );
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        s.drain();
        assert_eq!(
            *order.lock().unwrap(),
            ["crit", "crit-2", "normal", "low", "bg"]
        );
    }

    #[test]
    fn a_critical_job_starts_within_one_boundary_of_a_saturating_low_job() {
        let s = scheduler(1);
        let low_step = Arc::new(AtomicUsize::new(0));
        let started_at_step = Arc::new(Mutex::new(None));
        let (s2, step) = (s.clone(), low_step.clone());
        s.submit(
            "low",
            192,
            Duration::from_secs(60),
            Box::new(move |_| {
                Box::pin(async move {
                    for i in 1..=200 {
                        s2.checkpoint("low", 192, true).await;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        step.store(i, Ordering::SeqCst);
                    }
                })
            }),
        );
        while low_step.load(Ordering::SeqCst) < 5 {
            std::thread::yield_now();
        }
        let submitted_at = low_step.load(Ordering::SeqCst);
        let (step, started) = (low_step.clone(), started_at_step.clone());
        s.submit(
            "crit",
            0,
            Duration::from_secs(60),
            job(move |_| {
                *started.lock().unwrap() = Some(step.load(Ordering::SeqCst));
            }),
        );
        s.drain();
        let started = started_at_step.lock().unwrap().expect("critical ran");
        assert!(
            started <= submitted_at + 1,
            "critical started at low step {started}, submitted at {submitted_at}"
        );
        assert_eq!(
            low_step.load(Ordering::SeqCst),
            200,
            "the low job resumed and finished"
        );
    }

    #[test]
    fn non_preemptible_work_is_never_parked() {
        let s = scheduler(1);
        let trace = Arc::new(Mutex::new(Vec::new()));
        let (s2, t) = (s.clone(), trace.clone());
        let started = Arc::new(AtomicUsize::new(0));
        let st = started.clone();
        s.submit(
            "high",
            64,
            Duration::from_secs(60),
            Box::new(move |_| {
                Box::pin(async move {
                    st.store(1, Ordering::SeqCst);
                    for i in 0..20 {
                        s2.checkpoint("high", 64, false).await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        t.lock().unwrap().push(format!("high-{i}"));
                    }
                })
            }),
        );
        while started.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let t = trace.clone();
        s.submit(
            "crit",
            0,
            Duration::from_secs(60),
            job(move |_| t.lock().unwrap().push("crit".into())),
        );
        s.drain();
        assert_eq!(
            trace.lock().unwrap().last().map(String::as_str),
            Some("crit")
        );
    }

    #[test]
    fn waiting_past_max_wait_is_reported_and_old_jobs_age_up() {
        let s = Scheduler::new(
            SchedulerConfig {
                workers: 1,
                aging: Duration::from_millis(1),
            },
            Arbiter::new(1),
            runtime(),
        );
        let admissions = Arc::new(Mutex::new(Vec::new()));
        let a = admissions.clone();
        s.submit(
            "normal",
            128,
            Duration::from_secs(60),
            job(|_| std::thread::sleep(Duration::from_millis(300))),
        );
        // Queued first at BACKGROUND; by the time the slot frees up it has aged past a fresh LOW job.
        s.submit(
            "bg",
            255,
            Duration::from_millis(50),
            job(move |adm| a.lock().unwrap().push(("bg", adm.late))),
        );
        std::thread::sleep(Duration::from_millis(280));
        let a = admissions.clone();
        s.submit(
            "low",
            192,
            Duration::from_secs(60),
            job(move |adm| a.lock().unwrap().push(("low", adm.late))),
        );
        s.drain();
        assert_eq!(*admissions.lock().unwrap(), [("bg", true), ("low", false)]);
    }

    #[test]
    fn a_panicking_job_does_not_lose_the_slot() {
        let s = scheduler(1);
        s.submit("boom", 128, Duration::from_secs(1), job(|_| panic!("boom")));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        s.submit(
            "after",
            128,
            Duration::from_secs(1),
            job(move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        );
        s.drain();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    /// One job of a generated plan: submitted up front, or by job `parent.0` right before
    /// its checkpoint `parent.1`.
    #[derive(Debug, Clone)]
    struct Planned {
        level: u32,
        preemptible: bool,
        checkpoints: usize,
        parent: Option<(usize, usize)>,
    }

    fn plan() -> impl proptest::strategy::Strategy<Value = Vec<Planned>> {
        use proptest::prelude::*;
        let job = (
            proptest::sample::select(vec![0u32, 64, 128, 192, 255]),
            any::<bool>(),
            0usize..=3,
            proptest::option::weighted(0.6, (any::<usize>(), any::<usize>())),
        );
        proptest::collection::vec(job, 1..=8).prop_map(|jobs| {
            let mut plan: Vec<Planned> = Vec::new();
            for (i, (level, preemptible, checkpoints, parent)) in jobs.into_iter().enumerate() {
                let parent = parent.and_then(|(p, c)| {
                    let p = p.checked_rem(i)?;
                    let of = plan[p].checkpoints;
                    (of > 0).then(|| (p, c % of))
                });
                plan.push(Planned {
                    level,
                    preemptible,
                    checkpoints,
                    parent,
                });
            }
            plan
        })
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        Submit(usize),
        Start(usize),
        CpEnter(usize),
        CpExit(usize),
        End(usize),
    }

    struct Run {
        scheduler: Scheduler,
        plan: Vec<Planned>,
        log: Mutex<Vec<Event>>,
    }

    impl Run {
        fn log(&self, event: Event) {
            self.log.lock().unwrap().push(event);
        }

        /// Submissions are serial (the test thread while a gate holds the only slot, then
        /// the one running job), so the log's order of `Submit` is the order of seqs.
        fn submit(self: &Arc<Self>, i: usize) {
            self.log(Event::Submit(i));
            let run = self.clone();
            let submitted = self.scheduler.submit(
                &format!("job-{i}"),
                self.plan[i].level,
                Duration::from_secs(60),
                Box::new(move |_| Box::pin(run.job(i))),
            );
            assert!(submitted);
        }

        async fn job(self: Arc<Self>, i: usize) {
            self.log(Event::Start(i));
            let me = &self.plan[i];
            for c in 0..me.checkpoints {
                let children = self.plan.iter().enumerate();
                for (child, _) in children.filter(|(_, p)| p.parent == Some((i, c))) {
                    self.submit(child);
                }
                self.log(Event::CpEnter(i));
                self.scheduler
                    .checkpoint(&format!("job-{i}"), me.level, me.preemptible)
                    .await;
                self.log(Event::CpExit(i));
            }
            self.log(Event::End(i));
        }
    }

    /// Runs `plan` on one slot and checks the order of starts against the parked jobs.
    /// `urgent_child_first`: a strictly more urgent child submitted right before a
    /// preemptible job's checkpoint starts before that checkpoint returns (holds when aging
    /// never reorders, i.e. with a huge `aging`).
    fn check(
        plan: Vec<Planned>,
        aging: Duration,
        urgent_child_first: bool,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::prop_assert;
        let run = Arc::new(Run {
            scheduler: Scheduler::new(
                SchedulerConfig { workers: 1, aging },
                Arbiter::new(1),
                runtime(),
            ),
            plan,
            log: Mutex::new(Vec::new()),
        });
        // The gate (first in every order) holds the slot while the roots are submitted.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = gate.clone();
        run.scheduler.submit(
            "gate",
            0,
            Duration::from_secs(60),
            job(move |_| {
                let mut open = g.0.lock().unwrap();
                while !*open {
                    open = g.1.wait(open).unwrap();
                }
            }),
        );
        for i in 0..run.plan.len() {
            if run.plan[i].parent.is_none() {
                run.submit(i);
            }
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let n = run.plan.len();
        let deadline = Instant::now() + Duration::from_secs(20);
        let ended = || {
            let log = run.log.lock().unwrap();
            log.iter().filter(|e| matches!(e, Event::End(_))).count()
        };
        while ended() < n {
            prop_assert!(Instant::now() < deadline, "jobs did not all end");
            std::thread::sleep(Duration::from_millis(1));
        }
        run.scheduler.drain();

        let log = run.log.lock().unwrap().clone();
        let level = |i: usize| run.plan[i].level;
        let mut rank = vec![0; n];
        let submits = log.iter().filter_map(|e| match e {
            Event::Submit(i) => Some(*i),
            _ => None,
        });
        for (r, i) in submits.enumerate() {
            rank[i] = r;
        }
        let start = |k: usize| log.iter().position(|e| *e == Event::Start(k));
        for (a, event) in log.iter().enumerate() {
            let Event::CpEnter(j) = *event else { continue };
            let b = a + log[a..]
                .iter()
                .position(|e| *e == Event::CpExit(j))
                .expect("a checkpoint returns");
            for event in &log[a..b] {
                if let Event::Start(k) = *event {
                    prop_assert!(
                        !(rank[k] > rank[j] && level(k) >= level(j)),
                        "job {k} (level {}) accepted after job {j} (level {}) started while \
                         {j} was at a checkpoint: {log:?}",
                        level(k),
                        level(j)
                    );
                }
            }
        }
        if urgent_child_first {
            for (child, planned) in run.plan.iter().enumerate() {
                let Some((j, c)) = planned.parent else {
                    continue;
                };
                if !(run.plan[j].preemptible && planned.level < level(j)) {
                    continue;
                }
                let exit = log
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| **e == Event::CpExit(j))
                    .nth(c)
                    .map(|(at, _)| at);
                prop_assert!(
                    start(child) < exit,
                    "job {child} (level {}) did not start while its parent {j} (level {}) \
                     was parked at checkpoint {c}: {log:?}",
                    planned.level,
                    level(j)
                );
            }
        }
        Ok(())
    }

    /// A step of a generated history: submit a job at a level, or let the running job
    /// picked by the number end.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Submit(u32),
        End(usize),
    }

    fn history() -> impl proptest::strategy::Strategy<Value = (usize, Vec<Step>)> {
        use proptest::prelude::*;
        let level = proptest::sample::select(vec![0u32, 64, 128, 192, 255]);
        let step = prop_oneof![
            3 => level.prop_map(Step::Submit),
            2 => any::<usize>().prop_map(Step::End),
        ];
        (1usize..=3, proptest::collection::vec(step, 1..=24))
    }

    /// What the jobs of a history did, as they saw it.
    #[derive(Default)]
    struct Seen {
        started: Mutex<Vec<usize>>,
        running: AtomicUsize,
        most_running: AtomicUsize,
    }

    /// The scheduler's promise without aging, as a model: a free slot goes to the queued
    /// job of the most urgent level, the earliest submitted among them.
    #[derive(Default)]
    struct Model {
        queued: Vec<(u32, usize)>,
        running: Vec<usize>,
        started: Vec<usize>,
    }

    impl Model {
        fn fill(&mut self, slots: usize) {
            while self.running.len() < slots {
                let Some(first) = self.queued.iter().copied().min() else {
                    return;
                };
                self.queued.retain(|queued| *queued != first);
                self.running.push(first.1);
                self.started.push(first.1);
            }
        }
    }

    /// Waits until the scheduler has come to what the model says: as many jobs started and
    /// running, as many queued.
    fn settle(s: &Scheduler, seen: &Seen, model: &Model) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (running, queued) = {
                let state = s.inner.lock();
                (
                    state.running,
                    state.queue.values().map(VecDeque::len).sum::<usize>(),
                )
            };
            let started = seen.started.lock().unwrap().len();
            if (running, queued, started)
                == (model.running.len(), model.queued.len(), model.started.len())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "scheduler at {running} running, {queued} queued, {started} started; \
                     expected {} running, {} queued, {} started",
                    model.running.len(),
                    model.queued.len(),
                    model.started.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs `steps` on a scheduler of `slots` and checks after each step that it admitted
    /// exactly the jobs the model did, in the same order; at the end, that every job ran
    /// once and that no more than `slots` ever ran at once.
    fn check_history(
        slots: usize,
        steps: Vec<Step>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::{prop_assert, prop_assert_eq};
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let runtime = RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        });
        let s = Scheduler::new(
            SchedulerConfig {
                workers: slots,
                aging: Duration::from_secs(3600),
            },
            Arbiter::new(1),
            runtime.handle().clone(),
        );
        let seen = Arc::new(Seen::default());
        let mut ends: Vec<Option<oneshot::Sender<()>>> = Vec::new();
        let mut model = Model::default();
        let submit = |level: u32, ends: &mut Vec<Option<oneshot::Sender<()>>>| {
            let i = ends.len();
            let (end, ended) = oneshot::channel::<()>();
            ends.push(Some(end));
            let seen = seen.clone();
            let job: Job = Box::new(move |_| {
                Box::pin(async move {
                    let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most_running.fetch_max(now, Ordering::SeqCst);
                    seen.started.lock().unwrap().push(i);
                    let _ = ended.await;
                    seen.running.fetch_sub(1, Ordering::SeqCst);
                })
            });
            assert!(s.submit(&format!("job-{i}"), level, Duration::from_secs(60), job));
            i
        };
        let end = |model: &mut Model, ends: &mut Vec<Option<oneshot::Sender<()>>>, pick: usize| {
            let i = model.running.remove(pick % model.running.len());
            if let Some(end) = ends[i].take() {
                let _ = end.send(());
            }
        };
        for step in steps {
            match step {
                Step::Submit(level) => {
                    let i = submit(level, &mut ends);
                    model.queued.push((level, i));
                }
                Step::End(pick) if !model.running.is_empty() => end(&mut model, &mut ends, pick),
                Step::End(_) => continue,
            }
            model.fill(slots);
            settle(&s, &seen, &model).map_err(proptest::test_runner::TestCaseError::fail)?;
            prop_assert_eq!(&*seen.started.lock().unwrap(), &model.started);
        }
        while !model.running.is_empty() {
            end(&mut model, &mut ends, 0);
            model.fill(slots);
            settle(&s, &seen, &model).map_err(proptest::test_runner::TestCaseError::fail)?;
            prop_assert_eq!(&*seen.started.lock().unwrap(), &model.started);
        }
        s.drain();
        let mut started = seen.started.lock().unwrap().clone();
        started.sort_unstable();
        prop_assert_eq!(
            started,
            (0..ends.len()).collect::<Vec<_>>(),
            "each job ran once"
        );
        let most = seen.most_running.load(Ordering::SeqCst);
        prop_assert!(most <= slots, "{most} jobs ran at once on {slots} slots");
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        #[test]
        fn later_work_never_overtakes_a_parked_execution(plan in plan()) {
            check(plan, Duration::from_secs(3600), true)?;
        }

        #[test]
        fn later_work_never_overtakes_a_parked_execution_while_aging(plan in plan()) {
            check(plan, Duration::from_millis(1), false)?;
        }

        #[test]
        fn slots_go_by_level_then_arrival_once_each_never_past_the_slots(
            (slots, steps) in history()
        ) {
            check_history(slots, steps)?;
        }
    }
}
