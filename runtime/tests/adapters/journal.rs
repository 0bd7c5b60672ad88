//! The fjall journal: dedupe, steps (with their audit entries, in the same writes),
//! decisions, pending executions, durability across a reopen and across an abort, and group
//! commit under concurrency.

use std::process::Command;
use std::sync::Arc;

use eyeflow_actors::ports::{
    Accepted, AuditEntry, EventRecord, ExecutionOutcome, Journal, StepOutcome, StepRecord,
};
use eyeflow_runtime::audit::{AuditConfig, FjallAudit};
use eyeflow_runtime::journal::{
    ExecutionCursor, ExecutionFilter, ExecutionStatus, FjallJournal, JournalCounts,
};
use eyeflow_runtime::store::Durability;
use serde_json::json;

use crate::support::{open, temp_store};

fn event(id: &str) -> EventRecord {
    EventRecord {
        event_id: id.into(),
        source: "webhook".into(),
        program_id: "cooling".into(),
        program_version: "1.0.0".into(),
        payload: json!({"temperature": 31}),
        priority: 128,
        accepted_at_ms: 1_700_000_000_000,
    }
}

fn step(execution_id: &str, seq: u64) -> StepRecord {
    StepRecord {
        execution_id: execution_id.into(),
        seq,
        instruction_id: format!("i{seq}"),
        attempt: 1,
        outcome: StepOutcome::Done {
            output: json!({"seq": seq}),
        },
        fallback: None,
        started_ms: 1,
        finished_ms: 2,
    }
}

fn new_id(accepted: Accepted) -> String {
    match accepted {
        Accepted::New { execution_id } => execution_id,
        Accepted::Duplicate { execution_id } => panic!("unexpected duplicate of {execution_id}"),
    }
}

#[test]
fn accept_step_finish_and_query() {
    let (_dir, store) = temp_store();
    let journal = FjallJournal::open(store, Durability::Sync).unwrap();
    let a = new_id(journal.accept(&event("e1")).unwrap());
    let b = new_id(journal.accept(&event("e2")).unwrap());
    assert_ne!(a, b);
    assert_eq!(
        journal.accept(&event("e1")).unwrap(),
        Accepted::Duplicate {
            execution_id: a.clone()
        }
    );
    // Steps arrive out of key order on purpose: seq 10 must sort after seq 9.
    for seq in [0, 1, 10] {
        eyeflow_tests::wait(journal.steps(&[step(&a, seq)], &[], true)).unwrap();
    }
    eyeflow_tests::wait(journal.steps(&[step(&a, 2), step(&a, 9)], &[], false)).unwrap();
    // The end carries the execution's last steps.
    eyeflow_tests::wait(journal.finish(
        &b,
        &[step(&b, 0), step(&b, 1)],
        &[],
        &ExecutionOutcome::Completed { value: json!(1) },
    ))
    .unwrap();

    let (ev, steps, outcome) = journal.execution(&a).unwrap().expect("execution a");
    assert_eq!(ev, event("e1"));
    let seqs: Vec<u64> = steps.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 9, 10]);
    assert_eq!(outcome, None);
    let (_, steps, outcome) = journal.execution(&b).unwrap().expect("execution b");
    assert_eq!(steps, [step(&b, 0), step(&b, 1)]);
    assert_eq!(
        outcome,
        Some(ExecutionOutcome::Completed { value: json!(1) })
    );
    assert!(journal.execution("x-unknown").unwrap().is_none());
    assert_eq!(journal.execution_of_event("e2").unwrap(), Some(b.clone()));

    let pending = journal.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].execution_id, a);
    assert_eq!(pending[0].steps.len(), 5);
    assert_eq!(
        journal.counts().unwrap(),
        JournalCounts {
            executions: 2,
            pending: 1,
            finished: 1,
            steps: 7
        }
    );
}

/// Ten executions of two programs, accepted at 1000, 1001, ...: the odd ones of `other`
/// completed, the one at 1004 waiting for an approval, the rest running.
fn listed_journal() -> (tempfile::TempDir, FjallJournal, Vec<String>) {
    let (dir, store) = temp_store();
    let journal = FjallJournal::open(store, Durability::Buffered).expect("journal");
    let mut ids = Vec::new();
    for i in 0..10u64 {
        let mut event = event(&format!("e{i}"));
        event.accepted_at_ms = 1000 + i;
        if i % 2 == 1 {
            event.program_id = "other".into();
        }
        let id = new_id(journal.accept(&event).expect("accepted"));
        if i % 2 == 1 {
            let mut last = step(&id, 0);
            last.finished_ms = 5000 + i;
            eyeflow_tests::wait(journal.finish(
                &id,
                &[last],
                &[],
                &ExecutionOutcome::Completed { value: json!(i) },
            ))
            .expect("finished");
        }
        if i == 4 {
            let mut paused = step(&id, 0);
            paused.outcome = StepOutcome::AwaitingApproval;
            eyeflow_tests::wait(journal.steps(&[paused], &[], true)).expect("paused");
        }
        ids.push(id);
    }
    (dir, journal, ids)
}

#[test]
fn listing_is_newest_first_and_filters() {
    let (_dir, journal, ids) = listed_journal();
    let all = journal
        .list_executions(&ExecutionFilter::default(), None, 100, 100)
        .unwrap();
    assert_eq!(all.next_cursor, None);
    let listed: Vec<&str> = all.executions.iter().map(|e| e.id.as_str()).collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    let first = all.executions.last().unwrap();
    assert_eq!(
        (
            first.program.as_str(),
            first.version.as_str(),
            first.source.as_str()
        ),
        ("cooling", "1.0.0", "webhook")
    );
    assert_eq!((first.accepted_ms, first.finished_ms), (1000, None));
    assert_eq!(all.executions[0].finished_ms, Some(5009));
    assert_eq!(all.executions[0].status, ExecutionStatus::Completed);
    assert_eq!(all.executions[5].status, ExecutionStatus::AwaitingApproval);

    let list = |filter: ExecutionFilter| -> Vec<u64> {
        journal
            .list_executions(&filter, None, 100, 100)
            .unwrap()
            .executions
            .iter()
            .map(|e| e.accepted_ms - 1000)
            .collect()
    };
    let of = |program: &str| ExecutionFilter {
        program: Some(program.into()),
        ..ExecutionFilter::default()
    };
    assert_eq!(list(of("other")), [9, 7, 5, 3, 1]);
    assert_eq!(list(of("nothing")), Vec::<u64>::new());
    let status = |status| ExecutionFilter {
        status: Some(status),
        ..ExecutionFilter::default()
    };
    assert_eq!(list(status(ExecutionStatus::Running)), [8, 6, 2, 0]);
    assert_eq!(list(status(ExecutionStatus::AwaitingApproval)), [4]);
    assert_eq!(list(status(ExecutionStatus::Failed)), Vec::<u64>::new());
    let since = ExecutionFilter {
        program: Some("cooling".into()),
        since_ms: Some(1004),
        ..ExecutionFilter::default()
    };
    assert_eq!(list(since), [8, 6, 4]);
}

#[test]
fn pages_and_a_bounded_scan_see_every_execution_once() {
    let (_dir, journal, ids) = listed_journal();
    let filter = ExecutionFilter {
        program: Some("other".into()),
        ..ExecutionFilter::default()
    };
    // A budget of 3 examined executions per page: some pages come back short or empty,
    // with a cursor to continue from.
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<ExecutionCursor>, 0);
    loop {
        let page = journal
            .list_executions(&filter, cursor.as_ref(), 2, 3)
            .unwrap();
        assert!(page.executions.len() <= 2);
        seen.extend(page.executions.into_iter().map(|e| e.id));
        pages += 1;
        assert!(pages <= 10, "the listing does not end");
        match page.next_cursor {
            Some(next) => {
                // The cursor reads back as the API hands it out.
                cursor = Some(ExecutionCursor::parse(next.as_str()).expect("cursor parses"));
            }
            None => break,
        }
    }
    let expected: Vec<String> = ids.iter().rev().step_by(2).cloned().collect();
    assert_eq!(seen, expected);
    for bad in [
        "",
        "x12",
        "y0000000000000001",
        "x000000000000000a",
        "x00000000000000001",
        "x+000000000000001",
    ] {
        assert_eq!(ExecutionCursor::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn decisions_are_recorded_per_instruction() {
    let (dir, store) = temp_store();
    let journal = FjallJournal::open(store, Durability::Sync).unwrap();
    let id = new_id(journal.accept(&event("e1")).unwrap());
    assert_eq!(journal.decision(&id, "open-valve").unwrap(), None);
    journal.decide(&id, "open-valve", true).unwrap();
    journal.decide(&id, "loop/2/close", false).unwrap();
    drop(journal);
    let journal = FjallJournal::open(open(dir.path()), Durability::Sync).unwrap();
    assert_eq!(journal.decision(&id, "open-valve").unwrap(), Some(true));
    assert_eq!(journal.decision(&id, "loop/2/close").unwrap(), Some(false));
    assert_eq!(journal.decision(&id, "other").unwrap(), None);
}

#[test]
fn reopen_keeps_events_steps_dedupe_and_pending_order() {
    let (dir, store) = temp_store();
    let journal = FjallJournal::open(store, Durability::Sync).unwrap();
    let ids: Vec<String> = (0..12)
        .map(|i| new_id(journal.accept(&event(&format!("e{i}"))).unwrap()))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        for seq in 0..u64::try_from(i % 3).unwrap() {
            eyeflow_tests::wait(journal.steps(&[step(id, seq)], &[], true)).unwrap();
        }
    }
    eyeflow_tests::wait(journal.finish(
        &ids[3],
        &[],
        &[],
        &ExecutionOutcome::Failed {
            class: "timeout".into(),
            message: "valve".into(),
        },
    ))
    .unwrap();
    drop(journal);

    let journal = FjallJournal::open(open(dir.path()), Durability::Sync).unwrap();
    assert_eq!(
        journal.accept(&event("e5")).unwrap(),
        Accepted::Duplicate {
            execution_id: ids[5].clone()
        }
    );
    let pending = journal.pending().unwrap();
    let pending_ids: Vec<&str> = pending.iter().map(|p| p.execution_id.as_str()).collect();
    let expected: Vec<&str> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(pending_ids, expected, "oldest first, finished excluded");
    for p in &pending {
        let i = ids.iter().position(|id| *id == p.execution_id).unwrap();
        assert_eq!(p.steps.len(), i % 3);
        assert_eq!(p.event.event_id, format!("e{i}"));
    }
    // New acceptances after a reopen never reuse an id.
    let next = new_id(journal.accept(&event("e-new")).unwrap());
    assert!(!ids.contains(&next));
    assert_eq!(
        journal.pending().unwrap().last().unwrap().execution_id,
        next
    );
}

#[test]
fn concurrent_duplicates_start_one_execution() {
    let (_dir, store) = temp_store();
    let journal = Arc::new(FjallJournal::open(store, Durability::GroupCommit).unwrap());
    let results: Vec<Accepted> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| journal.accept(&event("same")).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let new: Vec<_> = results
        .iter()
        .filter(|a| matches!(a, Accepted::New { .. }))
        .collect();
    assert_eq!(new.len(), 1, "{results:?}");
    assert_eq!(journal.counts().unwrap().executions, 1);
}

#[test]
fn group_commit_keeps_every_step_of_8_threads() {
    const THREADS: u64 = 8;
    const STEPS: u64 = 200;
    let (dir, store) = temp_store();
    let journal = FjallJournal::open(store, Durability::GroupCommit).unwrap();
    let ids: Vec<String> = (0..THREADS)
        .map(|t| new_id(journal.accept(&event(&format!("g{t}"))).unwrap()))
        .collect();
    std::thread::scope(|scope| {
        for id in &ids {
            let journal = &journal;
            scope.spawn(move || {
                for seq in 0..STEPS {
                    eyeflow_tests::wait(journal.steps(&[step(id, seq)], &[], true)).unwrap();
                }
            });
        }
    });
    drop(journal);
    let journal = FjallJournal::open(open(dir.path()), Durability::GroupCommit).unwrap();
    let pending = journal.pending().unwrap();
    assert_eq!(pending.len(), 8);
    for p in pending {
        let seqs: Vec<u64> = p.steps.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, (0..STEPS).collect::<Vec<_>>());
    }
    assert_eq!(journal.counts().unwrap().steps, THREADS * STEPS);
}

/// Environment variable telling [`abort_child`] where to write before aborting.
const CHILD_DIR: &str = "EYEFLOW_JOURNAL_ABORT_DIR";

/// Child half of [`nothing_acknowledged_is_lost_on_abort`]: a no-op unless spawned by it.
#[test]
fn abort_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let store = open(std::path::Path::new(&dir));
    let journal = FjallJournal::open(store, Durability::GroupCommit).unwrap();
    let id = new_id(journal.accept(&event("crash")).unwrap());
    for seq in 0..5 {
        eyeflow_tests::wait(journal.steps(&[step(&id, seq)], &[], true)).unwrap();
    }
    // No destructor runs: fjall gets no chance to flush at drop.
    std::process::abort();
}

#[test]
fn nothing_acknowledged_is_lost_on_abort() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["journal::abort_child", "--exact", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap()
        .status;
    assert!(!status.success(), "the child must abort");
    let journal = FjallJournal::open(open(dir.path()), Durability::Sync).unwrap();
    let pending = journal.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event.event_id, "crash");
    assert_eq!(pending[0].steps.len(), 5);
    assert!(matches!(
        journal.accept(&event("crash")).unwrap(),
        Accepted::Duplicate { .. }
    ));
}

fn audit_entry(execution_id: &str, seq: u64) -> AuditEntry {
    AuditEntry {
        node_id: "node-1".into(),
        execution_id: execution_id.into(),
        program_id: "cooling".into(),
        program_version: "1.0.0".into(),
        program_sha256: None,
        instruction_id: format!("i{seq}"),
        opcode: "EVAL".into(),
        input_digest: String::new(),
        output_digest: String::new(),
        outcome: "done".into(),
        fallback: None,
        started_ms: 1,
        finished_ms: 2,
    }
}

#[test]
fn steps_and_their_audit_entries_are_written_together_and_survive_a_reopen_together() {
    let (dir, store) = temp_store();
    let audit = Arc::new(FjallAudit::open(store.clone(), AuditConfig::default()).unwrap());
    let journal = FjallJournal::open(store, Durability::Sync)
        .unwrap()
        .with_audit(audit.clone());
    let a = new_id(journal.accept(&event("e1")).unwrap());
    eyeflow_tests::wait(journal.steps(
        &[step(&a, 0), step(&a, 1)],
        &[audit_entry(&a, 0), audit_entry(&a, 1)],
        true,
    ))
    .unwrap();
    eyeflow_tests::wait(journal.finish(
        &a,
        &[step(&a, 2)],
        &[audit_entry(&a, 2)],
        &ExecutionOutcome::Completed { value: json!(null) },
    ))
    .unwrap();
    assert_eq!(audit.head().0, 3);
    drop((journal, audit));

    let store = open(dir.path());
    let audit = FjallAudit::open(store.clone(), AuditConfig::default()).unwrap();
    let journal = FjallJournal::open(store, Durability::Sync).unwrap();
    let (_, steps, _) = journal.execution(&a).unwrap().expect("journaled");
    let audited: Vec<String> = audit
        .of_execution(&a)
        .unwrap()
        .into_iter()
        .map(|e| e.entry.instruction_id)
        .collect();
    let journaled: Vec<String> = steps.into_iter().map(|s| s.instruction_id).collect();
    assert_eq!(audited, journaled);

    // A journal without an audit chain refuses entries instead of dropping them.
    let refused = eyeflow_tests::wait(journal.steps(&[step(&a, 3)], &[audit_entry(&a, 3)], true))
        .unwrap_err();
    assert!(
        refused.reason.contains("without an audit chain"),
        "{refused}"
    );
}

/// A value nested `2 × pairs` levels deep (an object holding an array, `pairs` times).
fn nested(pairs: usize) -> serde_json::Value {
    let mut value = json!("leaf");
    for _ in 0..pairs {
        value = json!({ "k": [value] });
    }
    value
}

#[test]
fn values_at_the_limits_read_back_and_deeper_records_are_refused_at_write_time() {
    use eyeflow_actors::exec::bounds;
    let (dir, store) = temp_store();
    let journal = FjallJournal::open(store, Durability::Sync).unwrap();
    let id = new_id(journal.accept(&event("deep")).unwrap());
    // A result at the executor's depth limit and one near its size limit.
    let deep = nested(bounds::MAX_DEPTH / 2);
    assert_eq!(bounds::check(&deep, "x"), None);
    let big = json!({ "blob": "x".repeat(bounds::MAX_BYTES - 100) });
    assert_eq!(bounds::check(&big, "x"), None);
    let mut at_limit = [step(&id, 0), step(&id, 1)];
    at_limit[0].outcome = StepOutcome::Done {
        output: deep.clone(),
    };
    at_limit[1].outcome = StepOutcome::Done {
        output: big.clone(),
    };
    eyeflow_tests::wait(journal.steps(&at_limit, &[], true)).unwrap();
    drop(journal);
    let journal = FjallJournal::open(open(dir.path()), Durability::Sync).unwrap();
    let pending = journal.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].steps, at_limit.to_vec(), "read back as written");
    // Deeper than the reader could take: refused when written, naming why.
    let mut too_deep = step(&id, 2);
    too_deep.outcome = StepOutcome::Done { output: nested(70) };
    let refused = eyeflow_tests::wait(journal.steps(&[too_deep], &[], true)).unwrap_err();
    assert!(
        refused.reason.contains("could not be read back"),
        "{refused}"
    );
    assert_eq!(journal.pending().unwrap()[0].steps.len(), 2);
}

#[test]
fn an_open_execution_with_an_unreadable_record_is_quarantined_and_failed_not_fatal() {
    use eyeflow_runtime::store::{Space, Write};
    let (dir, store) = temp_store();
    let journal = FjallJournal::open(store.clone(), Durability::Sync).unwrap();
    let good = new_id(journal.accept(&event("good")).unwrap());
    let bad = new_id(journal.accept(&event("bad")).unwrap());
    eyeflow_tests::wait(journal.steps(&[step(&good, 0), step(&bad, 0)], &[], true)).unwrap();
    // A record written by a faulty version (or damaged on disk): not JSON any more.
    let key = format!("{bad}/{:020}", 1);
    store
        .commit(
            [Write::Put(
                Space::JournalSteps,
                key.clone().into_bytes(),
                b"{\"seq\": [[[".to_vec(),
            )],
            Durability::Sync,
        )
        .unwrap();
    drop((journal, store));

    let store = open(dir.path());
    let journal = FjallJournal::open(store.clone(), Durability::Sync).unwrap();
    let pending = journal.pending().unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| p.execution_id.as_str())
            .collect::<Vec<_>>(),
        [good.as_str()],
        "the readable execution resumes; the other does not"
    );
    let (_, steps, outcome) = journal.execution(&bad).unwrap().expect("still shown");
    assert_eq!(steps.len(), 1, "its readable step is kept");
    match outcome {
        Some(ExecutionOutcome::Failed { class, message }) => {
            assert_eq!(class, "internal");
            assert!(message.contains(&key), "{message}");
        }
        other => panic!("not failed: {other:?}"),
    }
    let kept = store
        .get(
            Space::JournalQuarantine,
            format!("journal-steps/{key}").as_bytes(),
        )
        .unwrap();
    assert_eq!(kept.as_deref(), Some(&b"{\"seq\": [[["[..]));
    // And a second reopen finds nothing left to quarantine.
    assert_eq!(journal.pending().unwrap().len(), 1);
}
