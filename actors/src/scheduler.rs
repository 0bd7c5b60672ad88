//! The scheduler: admission of executions by priority level onto a fixed number of worker
//! slots, and preemption at instruction boundaries.
//!
//! - Levels: 0 critical, 64 high, 128 normal, 192 low, 255 background (lower = more urgent).
//! - Admission: a free slot takes the most urgent queued job, then the oldest.
//! - Preemption: at each instruction boundary ([`Boundary::checkpoint`]) a *preemptible*
//!   execution gives its slot up while a more urgent job waits and no slot is free; it
//!   resumes when no more urgent job waits and a slot is free. Non-preemptible executions
//!   are never parked. An execution holding a resource that a more urgent execution waits
//!   for runs at that waiter's level (priority inheritance through the [`Arbiter`]).
//! - No starvation: for admission, a queued job's level improves by one for every `aging`
//!   it has waited (default 100 ms), so a BACKGROUND job reaches the CRITICAL level after at
//!   most 255 × 100 ms = 25.5 s and is then served in arrival order. Aging only orders the
//!   queue: preemption compares declared levels, so equal-level work never thrashes.
//! - `max_wait`: a job admitted later than its `max_wait` still runs, but is told so
//!   ([`Admission::late`]) and takes its fallback instead of its normal path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::arbiter::Arbiter;
use crate::gates::Boundary;

/// How a job was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Time spent in the queue.
    pub waited: Duration,
    /// Whether that exceeded the job's `max_wait`.
    pub late: bool,
}

/// A unit of work: usually one execution.
pub type Job = Box<dyn FnOnce(Admission) + Send + 'static>;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Worker slots (executions running at once).
    pub workers: usize,
    /// Waiting this long improves a queued job's level by one.
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
    priority: u32,
    seq: u64,
    enqueued: Instant,
    max_wait: Duration,
    job: Job,
}

#[derive(Default)]
struct State {
    /// Queued jobs by declared level, oldest first (no empty level is kept). Within a level
    /// the oldest job is also the most aged, so only the heads compete for admission.
    queue: BTreeMap<u32, VecDeque<Queued>>,
    seq: u64,
    running: usize,
    parked: usize,
    threads: usize,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    config: SchedulerConfig,
    arbiter: Arbiter,
}

/// The scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn effective(&self, job: &Queued, now: Instant) -> u32 {
        let aged = now.saturating_duration_since(job.enqueued).as_nanos()
            / self.config.aging.as_nanos().max(1);
        job.priority
            .saturating_sub(u32::try_from(aged).unwrap_or(u32::MAX))
    }

    /// Takes the job to run next off the queue.
    fn next(&self, state: &mut State) -> Option<Queued> {
        let now = Instant::now();
        let level = state
            .queue
            .iter()
            .filter_map(|(level, jobs)| {
                jobs.front()
                    .map(|job| (self.effective(job, now), job.seq, *level))
            })
            .min()?
            .2;
        let jobs = state.queue.get_mut(&level)?;
        let job = jobs.pop_front();
        if jobs.is_empty() {
            state.queue.remove(&level);
        }
        job
    }

    /// Whether a queued job of a strictly more urgent *declared* level waits. Aging orders
    /// admission among queued jobs but never preempts running work of the same level.
    fn more_urgent_waiting(&self, state: &State, level: u32) -> bool {
        state
            .queue
            .keys()
            .next()
            .is_some_and(|first| *first < level)
    }
}

impl Scheduler {
    /// A scheduler with `config.workers` slots; `arbiter` provides priority inheritance.
    pub fn new(config: SchedulerConfig, arbiter: Arbiter) -> Self {
        let scheduler = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                config,
                arbiter,
            }),
        };
        for _ in 0..scheduler.inner.config.workers.max(1) {
            scheduler.spawn_worker(&mut scheduler.inner.lock());
        }
        scheduler
    }

    fn spawn_worker(&self, state: &mut State) {
        state.threads += 1;
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("eyeflow-worker".into())
            .spawn(move || worker(&inner));
        if let Err(e) = spawned {
            state.threads -= 1;
            tracing::error!("cannot start a worker thread: {e}");
        }
    }

    /// Queues `job` at `priority`; returns false (and drops the job) once the scheduler is
    /// closed.
    pub fn submit(&self, priority: u32, max_wait: Duration, job: Job) -> bool {
        let mut state = self.inner.lock();
        if state.closed {
            return false;
        }
        state.seq += 1;
        let seq = state.seq;
        state.queue.entry(priority).or_default().push_back(Queued {
            priority,
            seq,
            enqueued: Instant::now(),
            max_wait,
            job,
        });
        // One condition variable serves idle workers, parked executions and `drain`: wake
        // a single worker only when no one else waits on it.
        let only_workers_wait = state.parked == 0 && !state.closed;
        drop(state);
        if only_workers_wait {
            self.inner.changed.notify_one();
        } else {
            self.inner.changed.notify_all();
        }
        true
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

    /// Stops intake and waits until every queued and running job has finished.
    pub fn drain(&self) {
        let mut state = self.inner.lock();
        state.closed = true;
        self.inner.changed.notify_all();
        while !state.queue.is_empty() || state.running > 0 || state.parked > 0 {
            state = self.inner.wait(state);
        }
    }
}

fn worker(inner: &Inner) {
    let mut state = inner.lock();
    loop {
        if state.running < inner.config.workers
            && let Some(job) = inner.next(&mut state)
        {
            state.running += 1;
            drop(state);
            let waited = job.enqueued.elapsed();
            let admission = Admission {
                waited,
                late: waited > job.max_wait,
            };
            // A panicking job must not take the worker (and its slot) down with it.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.job)(admission)));
            if outcome.is_err() {
                tracing::error!("a scheduled job panicked; the worker carries on");
            }
            state = inner.lock();
            state.running -= 1;
            // This worker takes the next job itself; others only care when executions are
            // parked (a slot came free) or a drain waits.
            if state.parked > 0 || state.closed {
                inner.changed.notify_all();
            }
            continue;
        }
        // Extra threads started for parked executions retire when idle.
        if state.threads > inner.config.workers + state.parked
            || (state.closed && state.queue.is_empty())
        {
            state.threads -= 1;
            inner.changed.notify_all();
            return;
        }
        state = inner.wait(state);
    }
}

impl Boundary for Scheduler {
    fn checkpoint(&self, execution_id: &str, priority: u32, preemptible: bool) {
        if !preemptible {
            return;
        }
        let level = self
            .inner
            .arbiter
            .inherited_priority(execution_id)
            .map_or(priority, |inherited| inherited.min(priority));
        let mut state = self.inner.lock();
        if !(self.inner.more_urgent_waiting(&state, level)
            && state.running >= self.inner.config.workers)
        {
            return;
        }
        // Give the slot to the more urgent job; make sure a thread is there to take it.
        state.running -= 1;
        state.parked += 1;
        if state.threads < self.inner.config.workers + state.parked {
            self.spawn_worker(&mut state);
        }
        self.inner.changed.notify_all();
        while self.inner.more_urgent_waiting(&state, level)
            || state.running >= self.inner.config.workers
        {
            state = self.inner.wait(state);
        }
        state.parked -= 1;
        state.running += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn scheduler(workers: usize) -> Scheduler {
        Scheduler::new(
            SchedulerConfig {
                workers,
                aging: Duration::from_secs(3600),
            },
            Arbiter::new(),
        )
    }

    #[test]
    fn the_most_urgent_queued_job_runs_first() {
        let s = scheduler(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = gate.clone();
        // Occupy the only slot until every job is queued.
        s.submit(
            128,
            Duration::from_secs(60),
            Box::new(move |_| {
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
                level,
                Duration::from_secs(60),
                Box::new(move |_| order.lock().unwrap().push(name)),
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
            192,
            Duration::from_secs(60),
            Box::new(move |_| {
                for i in 1..=200 {
                    s2.checkpoint("low", 192, true);
                    std::thread::sleep(Duration::from_millis(2));
                    step.store(i, Ordering::SeqCst);
                }
            }),
        );
        while low_step.load(Ordering::SeqCst) < 5 {
            std::thread::yield_now();
        }
        let submitted_at = low_step.load(Ordering::SeqCst);
        let (step, started) = (low_step.clone(), started_at_step.clone());
        s.submit(
            0,
            Duration::from_secs(60),
            Box::new(move |_| {
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
            64,
            Duration::from_secs(60),
            Box::new(move |_| {
                st.store(1, Ordering::SeqCst);
                for i in 0..20 {
                    s2.checkpoint("high", 64, false);
                    std::thread::sleep(Duration::from_millis(1));
                    t.lock().unwrap().push(format!("high-{i}"));
                }
            }),
        );
        while started.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let t = trace.clone();
        s.submit(
            0,
            Duration::from_secs(60),
            Box::new(move |_| t.lock().unwrap().push("crit".into())),
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
            Arbiter::new(),
        );
        let admissions = Arc::new(Mutex::new(Vec::new()));
        let a = admissions.clone();
        s.submit(
            128,
            Duration::from_secs(60),
            Box::new(|_| std::thread::sleep(Duration::from_millis(300))),
        );
        // Queued first at BACKGROUND; by the time the slot frees up it has aged past a fresh LOW job.
        s.submit(
            255,
            Duration::from_millis(50),
            Box::new(move |adm| a.lock().unwrap().push(("bg", adm.late))),
        );
        std::thread::sleep(Duration::from_millis(280));
        let a = admissions.clone();
        s.submit(
            192,
            Duration::from_secs(60),
            Box::new(move |adm| a.lock().unwrap().push(("low", adm.late))),
        );
        s.drain();
        assert_eq!(*admissions.lock().unwrap(), [("bg", true), ("low", false)]);
    }

    #[test]
    fn a_panicking_job_does_not_lose_the_slot() {
        let s = scheduler(1);
        s.submit(128, Duration::from_secs(1), Box::new(|_| panic!("boom")));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        s.submit(
            128,
            Duration::from_secs(1),
            Box::new(move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        );
        s.drain();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
