//! The four bundled plugins through the real host: reads, actions, errors, schemas.

use eyeflow_actors::ports::{CallErrorKind, PluginPort};
use eyeflow_runtime::plugins::GrantChange;
use serde_json::json;

use crate::support::{HttpServer, Node, cap};

#[test]
fn sensor_sim_reads_are_deterministic_and_checked() {
    let node = Node::new();
    node.install("sensor-sim");
    let read = |key: &str, t: u64| node.read("sensor-sim", key, json!({"t": t}));
    let a = read("sensor/boiler-1/temperature", 1_000).unwrap();
    let b = read("sensor/boiler-1/temperature", 1_000).unwrap();
    assert_eq!(a, b, "same sensor and time, same reading");
    assert_eq!(a["sensor"], "boiler-1");
    assert_eq!(a["kind"], "temperature");
    assert!(a["value"].is_number(), "{a}");
    let c = read("sensor/boiler-1/temperature", 61_000).unwrap();
    assert_ne!(a["value"], c["value"], "readings move over time");
    for kind in ["pressure", "level"] {
        assert!(read(&format!("sensor/tank-2/{kind}"), 5).unwrap()["value"].is_number());
    }
    let err = read("sensor/boiler-1/colour", 1).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput, "{err}");
    // The manifest's schema refuses bad params before the plugin runs.
    let err = node
        .read(
            "sensor-sim",
            "sensor/boiler-1/temperature",
            json!({"t": "soon"}),
        )
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("schema"), "{err}");
}

#[test]
fn sensor_sim_is_a_replayable_event_source() {
    let node = Node::new();
    node.install("sensor-sim");
    let source = cap("sensor-sim", "^1");
    let deadline = std::time::Duration::from_secs(5);
    let first = node.host.poll(&source, None, 5, deadline).unwrap();
    assert_eq!(first.events.len(), 5);
    let next = node
        .host
        .poll(&source, Some(&first.cursor), 5, deadline)
        .unwrap();
    assert_eq!(next.events.len(), 5);
    assert_ne!(first.events[0].id, next.events[0].id);
    let again = node.host.poll(&source, None, 5, deadline).unwrap();
    assert_eq!(
        first
            .events
            .iter()
            .map(|e| (&e.id, &e.payload))
            .collect::<Vec<_>>(),
        again
            .events
            .iter()
            .map(|e| (&e.id, &e.payload))
            .collect::<Vec<_>>(),
        "replay gives the same events"
    );
}

#[test]
fn valve_sim_acts_keeps_state_and_honours_idempotency() {
    let mut node = Node::new();
    node.install("valve-sim");
    let valve = json!({"valve": "valve/v-101"});
    let invoke = |node: &Node, action: &str, input: serde_json::Value, key: &str| {
        node.host.invoke(
            &cap("valve-sim", "^1"),
            action,
            &input,
            key,
            std::time::Duration::from_secs(5),
        )
    };
    invoke(&node, "open", valve.clone(), "e1/i1/1").unwrap();
    assert_eq!(
        invoke(&node, "read", valve.clone(), "e1/i2/1").unwrap()["position"],
        100
    );
    invoke(
        &node,
        "set",
        json!({"valve": "valve/v-101", "position": 40}),
        "e1/i3/1",
    )
    .unwrap();
    // A replay of an old idempotency key does not act again.
    invoke(&node, "open", valve.clone(), "e1/i1/1").unwrap();
    assert_eq!(
        invoke(&node, "read", valve.clone(), "e1/i4/1").unwrap()["position"],
        40
    );
    let err = invoke(
        &node,
        "set",
        json!({"valve": "valve/v-101", "position": 140}),
        "e1/i5/1",
    )
    .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput, "{err}");
    // State lives in the plugin's KV in the node store: it survives a restart.
    node.reopen();
    assert_eq!(
        invoke(&node, "read", valve, "e2/i1/1").unwrap()["position"],
        40
    );
}

#[test]
fn valve_sim_remembers_the_last_256_idempotency_keys() {
    let node = Node::new();
    node.install("valve-sim");
    let set = |position: u32, key: &str| {
        node.host
            .invoke(
                &cap("valve-sim", "^1"),
                "set",
                &json!({"valve": "valve/v-9", "position": position}),
                key,
                std::time::Duration::from_secs(5),
            )
            .unwrap()["position"]
            .clone()
    };
    for n in 0..300 {
        assert_eq!(set(n % 100, &format!("k{n}")), n % 100);
    }
    // Keys 44..300 are remembered: a replay returns the stored result without acting.
    assert_eq!(set(5, "k299"), 299 % 100);
    assert_eq!(set(99, "k44"), 44);
    assert_eq!(set(7, "k300"), 7);
    // k44 was the oldest: remembering k300 took its slot. k43 was forgotten before.
    assert_eq!(set(99, "k44"), 99, "k44 was forgotten");
    assert_eq!(set(98, "k43"), 98, "k43 was forgotten");
}

#[test]
fn http_json_extracts_by_pointer_from_a_granted_host() {
    let node = Node::new();
    node.install("http-json");
    let server = HttpServer::start(vec![
        (
            "/plant.json",
            200,
            r#"{"boiler":{"setpoint":72.5,"mode":"eco"}}"#,
        ),
        ("/broken", 503, "down"),
        ("/text", 200, "not json"),
    ]);
    let params = |path: &str, pointer: &str| json!({"url": server.url(path), "pointer": pointer});
    let err = node
        .read(
            "http-json",
            "plant",
            params("/plant.json", "/boiler/setpoint"),
        )
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Denied, "{err}");
    node.host
        .change_grant("http-json", &[GrantChange::AllowHttp(server.host_port())])
        .unwrap();
    let out = node
        .read(
            "http-json",
            "plant",
            params("/plant.json", "/boiler/setpoint"),
        )
        .unwrap();
    assert_eq!(out, json!(72.5), "{out}");
    let err = node
        .read(
            "http-json",
            "plant",
            params("/plant.json", "/boiler/missing"),
        )
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput, "{err}");
    let err = node
        .read("http-json", "plant", params("/broken", ""))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Unavailable, "{err}");
    let err = node
        .read("http-json", "plant", params("/text", ""))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput, "{err}");
}

#[test]
fn webhook_notify_posts_with_a_granted_secret() {
    let node = Node::new();
    node.install("webhook-notify");
    let server = HttpServer::start(vec![("/hook", 200, "{}"), ("/fail", 500, "{}")]);
    let message = |path: &str| {
        json!({"url": server.url(path), "message": "boiler-1 over 90 °C", "severity": "critical",
               "source": "valve-guard", "auth_secret": "webhook-token"})
    };
    node.host
        .change_grant(
            "webhook-notify",
            &[GrantChange::AllowHttp(server.host_port())],
        )
        .unwrap();
    let err = node
        .invoke("webhook-notify", "notify", message("/hook"))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Denied, "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    node.host
        .change_grant(
            "webhook-notify",
            &[GrantChange::AllowSecret("webhook-token".into())],
        )
        .unwrap();
    let out = node
        .invoke("webhook-notify", "notify", message("/hook"))
        .unwrap();
    assert_eq!(out["status"], 200);
    let received = server.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, "POST");
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer s3cr3t-t0ken")
    );
    let body: serde_json::Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body["message"], "boiler-1 over 90 °C");
    assert_eq!(body["severity"], "critical");
    let err = node
        .invoke("webhook-notify", "notify", message("/fail"))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Unavailable, "{err}");
    let err = node
        .invoke("webhook-notify", "notify", json!({"message": 3}))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput, "{err}");
}

#[test]
fn a_capability_with_a_read_action_is_readable_as_a_resource() {
    let node = Node::new();
    node.install("valve-sim");
    node.invoke(
        "valve-sim",
        "set",
        json!({"valve": "valve/v-7", "position": 30}),
    )
    .unwrap();
    for _ in 0..2 {
        let state = node
            .read("valve-sim", "valve/v-7", json!({"valve": "valve/v-7"}))
            .unwrap();
        assert_eq!(state["position"], 30, "{state}");
    }
    // Reads are never answered from the idempotency store: they see the new state.
    node.host
        .invoke(
            &cap("valve-sim", "^1"),
            "open",
            &json!({"valve": "valve/v-7"}),
            "e9/i1/1",
            std::time::Duration::from_secs(5),
        )
        .unwrap();
    let state = node
        .read("valve-sim", "valve/v-7", json!({"valve": "valve/v-7"}))
        .unwrap();
    assert_eq!(state["position"], 100, "{state}");
}
