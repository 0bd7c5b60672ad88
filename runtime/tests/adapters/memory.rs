//! The `node` (in-process TTL cache) and `cluster` (fjall log) memory scopes.

use std::time::Duration;

use eyeflow_actors::ports::{ClusterMemory, NodeMemory};
use eyeflow_runtime::memory::{FjallClusterMemory, InProcessNodeMemory};
use eyeflow_runtime::store::Durability;
use serde_json::json;

use crate::support::{open, temp_store};

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn node_memory_expires_entries() {
    let memory = InProcessNodeMemory::default();
    eyeflow_tests::wait(memory.set("short", &json!(1), Duration::from_millis(50))).unwrap();
    eyeflow_tests::wait(memory.set("long", &json!({"a": [1, 2]}), HOUR)).unwrap();
    assert_eq!(
        eyeflow_tests::wait(memory.get("short")).unwrap(),
        Some(json!(1))
    );
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(eyeflow_tests::wait(memory.get("short")).unwrap(), None);
    assert_eq!(
        eyeflow_tests::wait(memory.get("long")).unwrap(),
        Some(json!({"a": [1, 2]}))
    );
    assert_eq!(eyeflow_tests::wait(memory.get("never-set")).unwrap(), None);
    // Overwriting replaces value and TTL; a zero TTL removes.
    eyeflow_tests::wait(memory.set("long", &json!(2), HOUR)).unwrap();
    assert_eq!(
        eyeflow_tests::wait(memory.get("long")).unwrap(),
        Some(json!(2))
    );
    eyeflow_tests::wait(memory.set("long", &json!(3), Duration::ZERO)).unwrap();
    assert_eq!(eyeflow_tests::wait(memory.get("long")).unwrap(), None);
    // A TTL too large for the clock does not panic.
    eyeflow_tests::wait(memory.set("forever", &json!(4), Duration::MAX)).unwrap();
    assert_eq!(
        eyeflow_tests::wait(memory.get("forever")).unwrap(),
        Some(json!(4))
    );
}

#[test]
fn node_memory_evicts_expired_then_soonest_to_expire() {
    let memory = InProcessNodeMemory::new(3);
    eyeflow_tests::wait(memory.set("a", &json!("a"), HOUR * 3)).unwrap();
    eyeflow_tests::wait(memory.set("b", &json!("b"), HOUR)).unwrap();
    eyeflow_tests::wait(memory.set("c", &json!("c"), HOUR * 2)).unwrap();
    eyeflow_tests::wait(memory.set("d", &json!("d"), HOUR * 4)).unwrap();
    assert_eq!(memory.len(), 3);
    assert_eq!(
        eyeflow_tests::wait(memory.get("b")).unwrap(),
        None,
        "b expired soonest"
    );
    for key in ["a", "c", "d"] {
        assert!(
            eyeflow_tests::wait(memory.get(key)).unwrap().is_some(),
            "{key}"
        );
    }
    // An expired entry goes before a live one that would expire soonest.
    eyeflow_tests::wait(memory.set("e", &json!("e"), Duration::from_millis(10))).unwrap();
    assert_eq!(
        eyeflow_tests::wait(memory.get("c")).unwrap(),
        None,
        "c evicted for e"
    );
    std::thread::sleep(Duration::from_millis(30));
    eyeflow_tests::wait(memory.set("f", &json!("f"), HOUR)).unwrap();
    for key in ["a", "d", "f"] {
        assert!(
            eyeflow_tests::wait(memory.get(key)).unwrap().is_some(),
            "{key}"
        );
    }
    assert_eq!(memory.len(), 3);
}

#[test]
fn cluster_memory_keeps_latest_and_history_across_reopen() {
    let (dir, store) = temp_store();
    let memory = FjallClusterMemory::new(store, Durability::Sync);
    assert_eq!(eyeflow_tests::wait(memory.get("zone/1")).unwrap(), None);
    eyeflow_tests::wait(memory.put("zone/1", &json!({"setpoint": 20}))).unwrap();
    eyeflow_tests::wait(memory.put("zone/1", &json!({"setpoint": 22}))).unwrap();
    eyeflow_tests::wait(memory.put("zone/1/sensor", &json!("other key"))).unwrap();
    eyeflow_tests::wait(memory.put("zone", &json!(0))).unwrap();
    drop(memory);

    let memory = FjallClusterMemory::new(open(dir.path()), Durability::GroupCommit);
    assert_eq!(
        eyeflow_tests::wait(memory.get("zone/1")).unwrap(),
        Some(json!({"setpoint": 22}))
    );
    eyeflow_tests::wait(memory.put("zone/1", &json!({"setpoint": 19}))).unwrap();
    let history = memory.history("zone/1").unwrap();
    assert_eq!(
        history,
        [
            (0, json!({"setpoint": 20})),
            (1, json!({"setpoint": 22})),
            (2, json!({"setpoint": 19}))
        ]
    );
    assert_eq!(memory.history("zone").unwrap(), [(0, json!(0))]);
    assert_eq!(
        eyeflow_tests::wait(memory.get("zone/1/sensor")).unwrap(),
        Some(json!("other key"))
    );
}
