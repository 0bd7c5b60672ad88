//! The embedded event log: offsets per topic, idempotent emits, persistence.

use eyeflow_actors::ports::{CallErrorKind, EventSink};
use eyeflow_runtime::events::FjallEventLog;
use eyeflow_runtime::store::Durability;
use serde_json::json;

use crate::support::{open, temp_store};

#[test]
fn emits_are_logged_per_topic_and_deduplicated() {
    let (dir, store) = temp_store();
    let log = FjallEventLog::new(store, Durability::Sync);
    eyeflow_tests::wait(log.emit("alerts", "zone-1", &json!({"t": 31}), "x1/i1/1")).unwrap();
    eyeflow_tests::wait(log.emit("alerts", "zone-1", &json!({"t": 31}), "x1/i1/1")).unwrap();
    eyeflow_tests::wait(log.emit("alerts", "zone-2", &json!({"t": 35}), "x2/i1/1")).unwrap();
    eyeflow_tests::wait(log.emit("alerts-other", "k", &json!(null), "x3/i1/1")).unwrap();
    let events = log.read("alerts", 0, 10).unwrap();
    assert_eq!(events.len(), 2, "the second emit of x1/i1/1 is dropped");
    assert_eq!(events[0].offset, 0);
    assert_eq!(events[0].key, "zone-1");
    assert_eq!(events[0].payload, json!({"t": 31}));
    assert_eq!(events[0].idempotency_key, "x1/i1/1");
    assert_eq!(events[1].offset, 1);
    assert_eq!(log.read("alerts", 1, 10).unwrap().len(), 1);
    assert_eq!(log.read("alerts", 0, 1).unwrap().len(), 1);
    assert_eq!(log.read("alerts-other", 0, 10).unwrap().len(), 1);
    assert!(log.read("nothing", 0, 10).unwrap().is_empty());
    drop(log);

    let log = FjallEventLog::new(open(dir.path()), Durability::GroupCommit);
    eyeflow_tests::wait(log.emit("alerts", "zone-2", &json!({"t": 35}), "x2/i1/1")).unwrap();
    eyeflow_tests::wait(log.emit("alerts", "zone-3", &json!({"t": 40}), "x4/i1/1")).unwrap();
    let events = log.read("alerts", 0, 10).unwrap();
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [0, 1, 2], "dedupe and offsets survive a reopen");
    assert_eq!(events[2].key, "zone-3");
}

#[test]
fn an_empty_topic_is_refused() {
    let (_dir, store) = temp_store();
    let log = FjallEventLog::new(store, Durability::Buffered);
    let err = eyeflow_tests::wait(log.emit("", "k", &json!(1), "x/i/1")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput);
}
