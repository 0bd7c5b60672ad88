//! Parked executions under a steady stream: 4 worker slots kept busy by a backlog of
//! preemptible executions (5 % HIGH, the rest NORMAL), each about 1 ms of work split by 5
//! instruction boundaries. Prints, for the executions that were parked, how long they stayed
//! parked, how long they ran, and how many NORMAL executions accepted after them overtook
//! them. A plain measurement (`harness = false`): what matters is the distribution, not one
//! mean.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use eyeflow_actors::arbiter::Arbiter;
use eyeflow_actors::gates::Boundary;
use eyeflow_actors::scheduler::{Scheduler, SchedulerConfig};

const WORKERS: usize = 4;
const JOBS: usize = 20_000;
const HIGH: u32 = 64;
const NORMAL: u32 = 128;
const SEGMENTS: usize = 5;
/// Work between two boundaries, slept (executions mostly wait on effects).
const SEGMENT: Duration = Duration::from_micros(200);
/// Queued executions the submitter keeps waiting, so that the queue is never empty.
const BACKLOG: usize = 16;
/// A boundary that held its execution longer than this counts as a park (an unparked
/// boundary takes a lock and returns: microseconds).
const PARKED: Duration = Duration::from_micros(50);

struct Record {
    index: usize,
    level: u32,
    accepted: Instant,
    started: Instant,
    ended: Instant,
    /// (entered, left) of each boundary that parked the execution.
    parks: Vec<(Instant, Instant)>,
}

impl Record {
    fn parked(&self) -> Duration {
        self.parks
            .iter()
            .map(|(entered, left)| *left - *entered)
            .sum()
    }
}

/// xorshift64: a fixed, reproducible choice of the HIGH executions.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn percentile_count(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn run() -> Vec<Record> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let scheduler = Scheduler::new(
        SchedulerConfig {
            workers: WORKERS,
            ..SchedulerConfig::default()
        },
        Arbiter::new(1),
        runtime.handle().clone(),
    );
    let (records, received) = mpsc::channel();
    let mut random = 0x9E37_79B9_7F4A_7C15_u64;
    for index in 0..JOBS {
        while scheduler.queue_depth().values().sum::<usize>() >= BACKLOG {
            std::thread::sleep(Duration::from_micros(50));
        }
        let level = if next_random(&mut random).is_multiple_of(20) {
            HIGH
        } else {
            NORMAL
        };
        let id = format!("ex-{index}");
        let boundary = scheduler.clone();
        let records = records.clone();
        let accepted = Instant::now();
        let job_id = id.clone();
        let submitted = scheduler.submit(
            &id,
            level,
            Duration::from_secs(3600),
            Box::new(move |_| {
                Box::pin(async move {
                    let started = Instant::now();
                    let mut parks = Vec::new();
                    for _ in 0..SEGMENTS {
                        let entered = Instant::now();
                        boundary.checkpoint(&job_id, level, true).await;
                        let left = Instant::now();
                        if left - entered > PARKED {
                            parks.push((entered, left));
                        }
                        tokio::time::sleep(SEGMENT).await;
                    }
                    let record = Record {
                        index,
                        level,
                        accepted,
                        started,
                        ended: Instant::now(),
                        parks,
                    };
                    records
                        .send(record)
                        .expect("the bench collects every record");
                })
            }),
        );
        assert!(submitted, "the scheduler is open");
    }
    drop(records);
    scheduler.drain();
    let mut all: Vec<Record> = received.iter().collect();
    all.sort_by_key(|r| r.index);
    assert_eq!(all.len(), JOBS, "every execution ran");
    all
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` only checks that it builds (the
    // order it measures is tested by the scheduler's property test).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let began = Instant::now();
    let records = run();
    let took = began.elapsed();
    let normal: Vec<&Record> = records.iter().filter(|r| r.level == NORMAL).collect();
    let high: Vec<&Record> = records.iter().filter(|r| r.level == HIGH).collect();
    let parked: Vec<&Record> = normal
        .iter()
        .copied()
        .filter(|r| !r.parks.is_empty())
        .collect();

    let mut extra: Vec<Duration> = parked.iter().map(|r| r.parked()).collect();
    let mut own_run: Vec<Duration> = parked.iter().map(|r| r.ended - r.started).collect();
    let mut unparked_run: Vec<Duration> = normal
        .iter()
        .filter(|r| r.parks.is_empty())
        .map(|r| r.ended - r.started)
        .collect();
    let mut high_wait: Vec<Duration> = high.iter().map(|r| r.started - r.accepted).collect();
    // Overtaken: a NORMAL execution accepted later ran entirely inside one of the parks
    // (started after the execution parked, finished before it resumed).
    let mut overtaken: Vec<usize> = Vec::new();
    // Finished first: a NORMAL execution accepted later finished before it (those already
    // running when it parked may, and should, finish first).
    let mut finished_first: Vec<usize> = Vec::new();
    for j in &parked {
        let later = normal.iter().filter(|k| k.index > j.index);
        let (mut over, mut first) = (0, 0);
        for k in later {
            if j.parks
                .iter()
                .any(|(entered, left)| k.started > *entered && k.ended < *left)
            {
                over += 1;
            }
            if k.ended < j.ended {
                first += 1;
            }
        }
        overtaken.push(over);
        finished_first.push(first);
    }
    for v in [&mut extra, &mut own_run, &mut unparked_run, &mut high_wait] {
        v.sort();
    }
    finished_first.sort_unstable();

    println!(
        "{JOBS} executions ({} HIGH, {} NORMAL) on {WORKERS} slots in {:.1} s",
        high.len(),
        normal.len(),
        took.as_secs_f64()
    );
    println!(
        "parked NORMAL executions: {} ({} parks)",
        parked.len(),
        parked.iter().map(|r| r.parks.len()).sum::<usize>()
    );
    println!(
        "  time parked:   p50 {}  p99 {}  max {}",
        ms(percentile(&extra, 50.0)),
        ms(percentile(&extra, 99.0)),
        ms(extra.last().copied().unwrap_or_default())
    );
    println!(
        "  own run:       p50 {}  p99 {}  max {}  (unparked NORMAL: p50 {}  p99 {})",
        ms(percentile(&own_run, 50.0)),
        ms(percentile(&own_run, 99.0)),
        ms(own_run.last().copied().unwrap_or_default()),
        ms(percentile(&unparked_run, 50.0)),
        ms(percentile(&unparked_run, 99.0))
    );
    println!(
        "  later NORMAL executions that ran inside one of its parks: total {}",
        overtaken.iter().sum::<usize>()
    );
    println!(
        "  later NORMAL executions that finished before it: p50 {}  p99 {}  max {}",
        percentile_count(&finished_first, 50.0),
        percentile_count(&finished_first, 99.0),
        finished_first.last().copied().unwrap_or_default()
    );
    println!(
        "HIGH queue wait: p50 {}  p99 {}",
        ms(percentile(&high_wait, 50.0)),
        ms(percentile(&high_wait, 99.0))
    );
}
