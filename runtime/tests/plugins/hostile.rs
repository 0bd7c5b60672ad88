//! Hostile plugins fail their own call, with their own error, and the host serves on.

use std::time::{Duration, Instant};

use eyeflow_actors::ports::CallErrorKind;
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

/// A host with small quotas for the tests below.
fn quota_node(config: HostConfig) -> Node {
    let node = Node::with_config(config);
    node.install("fixture-hostile");
    node.install("fixture-echo");
    node
}

#[test]
fn a_blocking_sleep_stops_at_the_deadline() {
    let node = node();
    let started = Instant::now();
    let err = hostile(
        &node,
        "sleep",
        json!({"ms": 20_000}),
        Duration::from_millis(100),
    );
    let took = started.elapsed();
    assert_eq!(err.kind, CallErrorKind::Timeout, "{err}");
    // The sleep asked for 20 s: the call ended at its deadline, not at the sleep's end.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    good_plugin_still_works(&node);
}

#[test]
fn deep_and_huge_results_are_refused_with_the_limit_named() {
    let node = node();
    let err = hostile(
        &node,
        "huge",
        json!({"bytes": 2 * 1024 * 1024}),
        Duration::from_secs(10),
    );
    assert_eq!(err.kind, CallErrorKind::InvalidOutput, "{err}");
    assert!(err.message.contains("at most"), "{err}");
    let err = hostile(
        &node,
        "deep",
        json!({"depth": 500}),
        Duration::from_secs(10),
    );
    assert!(
        matches!(
            err.kind,
            CallErrorKind::Internal | CallErrorKind::InvalidOutput
        ),
        "{err}"
    );
    good_plugin_still_works(&node);
}

#[test]
fn kv_writes_past_the_quota_are_refused_and_a_trap_leaves_none() {
    let node = quota_node(HostConfig {
        quotas: eyeflow_runtime::plugins::Quotas {
            kv_keys: 50,
            kv_bytes: 64 * 1024,
            ..Default::default()
        },
        ..HostConfig::default()
    });
    // A trap drops the call's writes.
    let err = hostile(
        &node,
        "kv_then_trap",
        json!({"n": 5}),
        Duration::from_secs(10),
    );
    assert_eq!(err.kind, CallErrorKind::Trap, "{err}");
    // Within the quota writes land (a call that returns, even with an error, keeps them).
    node.invoke("fixture-hostile", "kv_spam", json!({"n": 40, "size": 100}))
        .expect("within the quota");
    // Past it, the write is refused, the plugin told, and its error classed as exhaustion.
    let err = hostile(
        &node,
        "kv_spam",
        json!({"n": 1000, "size": 100}),
        Duration::from_secs(10),
    );
    assert_eq!(err.kind, CallErrorKind::ResourceExhausted, "{err}");
    // Keys 0 to 39 exist (rewriting them takes no new key): refused at the 51st key.
    assert!(
        err.message.contains("after 50 keys") && err.message.contains("kv quota"),
        "{err}"
    );
    let store = node.host.catalog().store();
    let kept = store
        .scan(
            eyeflow_runtime::store::Space::PluginKv,
            b"fixture-hostile\0",
        )
        .expect("scan");
    assert_eq!(kept.len(), 50, "the quota of 50 keys holds");
    assert!(
        kept.iter()
            .all(|(key, _)| !key.windows(8).any(|w| w == b"partial/")),
        "a trapped call's writes were applied"
    );
    good_plugin_still_works(&node);
}

#[test]
fn logs_past_the_quota_are_dropped_and_counted_and_stderr_never_traps() {
    let node = node();
    node.invoke("fixture-hostile", "log_spam", json!({"lines": 100}))
        .expect("a chatty call still succeeds");
    // 100 lines of 4 KiB against 64 KiB per call.
    let dropped = node.host.log_bytes_dropped("fixture-hostile");
    assert!(dropped >= 300 * 1024, "{dropped} bytes dropped");
    node.invoke("fixture-hostile", "stderr", json!({"bytes": 100 * 1024}))
        .expect("100 KiB on stderr do not trap");
    good_plugin_still_works(&node);
}

#[test]
fn without_the_clock_grant_the_clocks_are_stopped() {
    let node = node();
    let out = node
        .invoke("fixture-hostile", "time", json!({}))
        .expect("time");
    assert_eq!(out["wall_s"], 0, "{out}");
}

#[test]
fn one_plugin_runs_at_most_its_share_of_calls_at_once() {
    let node = std::sync::Arc::new(quota_node(HostConfig {
        max_calls_per_plugin: 1,
        ..HostConfig::default()
    }));
    // The sleeping call may lose the slot to one of the probes below: it then fails
    // `rate-limited` and tries again, until it holds the slot.
    let busy = {
        let node = node.clone();
        std::thread::spawn(move || {
            loop {
                let err = hostile(
                    &node,
                    "sleep",
                    json!({"ms": 60_000}),
                    Duration::from_secs(3),
                );
                if err.kind != CallErrorKind::RateLimited {
                    return err;
                }
            }
        })
    };
    // Another call of the same plugin waits for the slot within its deadline, then fails.
    let err = eyeflow_tests::eventually(
        "the first call holds the slot",
        Duration::from_secs(10),
        || {
            let err = node
                .host
                .invoke(
                    &cap("fixture-hostile", "^1"),
                    "ok",
                    &json!({}),
                    "e/i/2",
                    Duration::from_millis(100),
                )
                .err()?;
            (err.kind == CallErrorKind::RateLimited).then_some(err)
        },
    );
    assert!(err.message.contains("limit per plugin"), "{err}");
    // Another plugin is not held.
    node.invoke("fixture-echo", "ping", json!({}))
        .expect("echo runs meanwhile");
    assert_eq!(busy.join().expect("thread").kind, CallErrorKind::Timeout);
    good_plugin_still_works(&node);
}

/// The pool of instances is the node's: when every one is taken, a call of any plugin fails
/// `resource-exhausted` (wasmtime's `PoolConcurrencyLimitError`), and the next call after
/// one ends runs.
#[test]
fn a_full_instance_pool_is_resource_exhausted() {
    let node = std::sync::Arc::new(quota_node(HostConfig {
        max_concurrent_calls: 1,
        max_calls_per_plugin: 4,
        ..HostConfig::default()
    }));
    let busy = {
        let node = node.clone();
        std::thread::spawn(move || {
            hostile(
                &node,
                "sleep",
                json!({"ms": 60_000}),
                Duration::from_secs(5),
            )
        })
    };
    // Pinged only once the sleeping call holds the instance: a ping holding it first
    // would turn the sleeping call away instead.
    eyeflow_tests::eventually(
        "the sleeping call holds the pool's only instance",
        Duration::from_secs(10),
        || {
            let metrics = node.host.engine().pooling_allocator_metrics()?;
            (metrics.component_instances() == 1).then_some(())
        },
    );
    let err = node
        .invoke("fixture-echo", "ping", json!({}))
        .expect_err("no instance is free");
    assert_eq!(err.kind, CallErrorKind::ResourceExhausted, "{err}");
    assert!(err.message.contains("concurrent limit"), "{err}");
    assert_eq!(busy.join().expect("thread").kind, CallErrorKind::Timeout);
    good_plugin_still_works(&node);
}

#[test]
fn a_source_that_returns_more_than_asked_is_refused() {
    let node = Node::new();
    node.install("fixture-flood");
    let err = node
        .host
        .poll(
            &cap("fixture-flood", "*"),
            None,
            100,
            Duration::from_secs(5),
        )
        .expect_err("10,000 events for 100 asked");
    assert_eq!(err.kind, CallErrorKind::InvalidOutput, "{err}");
    assert!(err.message.contains("at most 100"), "{err}");
}
