//! The four bundled plugins through the real host: reads, actions, errors, schemas.

use eyeflow_actors::ports::{CallErrorKind, OnResume, PluginPort};
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
        node.invoke_with_key("valve-sim", action, input, key)
    };
    let fresh = invoke(&node, "read", valve.clone(), "e1/i0/1").unwrap();
    assert_eq!(
        fresh,
        json!({"valve": "valve/v-101", "position": 0, "open": false, "actions": 0})
    );
    invoke(&node, "open", valve.clone(), "e1/i1/1").unwrap();
    let state = invoke(&node, "read", valve.clone(), "e1/i2/1").unwrap();
    assert_eq!(
        (&state["position"], &state["actions"]),
        (&json!(100), &json!(1))
    );
    let set = invoke(
        &node,
        "set",
        json!({"valve": "valve/v-101", "position": 40}),
        "e1/i3/1",
    )
    .unwrap();
    assert_eq!(
        set,
        json!({"valve": "valve/v-101", "position": 40, "open": true, "actions": 2})
    );
    // A replay of an old idempotency key does not act again: it gets its first result.
    let replay = invoke(&node, "open", valve.clone(), "e1/i1/1").unwrap();
    assert_eq!(
        (&replay["position"], &replay["actions"]),
        (&json!(100), &json!(1))
    );
    assert_eq!(
        invoke(&node, "read", valve.clone(), "e1/i4/1").unwrap(),
        set
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
    assert_eq!(invoke(&node, "read", valve, "e2/i1/1").unwrap(), set);
}

#[test]
fn valve_sim_applies_a_key_once_however_many_keys_came_after() {
    let node = Node::new();
    node.install("valve-sim");
    let set = |position: u32, key: &str| {
        node.invoke_with_key(
            "valve-sim",
            "set",
            json!({"valve": "valve/v-9", "position": position}),
            key,
        )
        .unwrap()
    };
    for n in 0..300 {
        assert_eq!(set(n % 100, &format!("k{n}"))["actions"], n + 1);
    }
    // Every key is remembered (the 1.0 valve-sim forgot all but the last 256).
    let first = set(99, "k0");
    assert_eq!(
        (&first["position"], &first["actions"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(set(99, "k44")["position"], 44);
    let state = node
        .invoke_with_key("valve-sim", "read", json!({"valve": "valve/v-9"}), "r")
        .unwrap();
    assert_eq!(
        (&state["position"], &state["actions"]),
        (&json!(99), &json!(300))
    );
    // Its actions tell the runtime that a repeated key is answered, not re-applied.
    for action in ["open", "close", "set", "read"] {
        assert_eq!(
            node.host.on_resume(&cap("valve-sim", "^1"), action),
            OnResume::Reissue,
            "{action}"
        );
    }
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
