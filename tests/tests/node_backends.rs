//! A node with its real backends and sources: Redis as the node memory scope through an
//! outage, MQTT topics with wildcards as an event source, timers, and a start refused when
//! a configured backend is unreachable.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use eyeflow_actors::ports::ExecutionOutcome;
use eyeflow_actors::routing::event_key;
use eyeflow_ir::pb::TriggerKind;
use eyeflow_runtime::backends::redis::RedisConfig;
use eyeflow_runtime::backends::vault::{VaultAuth, VaultConfig};
use eyeflow_runtime::config::FileConfig;
use eyeflow_runtime::node::{Node, NodeConfig};
use eyeflow_runtime::sources::Sources;
use eyeflow_runtime::sources::mqtt::MqttSection;
use eyeflow_runtime::store::Durability;
use eyeflow_tests::eventually;
use eyeflow_tests::servers::free_port;
use eyeflow_tests::servers::mosquitto::Mosquitto;
use eyeflow_tests::servers::redis::RedisServer;
use serde_json::{Value, json};

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::embedded(dir);
    config.durability = Durability::Buffered;
    config
}

fn start(config: NodeConfig) -> Node {
    let node = Node::start(config).expect("node starts");
    node.trust(&key().verifying_key()).expect("trust");
    node
}

fn deploy(node: &Node, rule: &str) {
    let options = eyeflow_compiler::CompileOptions {
        source_name: "rule.yaml".to_owned(),
        compiled_by: "tests".to_owned(),
        compiled_at: 1_700_000_000,
    };
    let program = eyeflow_compiler::compile_and_sign(rule, &options, &key()).expect("compiles");
    node.deploy(&eyeflow_ir::encode(&program)).expect("deploys");
}

/// Waits until the execution that `event_id` started has finished; its outcome.
fn finished(node: &Node, event_id: &str) -> ExecutionOutcome {
    eventually(
        &format!("{event_id} finished"),
        Duration::from_secs(20),
        || {
            let execution = node
                .journal()
                .execution_of_event(event_id)
                .expect("journal")?;
            node.journal()
                .execution(&execution)
                .expect("journal")
                .and_then(|(_, _, outcome)| outcome)
        },
    )
}

fn returned(outcome: &ExecutionOutcome) -> &Value {
    match outcome {
        ExecutionOutcome::Completed { value } => value,
        other => panic!("not completed: {other:?}"),
    }
}

const CACHE_RULE: &str = r#"
id: cache-user
version: 1.0.0
triggers:
  - kind: manual
instructions:
  - id: remember
    op: STORE
    scope: node
    key: last-reading
    ttl_seconds: 60
    expression: event.n
    fallback: {strategy: skip}
    next: recall
  - id: recall
    op: LOAD
    scope: node
    key: last-reading
    default: 'null'
    fallback: {strategy: value, value: '"cache-down"'}
    next: done
  - id: done
    op: RETURN
    expression: "{'recall': recall}"
"#;

#[test]
fn redis_outage_fails_into_fallbacks_and_the_node_recovers() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(dir.path());
    config.backends.redis = Some(RedisConfig::new(redis.url()));
    let node = start(config);
    deploy(&node, CACHE_RULE);

    node.submit("cache-user", "up-1", "test", json!({"n": 1}))
        .expect("accepted");
    assert_eq!(returned(&finished(&node, "up-1"))["recall"], 1);
    assert_eq!(node.backend_health(), vec![("redis", true)]);

    redis.stop();
    for n in 0..3 {
        let id = format!("down-{n}");
        node.submit("cache-user", &id, "test", json!({"n": 10 + n}))
            .expect("accepted while Redis is down");
        assert_eq!(
            returned(&finished(&node, &id))["recall"],
            "cache-down",
            "{id}"
        );
    }
    assert_eq!(node.backend_health(), vec![("redis", false)]);
    let audit = node.audit().entries(0, 1000).expect("audit");
    assert!(
        audit.iter().any(|e| e.entry.instruction_id == "recall"
            && e.entry.fallback.as_deref() == Some("fallback_value")),
        "the fallback is audited: {:?}",
        audit
            .iter()
            .map(|e| (&e.entry.instruction_id, &e.entry.fallback))
            .collect::<Vec<_>>()
    );

    redis.restart();
    let mut n = 100;
    eventually("the node memory recovered", Duration::from_secs(15), || {
        n += 1;
        let id = format!("back-{n}");
        node.submit("cache-user", &id, "test", json!({"n": n}))
            .expect("accepted");
        (returned(&finished(&node, &id))["recall"] == n).then_some(())
    });
    assert_eq!(node.backend_health(), vec![("redis", true)]);
    node.shutdown().expect("shutdown");
}

#[test]
fn an_unreachable_backend_fails_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dead = format!("redis://127.0.0.1:{}/", free_port());
    let mut with_redis = config(dir.path());
    with_redis.backends.redis = Some(RedisConfig::new(dead.clone()));
    let err = Node::start(with_redis).err().expect("refused").to_string();
    assert!(err.starts_with("redis: ") && err.contains(&dead), "{err}");

    let mut with_vault = config(dir.path());
    let address = format!("http://127.0.0.1:{}", free_port());
    with_vault.backends.vault = Some(VaultConfig {
        address: address.clone(),
        mount: "secret".to_owned(),
        prefix: "eyeflow/".to_owned(),
        auth: VaultAuth::Token {
            token_secret_env: "PATH".to_owned(),
        },
        cache_ttl_ms: 1000,
        timeout_ms: 500,
    });
    let err = Node::start(with_vault).err().expect("refused").to_string();
    assert!(err.starts_with("vault") && err.contains(&address), "{err}");
}

const MQTT_RULE: &str = r#"
id: pressure-watch
version: 1.0.0
triggers:
  - kind: mqtt
    source: plant-a/+/pressure
    filter: event.value > 8.0
instructions:
  - id: done
    op: RETURN
    expression: "{'value': event.value}"
"#;

fn publish(client: &rumqttc::Client, topic: &str, payload: &Value) {
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_string())
        .expect("publish");
}

#[test]
fn mqtt_topics_with_wildcards_trigger_programs_once_per_event_id() {
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(config(dir.path()));
    deploy(&node, MQTT_RULE);
    let mut file = FileConfig::default();
    file.sources.mqtt = Some(MqttSection {
        host: "127.0.0.1".to_owned(),
        port: mosquitto.port(),
        client_id: None,
    });
    let sources = Sources::start(&node, &file.sources, &file.backends).expect("sources start");
    // The same id on another topic is another event: each source keys its own ids.
    let key = |topic: &str, id: &str| event_key(TriggerKind::Mqtt, topic, id, "pressure-watch");
    eventually("the MQTT source connected", Duration::from_secs(10), || {
        (node.backend_health() == vec![("mqtt", true)]).then_some(())
    });
    let mut options = rumqttc::MqttOptions::new("publisher", "127.0.0.1", mosquitto.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    std::thread::spawn(move || for _ in connection.iter() {});

    // The subscription is made shortly after the deploy: retry the first message until it
    // lands (same id, so it runs once).
    let first = json!({"id": "m-1", "value": 9.1});
    eventually(
        "an MQTT event reached the node",
        Duration::from_secs(10),
        || {
            let landed = node
                .journal()
                .execution_of_event(&key("plant-a/boiler-1/pressure", "m-1"))
                .expect("journal");
            if landed.is_none() {
                publish(&client, "plant-a/boiler-1/pressure", &first);
            }
            landed
        },
    );
    assert_eq!(
        returned(&finished(&node, &key("plant-a/boiler-1/pressure", "m-1")))["value"],
        9.1
    );
    publish(
        &client,
        "plant-a/boiler-2/pressure",
        &json!({"id": "m-2", "value": 8.5}),
    );
    publish(
        &client,
        "plant-a/boiler-2/pressure",
        &json!({"id": "m-3", "value": 7.0}),
    );
    publish(
        &client,
        "plant-b/boiler-2/pressure",
        &json!({"id": "m-4", "value": 9.9}),
    );
    publish(
        &client,
        "plant-a/boiler-2/pressure",
        &json!({"id": "m-2", "value": 8.5}),
    );
    // A sentinel behind them on the watched topic: once it ran, the broker delivered
    // everything published before it there.
    publish(
        &client,
        "plant-a/boiler-2/pressure",
        &json!({"id": "m-5", "value": 9.0}),
    );
    assert_eq!(
        returned(&finished(&node, &key("plant-a/boiler-2/pressure", "m-2")))["value"],
        8.5
    );
    assert_eq!(
        returned(&finished(&node, &key("plant-a/boiler-2/pressure", "m-5")))["value"],
        9.0
    );
    node.wait_idle();
    let journal = node.journal();
    assert!(
        journal
            .execution_of_event(&key("plant-a/boiler-2/pressure", "m-3"))
            .expect("journal")
            .is_none(),
        "filtered out"
    );
    assert!(
        journal
            .execution_of_event(&key("plant-b/boiler-2/pressure", "m-4"))
            .expect("journal")
            .is_none(),
        "other topic"
    );
    let executions = journal.counts().expect("counts").executions;
    assert_eq!(
        executions, 3,
        "m-1 (repeated until subscribed), m-2 (sent twice) and the sentinel ran once each"
    );
    sources.stop();
    node.shutdown().expect("shutdown");
}

#[test]
fn timer_triggers_fire_on_schedule_with_distinct_event_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(config(dir.path()));
    deploy(
        &node,
        r#"
id: ticker
version: 1.0.0
triggers:
  - kind: timer
    interval_ms: 100
instructions:
  - id: done
    op: RETURN
    expression: "{'at': event.scheduled_ms}"
"#,
    );
    let timers =
        Sources::start(&node, &Default::default(), &Default::default()).expect("sources start");
    eventually("the timer fired 5 times", Duration::from_secs(10), || {
        (node.journal().counts().expect("counts").finished >= 5).then_some(())
    });
    timers.stop();
    node.wait_idle();
    let counts = node.journal().counts().expect("counts");
    assert_eq!(counts.executions, counts.finished);
    node.shutdown().expect("shutdown");
}

#[test]
fn a_connector_plugin_is_polled_as_an_event_source_with_a_durable_cursor() {
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let manifest = std::fs::read(plugins.join("sensor-sim.json"))
        .expect("built plugins (scripts/build-plugins.sh)");
    let wasm = std::fs::read(plugins.join("sensor-sim.wasm")).expect("component");
    let mut package = eyeflow_runtime::plugins::Package::new(manifest, wasm).expect("package");
    package.sign(&key());
    let dir = tempfile::tempdir().expect("temp dir");
    let rule = r#"
id: sensor-feed
version: 1.0.0
requires:
  sensor-sim: ^1.0
triggers:
  - kind: plugin
    source: sensor-sim
instructions:
  - id: done
    op: RETURN
    expression: "{'seen': true}"
"#;
    let node = start(config(dir.path()));
    node.plugins()
        .install(&package)
        .expect("install sensor-sim");
    deploy(&node, rule);
    let sources =
        Sources::start(&node, &Default::default(), &Default::default()).expect("sources start");
    eventually("the source polled twice", Duration::from_secs(20), || {
        (node.journal().counts().expect("counts").finished >= 150).then_some(())
    });
    sources.stop();
    node.wait_idle();
    let before = node.journal().counts().expect("counts");
    assert_eq!(before.executions, before.finished);
    let cursor = node
        .store()
        .get(
            eyeflow_runtime::store::Space::SourceCursors,
            b"sensor-feed/0",
        )
        .expect("store");
    assert!(cursor.is_some(), "the cursor is kept");
    node.shutdown().expect("shutdown");
    drop(node);

    // After a restart, polling resumes from the kept cursor.
    let node = start(config(dir.path()));
    let sources =
        Sources::start(&node, &Default::default(), &Default::default()).expect("sources start");
    eventually(
        "new events after the restart",
        Duration::from_secs(20),
        || {
            (node.journal().counts().expect("counts").executions >= before.executions + 100)
                .then_some(())
        },
    );
    sources.stop();
    node.wait_idle();
    let counts = node.journal().counts().expect("counts");
    assert_eq!(counts.executions, counts.finished, "{counts:?}");
    let moved = node
        .store()
        .get(
            eyeflow_runtime::store::Space::SourceCursors,
            b"sensor-feed/0",
        )
        .expect("store");
    assert_ne!(moved, cursor, "the cursor advanced from where it was kept");
    node.shutdown().expect("shutdown");
}
