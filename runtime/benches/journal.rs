//! Journal append cost: one ~200-byte step record per iteration, with one fsync per call
//! (`sync`, alone and with 8 threads), with group commit (8 threads sharing fsyncs), and
//! without fsync (`buffered`). Reports the time per step.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use eyeflow_actors::ports::{Journal, StepOutcome, StepRecord};
use eyeflow_runtime::journal::FjallJournal;
use eyeflow_runtime::store::{Durability, EmbeddedStore};

const THREADS: u64 = 8;

fn step(execution_id: &str, seq: u64) -> StepRecord {
    StepRecord {
        execution_id: execution_id.to_owned(),
        seq,
        instruction_id: "check-temperature".into(),
        attempt: 1,
        outcome: StepOutcome::Done {
            output: serde_json::json!({"temperature": 21.5, "unit": "celsius", "ok": true}),
        },
        fallback: None,
        started_ms: 1_700_000_000_000,
        finished_ms: 1_700_000_000_012,
    }
}

fn journal(durability: Durability) -> (tempfile::TempDir, FjallJournal) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    (dir, FjallJournal::open(store, durability).expect("journal"))
}

/// Appends `iters` steps split over `threads` threads; returns the elapsed time.
fn append(journal: &FjallJournal, seq: &AtomicU64, iters: u64, threads: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let share = iters / threads + u64::from(t < iters % threads);
            scope.spawn(move || {
                let execution_id = format!("x{t:016}");
                for _ in 0..share {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    eyeflow_tests::wait(journal.steps(
                        black_box(&[step(&execution_id, n)]),
                        &[],
                        true,
                    ))
                    .expect("step");
                }
            });
        }
    });
    start.elapsed()
}

fn steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_step");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(6));
    for (name, durability, threads) in [
        ("sync", Durability::Sync, 1),
        ("sync_8_threads", Durability::Sync, THREADS),
        ("group_commit_8_threads", Durability::GroupCommit, THREADS),
        ("buffered", Durability::Buffered, 1),
    ] {
        let (_dir, journal) = journal(durability);
        let seq = AtomicU64::new(0);
        group.bench_function(name, |b| {
            if threads == 1 {
                b.iter(|| {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    eyeflow_tests::wait(journal.steps(black_box(&[step("x0", n)]), &[], true))
                        .expect("step");
                });
            } else {
                b.iter_custom(|iters| append(&journal, &seq, iters, threads));
            }
        });
    }
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
