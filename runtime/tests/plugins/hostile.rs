//! Hostile plugins fail their own call, with their own error, and the host serves on.

use std::time::{Duration, Instant};

use eyeflow_actors::ports::{CallErrorKind, PluginPort};
use eyeflow_runtime::plugins::{GrantChange, HostConfig};
use serde_json::json;

use crate::support::{HttpServer, Node, cap};

fn node() -> Node {
    let node = Node::with_config(HostConfig {
        memory_limit: 32 * 1024 * 1024,
        ..HostConfig::default()
    });
    node.install("fixture-hostile");
    node.install("fixture-echo");
    node
}

fn hostile(
    node: &Node,
    action: &str,
    input: serde_json::Value,
    deadline: Duration,
) -> eyeflow_actors::ports::CallError {
    node.host
        .invoke(
            &cap("fixture-hostile", "^1"),
            action,
            &input,
            "e/i/1",
            deadline,
        )
        .expect_err("the hostile call fails")
}

fn good_plugin_still_works(node: &Node) {
    let out = node
        .invoke("fixture-echo", "ping", json!({"after": "hostile"}))
        .expect("echo works");
    assert_eq!(out["input"]["after"], "hostile");
    let out = node
        .invoke("fixture-hostile", "ok", json!({}))
        .expect("the hostile plugin's good action works");
    assert_eq!(out["ok"], true);
}

#[test]
fn an_infinite_loop_stops_at_its_deadline() {
    let node = node();
    let deadline = Duration::from_millis(200);
    let started = Instant::now();
    let err = hostile(&node, "spin", json!({}), deadline);
    let took = started.elapsed();
    assert_eq!(err.kind, CallErrorKind::Timeout, "{err}");
    assert!(err.message.contains("deadline of 200 ms exceeded"), "{err}");
    // Deadline plus a small margin (epoch ticks are 1 ms; generous for a loaded CI machine).
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(500),
        "took {took:?}"
    );
    good_plugin_still_works(&node);
}

#[test]
fn a_memory_bomb_stops_at_the_limit() {
    let node = node();
    let err = hostile(&node, "bomb", json!({}), Duration::from_secs(10));
    assert_eq!(err.kind, CallErrorKind::ResourceExhausted, "{err}");
    assert!(
        err.message.contains("memory limit of 33554432 bytes"),
        "{err}"
    );
    good_plugin_still_works(&node);
}

#[test]
fn a_panic_is_a_trap_with_its_message() {
    let node = node();
    let err = hostile(&node, "trap", json!({}), Duration::from_secs(5));
    assert_eq!(err.kind, CallErrorKind::Trap, "{err}");
    assert!(err.message.contains("trapped"), "{err}");
    assert!(err.origin.starts_with("fixture-hostile@"), "{err}");
    good_plugin_still_works(&node);
}

#[test]
fn http_to_a_host_not_granted_is_denied() {
    let node = node();
    let server = HttpServer::start(vec![("/x", 200, "{}")]);
    let err = hostile(
        &node,
        "http",
        json!({"url": server.url("/x")}),
        Duration::from_secs(5),
    );
    assert_eq!(err.kind, CallErrorKind::Denied, "{err}");
    assert!(err.message.contains("is not granted"), "{err}");
    assert!(
        server.received.lock().unwrap().is_empty(),
        "no request left the host"
    );
    good_plugin_still_works(&node);
}

#[test]
fn a_secret_not_granted_is_denied_and_never_shown() {
    let node = node();
    let err = hostile(
        &node,
        "secret",
        json!({"name": "webhook-token"}),
        Duration::from_secs(5),
    );
    assert_eq!(err.kind, CallErrorKind::Denied, "{err}");
    assert!(
        err.message
            .contains("secret `webhook-token` is not granted"),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    good_plugin_still_works(&node);
}

#[test]
fn a_granted_secret_never_comes_back_from_the_plugin() {
    let node = node();
    node.host
        .change_grant(
            "fixture-hostile",
            &[GrantChange::AllowSecret("webhook-token".into())],
        )
        .unwrap();
    let name = "[secret:webhook-token]";
    // In the output, at any depth.
    let out = node
        .invoke(
            "fixture-hostile",
            "secret",
            json!({"name": "webhook-token", "echo": "output"}),
        )
        .expect("granted");
    assert_eq!(out, json!({"value": name, "nested": [{"again": name}]}));
    // In its error, and in a panic's message (a trap quotes the guest's stderr).
    for (echo, kind) in [
        ("error", CallErrorKind::Unavailable),
        ("panic", CallErrorKind::Trap),
    ] {
        let err = hostile(
            &node,
            "secret",
            json!({"name": "webhook-token", "echo": echo}),
            Duration::from_secs(5),
        );
        assert_eq!(err.kind, kind, "{err}");
        assert!(!err.to_string().contains("s3cr3t-t0ken"), "{err}");
        if echo == "error" {
            assert!(err.message.contains(name), "{err}");
        }
    }
    // A call that only logs it still works (the log line is scrubbed).
    let out = node
        .invoke(
            "fixture-hostile",
            "secret",
            json!({"name": "webhook-token", "echo": "log"}),
        )
        .expect("granted");
    assert_eq!(out["length"], "s3cr3t-t0ken".len());
    good_plugin_still_works(&node);
}

#[test]
fn a_granted_secret_its_source_refuses_is_a_clear_error() {
    let node = node();
    for (name, kind) in [
        ("denied-token", CallErrorKind::Denied),
        ("unreachable-token", CallErrorKind::Unavailable),
    ] {
        node.host
            .change_grant("fixture-hostile", &[GrantChange::AllowSecret(name.into())])
            .unwrap();
        let err = hostile(
            &node,
            "secret",
            json!({"name": name}),
            Duration::from_secs(5),
        );
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.message.contains(&format!("secret `{name}`")), "{err}");
    }
    good_plugin_still_works(&node);
}

#[test]
fn revoking_a_grant_fails_the_next_call() {
    let node = node();
    let server = HttpServer::start(vec![("/x", 200, "{\"fine\":true}")]);
    node.host
        .change_grant(
            "fixture-hostile",
            &[GrantChange::AllowHttp(server.host_port())],
        )
        .unwrap();
    let out = node
        .invoke("fixture-hostile", "http", json!({"url": server.url("/x")}))
        .expect("granted");
    assert_eq!(out["status"], 200, "{out}");
    node.host
        .change_grant(
            "fixture-hostile",
            &[GrantChange::DenyHttp(server.host_port())],
        )
        .unwrap();
    let err = hostile(
        &node,
        "http",
        json!({"url": server.url("/x")}),
        Duration::from_secs(5),
    );
    assert_eq!(err.kind, CallErrorKind::Denied, "{err}");
    assert_eq!(
        server.received.lock().unwrap().len(),
        1,
        "only the granted call reached the server"
    );
}

#[test]
fn a_plugin_linked_without_its_grant_cannot_run() {
    let node = node();
    // The hostile plugin imports http and secrets; withdraw the interface itself.
    node.host
        .change_grant(
            "fixture-hostile",
            &[GrantChange::DenyImport(
                eyeflow_runtime::plugins::Import::Log,
            )],
        )
        .unwrap();
    let err = hostile(&node, "ok", json!({}), Duration::from_secs(5));
    assert_eq!(err.kind, CallErrorKind::Denied, "{err}");
    assert!(err.message.contains("not granted"), "{err}");
    good_plugin_still_works_echo(&node);
}

fn good_plugin_still_works_echo(node: &Node) {
    assert!(node.invoke("fixture-echo", "ping", json!({})).is_ok());
}
