//! `eyeflow node` with Kafka: a source topic consumed in a consumer group while the node is
//! killed (`kill -9`) mid-stream and restarted — no event lost, none executed twice — and
//! the audit chain published on `eyeflow.audit`.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use eyeflow_actors::routing::event_key;
use eyeflow_ir::pb::TriggerKind;
use eyeflow_runtime::journal::FjallJournal;
use eyeflow_runtime::store::{Durability, EmbeddedStore};
use eyeflow_tests::eventually;
use eyeflow_tests::node::binary;
use eyeflow_tests::servers::tansu::Tansu;
use serde_json::Value;

const EVENTS: u64 = 400;

const RULE: &str = r#"
id: alarm-count
version: 1.0.0
triggers:
  - kind: kafka
    source: plant-a.alarms
instructions:
  - id: seen
    op: EVAL
    expression: event.n + 1
    next: done
  - id: done
    op: RETURN
    expression: "{'n': event.n, 'next': seen}"
"#;

fn eyeflow(args: &[&str], cwd: &Path) -> String {
    eyeflow_tests::node::run(&binary(), args, cwd)
}

/// Starts the node; returns it and its API URL.
fn start(dir: &Path) -> (Child, String) {
    eyeflow_tests::node::start(&binary(), dir, "info")
}

/// A node process killed when the test ends, failed or not (a node left running would
/// hold the test's output open).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn counts(url: &str, token: &str) -> Value {
    let text = reqwest::blocking::Client::new()
        .get(format!("{url}/api/executions/summary"))
        .bearer_auth(token)
        .send()
        .and_then(|r| r.text())
        .expect("the node answers");
    serde_json::from_str(&text).expect("JSON counts")
}

#[test]
fn a_node_killed_mid_stream_loses_no_kafka_event_and_runs_none_twice() {
    let mut tansu = Tansu::start();
    tansu.create_topic("plant-a.alarms", 1);
    tansu.create_topic("eyeflow.audit", 1);
    tansu.create_topic("eyeflow.memory", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path();
    let key = SigningKey::from_bytes(&[21; 32]);
    eyeflow_ir::keys::write_keypair(&work.join("admin"), &key).expect("key");
    std::fs::create_dir(work.join("data")).expect("a new data directory");
    eyeflow(&["keys", "trust", "admin.pub", "--data-dir", "data"], work);
    std::fs::write(
        work.join("node.toml"),
        format!(
            "[node]\ndata_dir = \"data\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n[kafka]\nbootstrap = \"{}\"\nsource_topics = [\"plant-a.alarms\"]\nconsumer_group = \"eyeflow-test\"\nmessage_timeout_ms = 5000\ncommit_interval_ms = 200\n",
            tansu.bootstrap()
        ),
    )
    .expect("config");
    let admin = eyeflow(
        &["tokens", "issue", "--role", "admin", "--data-dir", "data"],
        work,
    );
    let options = eyeflow_compiler::CompileOptions {
        source_name: "alarm-count.yaml".to_owned(),
        compiled_by: "tests".to_owned(),
        compiled_at: 1_700_000_000,
    };
    let program = eyeflow_compiler::compile_and_sign(RULE, &options, &key).expect("compiles");

    let (node, url) = start(work);
    let mut node = Reaped(node);
    let status = reqwest::blocking::Client::new()
        .post(format!("{url}/api/programs"))
        .bearer_auth(&admin)
        .body(eyeflow_ir::encode(&program))
        .send()
        .expect("deploy")
        .status();
    assert!(status.is_success(), "deploy: {status}");
    tansu.produce("plant-a.alarms", EVENTS);

    // Kill it once some, not all, events ran.
    let finished = eventually(
        "a quarter of the events finished",
        Duration::from_secs(120),
        || {
            let finished = counts(&url, &admin)["finished"].as_u64().unwrap_or(0);
            (finished >= EVENTS / 4).then_some(finished)
        },
    );
    assert!(
        finished < EVENTS,
        "the node finished before it could be killed"
    );
    node.0.kill().expect("kill -9");
    node.0.wait().expect("reaped");

    // The test broker (tansu) never hands a dead member's partitions to a new member of
    // its group once the group has settled, so the restarted node joins a new group: it
    // reads the topic again from the start, and every event it already accepted must be
    // refused as a redelivery while the others run — none lost, none run twice.
    let config = std::fs::read_to_string(work.join("node.toml")).expect("config");
    std::fs::write(
        work.join("node.toml"),
        config.replace(
            "consumer_group = \"eyeflow-test\"",
            "consumer_group = \"eyeflow-test-2\"",
        ),
    )
    .expect("config");

    let (node, url) = start(work);
    let mut node = Reaped(node);
    eventually(
        "every event finished after the restart",
        Duration::from_secs(180),
        || {
            let now = counts(&url, &admin);
            (now["finished"].as_u64() == Some(EVENTS) && now["pending"].as_u64() == Some(0))
                .then_some(())
        },
    );
    // A sentinel behind whatever the topic still holds for this consumer: the topic again,
    // then one new event (`ev-EVENTS`), on its one partition. Once the sentinel has run,
    // everything before it has been read: every redelivery was refused or it would show.
    tansu.produce("plant-a.alarms", EVENTS + 1);
    eventually("the sentinel ran", Duration::from_secs(180), || {
        let now = counts(&url, &admin);
        (now["finished"].as_u64() == Some(EVENTS + 1) && now["pending"].as_u64() == Some(0))
            .then_some(())
    });
    let pid = node.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(node.0.wait().expect("exit").success(), "SIGTERM exits 0");

    let store = EmbeddedStore::open(&work.join("data")).expect("store");
    let journal = FjallJournal::open(store, Durability::Buffered).expect("journal");
    let counts = journal.counts().expect("counts");
    assert_eq!(
        counts.executions,
        EVENTS + 1,
        "one execution per event (the sentinel included), none twice: {counts:?}"
    );
    assert_eq!(counts.finished, EVENTS + 1, "{counts:?}");
    for n in 0..=EVENTS {
        let id = event_key(
            TriggerKind::Kafka,
            "plant-a.alarms",
            &format!("ev-{n}"),
            "alarm-count",
        );
        let execution = journal
            .execution_of_event(&id)
            .expect("journal")
            .unwrap_or_else(|| panic!("{id} lost"));
        let (_, _, outcome) = journal
            .execution(&execution)
            .expect("journal")
            .expect("exists");
        let value = serde_json::to_value(outcome).expect("outcome");
        assert_eq!(value["value"]["n"], n, "{id}: {value}");
    }
    drop(journal);
    let verified = eyeflow(&["audit", "verify", "--data-dir", "data"], work);
    assert!(verified.contains("verified"), "{verified}");
}
