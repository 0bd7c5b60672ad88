//! Bulkheads on a real node: a program whose executions hang on a slow endpoint holds at
//! most its share of the slots (`workers` − 1), the rest of its events wait in its own lane,
//! and another program's events all run meanwhile.

use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir};
use eyeflow_tests::poison::{self, SlowEndpoint};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn a_program_hanging_on_a_slow_endpoint_leaves_the_other_programs_their_slots() {
    let slow = SlowEndpoint::start();
    let work = Workdir::new("");
    std::fs::write(
        work.path().join("node.toml"),
        "[node]\ndata_dir = \"data\"\nworkers = 4\nhttp_allow = [\"127.0.0.1\"]\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let (node, url) = work.start();
    let poison = poison::rule(
        slow.port,
        120_000,
        "    fallback: {strategy: value, value: '\"released\"'}\n",
    );
    work.deploy(&url, &poison);
    work.deploy(&url, PLAIN_RULE);

    let poisoned: Vec<String> = (0..6)
        .map(|n| {
            work.send(&url, "poison", &format!("p-{n}"), &json!({}))
                .expect("accepted")
        })
        .collect();
    // Three of the four slots hang on the endpoint; the other three executions wait in
    // the program's lane.
    eventually("the poison program holds its three slots", PATIENCE, || {
        (slow.connections() == 3).then_some(())
    });

    let healthy: Vec<(u32, String)> = (0..20)
        .map(|n| {
            let id = work
                .send(&url, "plain", &format!("h-{n}"), &json!({"a": n}))
                .expect("accepted");
            (n, id)
        })
        .collect();
    for (n, id) in &healthy {
        let view = eventually(
            &format!("healthy execution {id} finished"),
            PATIENCE,
            || {
                work.execution(&url, id)
                    .filter(|v| v["outcome"].is_object())
            },
        );
        assert_eq!(view["outcome"]["value"], json!(n + 1), "{view}");
    }
    // All the while the poison held three slots, and none of its executions ended.
    assert_eq!(slow.connections(), 3);
    for id in &poisoned {
        let view = work.execution(&url, id).expect("known");
        assert!(view["outcome"].is_null(), "{view}");
    }

    // Released, the poison's lane drains through its slots: every execution ends once.
    let mut released = 0;
    for id in &poisoned {
        let view = eventually(&format!("poison execution {id} finished"), PATIENCE, || {
            slow.release();
            work.execution(&url, id)
                .filter(|v| v["outcome"].is_object())
        });
        assert_eq!(view["outcome"]["value"], json!("released"), "{view}");
        released += 1;
    }
    assert_eq!(released, 6);
    let counts = work.counts(&url).expect("counts");
    assert_eq!(counts["executions"], 26, "{counts}");
    assert_eq!(counts["finished"], 26, "{counts}");
    work.stop(node);
}

/// A node dropped while a program's lane still holds executions (its slots hanging on an
/// endpoint that never answers) stops: the lane's executions are dropped, not handed one
/// by one to the stopping runtime (which deadlocked: a task dropped as it was spawned ended
/// its lane turn under the scheduler's lock), and they stay pending in the journal.
#[test]
fn a_node_dropped_with_executions_waiting_in_a_lane_stops_and_keeps_them_pending() {
    let slow = SlowEndpoint::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = eyeflow_runtime::node::NodeConfig::embedded(dir.path().join("data"));
    config.workers = 4;
    config.http_allow = Some(vec!["127.0.0.1".to_owned()]);
    let node = eyeflow_runtime::node::Node::start(config).expect("node");
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    node.trust(&key.verifying_key()).expect("trust");
    let rule = poison::rule(slow.port, 120_000, "");
    let options = eyeflow_compiler::CompileOptions {
        source_name: "poison.yaml".into(),
        compiled_by: "test".into(),
        compiled_at: 0,
    };
    let program = eyeflow_compiler::compile_and_sign(&rule, &options, &key).expect("compile");
    node.deploy(&eyeflow_ir::encode(&program)).expect("deploy");
    for n in 0..10 {
        node.submit("poison", &format!("p-{n}"), "test", json!({}))
            .expect("accepted");
    }
    // Three run (hanging), seven wait in the lane.
    eventually("the poison program holds its three slots", PATIENCE, || {
        (slow.connections() == 3).then_some(())
    });
    let (dropped, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(node);
        let _ = dropped.send(());
    });
    eventually("the dropped node stops", PATIENCE, || {
        stopped.try_recv().ok()
    });
    slow.release();
    // Reopened, the store still holds the ten executions, none finished.
    let store =
        eyeflow_runtime::store::EmbeddedStore::open(&dir.path().join("data")).expect("store");
    let journal = eyeflow_runtime::journal::FjallJournal::open(
        store,
        eyeflow_runtime::store::Durability::Buffered,
    )
    .expect("journal");
    let counts = journal.counts().expect("counts");
    assert_eq!(counts.executions, 10, "{counts:?}");
    assert_eq!(counts.finished, 0, "{counts:?}");
}

/// Executions wait on the journal's fsync holding no slot, and an execution holding a
/// resource's permit keeps its slot through that wait: on a node with two slots (one per
/// program) and group commit, twelve events of a program whose one action holds the
/// resource `valve/serial` all run to their action's value. Had the holder given its slot
/// and turn up for its intent's fsync, the next execution would take them and wait for the
/// permit, the holder could not come back, and executions would end `resource_timeout`.
#[test]
fn executions_holding_a_resource_keep_their_slot_while_the_journal_syncs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = eyeflow_runtime::node::NodeConfig::embedded(dir.path().join("data"));
    config.workers = 2;
    config.durability = eyeflow_runtime::store::Durability::GroupCommit;
    let node = eyeflow_runtime::node::Node::start(config).expect("node");
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    node.trust(&key.verifying_key()).expect("trust");
    node.plugins()
        .install(&eyeflow_tests::node::bundled_package("valve-sim", &key))
        .expect("install");
    let rule = r#"
id: serial
version: 1.0.0
requires: {valve-sim: ^1.0}
max_wait_ms: 3000
triggers:
  - {kind: webhook, source: serial}
instructions:
  - {id: aim, op: EVAL, expression: "event.n % 2 == 0 ? 100 : 0", next: act}
  - {id: act, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: "'V-9'", position: aim}, resource_key: valve/serial, next: done}
  - {id: done, op: RETURN, expression: "act.position"}
"#;
    let options = eyeflow_compiler::CompileOptions {
        source_name: "serial.yaml".into(),
        compiled_by: "test".into(),
        compiled_at: 0,
    };
    let program = eyeflow_compiler::compile_and_sign(rule, &options, &key).expect("compile");
    node.deploy(&eyeflow_ir::encode(&program)).expect("deploy");
    let ids: Vec<(u32, String)> = (0..12)
        .map(|n| {
            let accepted = node
                .submit("serial", &format!("s-{n}"), "test", json!({"n": n}))
                .expect("accepted");
            let eyeflow_actors::ports::Accepted::New { execution_id } = accepted else {
                panic!("a new event: {accepted:?}");
            };
            (n, execution_id)
        })
        .collect();
    node.wait_idle();
    for (n, id) in &ids {
        let (_, steps, outcome) = node
            .journal()
            .execution(id)
            .expect("journal")
            .expect("known");
        let expected = json!(if n % 2 == 0 { 100 } else { 0 });
        assert!(
            matches!(
                &outcome,
                Some(eyeflow_actors::ports::ExecutionOutcome::Completed { value }) if *value == expected
            ),
            "{id}: {outcome:?} {steps:?}"
        );
    }
}
