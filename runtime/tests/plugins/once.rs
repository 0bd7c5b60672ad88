//! Acting once: the KV's `set-if-absent` through a real plugin (fixture-kv), the SDK's
//! `apply_once`, and valve-sim applying one idempotency key once across a `kill -9`.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use eyeflow_actors::ports::{CallError, CallErrorKind};
use eyeflow_runtime::plugins::HostConfig;
use serde_json::{Value, json};

use crate::support::{Node, invoke, key, open, signed};

fn kv(node: &Node, action: &str, input: Value) -> Result<Value, CallError> {
    node.invoke_with_key("fixture-kv", action, input, "e1/i1/1")
}

fn get(node: &Node, key: &str) -> Value {
    kv(node, "get", json!({"key": key})).expect("get")["value"].clone()
}

#[test]
fn set_if_absent_applies_its_batch_once_then_answers_what_the_key_holds() {
    let mut node = Node::new();
    node.install("fixture-kv");
    let first = kv(
        &node,
        "set-if-absent",
        json!({"key": "claim", "value": "first",
               "writes": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]}),
    )
    .unwrap();
    assert_eq!(first, json!({"held": null}));
    assert_eq!(
        (get(&node, "claim"), get(&node, "a"), get(&node, "b")),
        (json!("first"), json!("1"), json!("2"))
    );
    let second = kv(
        &node,
        "set-if-absent",
        json!({"key": "claim", "value": "second",
               "writes": [{"key": "a", "value": "9"}, {"key": "b", "value": null},
                          {"key": "c", "value": "3"}]}),
    )
    .unwrap();
    assert_eq!(
        second,
        json!({"held": "first"}),
        "the stored value comes back"
    );
    assert_eq!(
        (
            get(&node, "claim"),
            get(&node, "a"),
            get(&node, "b"),
            get(&node, "c")
        ),
        (json!("first"), json!("1"), json!("2"), Value::Null),
        "nothing of the second batch was applied"
    );
    // A removal in a winning batch.
    let third = kv(
        &node,
        "set-if-absent",
        json!({"key": "claim-2", "value": "x", "writes": [{"key": "a", "value": null}]}),
    )
    .unwrap();
    assert_eq!(third, json!({"held": null}));
    assert_eq!(get(&node, "a"), Value::Null);
    // Durable in the node store.
    node.reopen();
    assert_eq!(
        (get(&node, "claim"), get(&node, "b"), get(&node, "claim-2")),
        (json!("first"), json!("2"), json!("x"))
    );
}

#[test]
fn set_if_absent_refuses_a_batch_over_the_limits_and_writes_nothing() {
    let node = Node::new();
    node.install("fixture-kv");
    let refused = |input: Value| {
        let err = kv(&node, "set-if-absent", input).unwrap_err();
        assert_eq!(err.kind, CallErrorKind::InvalidInput, "{err}");
        assert!(!err.message.contains("s3cr3t"), "a value leaked: {err}");
        assert_eq!(get(&node, "claim"), Value::Null, "{err}");
        assert_eq!(get(&node, "generated/0"), Value::Null, "{err}");
        err.message
    };
    let claim = |generate: Value| json!({"key": "claim", "value": "s3cr3t", "writes": [], "generate": generate});
    let m = refused(claim(json!({"count": 65, "bytes": 1})));
    assert!(
        m.contains("set-if-absent: 65 writes; expected at most 64"),
        "{m}"
    );
    let m = refused(claim(json!({"count": 5, "bytes": 1024 * 1024})));
    assert!(
        m.contains("bytes of keys and values; expected at most 4194304"),
        "{m}"
    );
    let m = refused(claim(json!({"count": 1, "bytes": 1024 * 1024 + 1})));
    assert!(
        m.contains("write 1: kv value of 1048577 bytes; expected at most 1048576"),
        "{m}"
    );
    let m = refused(json!({"key": "claim", "value": "s3cr3t",
                           "writes": [{"key": "a", "value": "s3cr3t"}, {"key": "claim", "value": null}]}));
    assert!(
        m.contains("write 2 has the key that is set if absent"),
        "{m}"
    );
    let m = refused(json!({"key": "claim", "value": "s3cr3t",
                           "writes": [{"key": "a", "value": "s3cr3t"}, {"key": "a", "value": null}]}));
    assert!(m.contains("writes 1 and 2 have the same key"), "{m}");
    let m = refused(json!({"key": "k".repeat(1025), "value": "s3cr3t"}));
    assert!(
        m.contains("kv key of 1025 bytes; expected at most 1024"),
        "{m}"
    );
    // At the limit it goes through.
    let at_limit = kv(
        &node,
        "set-if-absent",
        claim(json!({"count": 64, "bytes": 1})),
    )
    .unwrap();
    assert_eq!(at_limit, json!({"held": null}));
    assert_eq!(get(&node, "generated/63"), json!("x"));
}

#[test]
fn apply_once_returns_the_first_result_of_a_key() {
    let node = Node::new();
    node.install("fixture-kv");
    let apply = |n: u64, key: &str| {
        node.invoke_with_key(
            "fixture-kv",
            "apply-once",
            json!({"output": {"n": n}, "writes": [{"key": "x", "value": n.to_string()}]}),
            key,
        )
        .unwrap()
    };
    assert_eq!(apply(1, "e1/i1/1"), json!({"n": 1}));
    assert_eq!(
        apply(2, "e1/i1/1"),
        json!({"n": 1}),
        "same key: first result"
    );
    assert_eq!(
        get(&node, "x"),
        json!("1"),
        "and the action was not applied again"
    );
    assert_eq!(get(&node, "once/e1/i1/1"), json!(r#"{"n":1}"#));
    assert_eq!(apply(3, "e1/i1/2"), json!({"n": 3}), "another key acts");
    assert_eq!(get(&node, "x"), json!("3"));
    // No key: nothing to recognise a repeat by; every call acts.
    assert_eq!(apply(4, ""), json!({"n": 4}));
    assert_eq!(apply(5, ""), json!({"n": 5}));
    assert_eq!(get(&node, "x"), json!("5"));
}

#[test]
fn apply_once_records_are_outside_the_kv_quota_and_written_only_as_a_set_if_absent_key() {
    let node = Node::with_config(HostConfig {
        quotas: eyeflow_runtime::plugins::Quotas {
            kv_keys: 3,
            ..Default::default()
        },
        ..HostConfig::default()
    });
    node.install("fixture-kv");
    // Far more actions than the quota has keys: each leaves its record, none is refused.
    for n in 0..20u64 {
        let key = format!("e1/i{n}/1");
        let output = node
            .invoke_with_key(
                "fixture-kv",
                "apply-once",
                json!({"output": {"n": n}, "writes": [{"key": "x", "value": n.to_string()}]}),
                &key,
            )
            .unwrap_or_else(|e| panic!("action {n}: {e:?}"));
        assert_eq!(output, json!({"n": n}));
    }
    assert_eq!(get(&node, "once/e1/i0/1"), json!(r#"{"n":0}"#));
    assert_eq!(get(&node, "once/e1/i19/1"), json!(r#"{"n":19}"#));
    // The plugin's own keys still count: x plus two more fill the quota of 3.
    let own = |key: &str| kv(&node, "set-if-absent", json!({"key": key, "value": "v"}));
    own("a").expect("second key");
    own("b").expect("third key");
    let err = own("c").expect_err("a fourth key is over the quota");
    assert!(err.message.contains("kv quota"), "{err:?}");
    // A plugin cannot write `once/` records besides the key of a set-if-absent.
    let err = kv(
        &node,
        "set-if-absent",
        json!({"key": "claim", "value": "v", "writes": [{"key": "once/e9/i1/1", "value": "forged"}]}),
    )
    .expect_err("a batch write under once/ is refused");
    assert_eq!(err.kind, CallErrorKind::InvalidInput, "{err:?}");
    assert!(err.message.contains("apply_once record"), "{err:?}");
    assert_eq!(get(&node, "once/e9/i1/1"), Value::Null);
}

/// Set in the child process of the kill -9 test: the data directory it works in.
const CHILD_DATA_DIR: &str = "EYEFLOW_TEST_ONCE_CHILD_DATA_DIR";
/// The line the child prints once every action returned.
const READY: &str = "READY: 401 actions acknowledged";

/// The 400 other actions: (key, action, input), a third of them on the valve of key K.
fn other_actions() -> Vec<(String, &'static str, Value)> {
    (0..400)
        .map(|i| {
            let key = format!("e2/i{i}/1");
            match i % 3 {
                0 => (key, "set", json!({"valve": "valve/k", "position": i % 101})),
                1 => (key, "open", json!({"valve": "valve/other"})),
                _ => (key, "close", json!({"valve": format!("valve/o-{}", i % 7)})),
            }
        })
        .collect()
}

/// The child: installs valve-sim on the shared data directory, acts under K and 400 other
/// keys, says READY and waits to be killed (or for its stdin to close: parent gone).
fn act_then_wait_for_kill(dir: &str) {
    let host = open(std::path::Path::new(dir), &key(1), HostConfig::default());
    host.install(&signed("valve-sim", &key(1)))
        .expect("install");
    invoke(
        &host,
        "valve-sim",
        "set",
        json!({"valve": "valve/k", "position": 40}),
        "e1/k/1",
    )
    .expect("set under K");
    for (key, action, input) in other_actions() {
        invoke(&host, "valve-sim", action, input, &key).expect("other action");
    }
    println!("{READY}");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// Kills the child if the test fails before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn valve_sim_applies_one_key_once_after_400_other_actions_and_a_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_DATA_DIR) {
        return act_then_wait_for_kill(&dir);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // This very test, in a child process: libtest names it without the crate.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name =
        format!("{module}::valve_sim_applies_one_key_once_after_400_other_actions_and_a_kill_9");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(CHILD_DATA_DIR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut child = ChildGuard(child);
    let (lines, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().expect("child stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            // libtest's `test NAME ... ` may precede it on the same line.
            Ok(line) if line.ends_with(READY) => break,
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.0.kill();
                let mut stderr = String::new();
                if let Some(mut err) = child.0.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!("the child never said READY ({e}); stdout: {seen:#?}; stderr: {stderr}");
            }
        }
    }
    child.0.kill().expect("kill -9 the child");
    let status = child.0.wait().expect("wait for the child");
    assert_eq!(status.signal(), Some(9), "{status}");

    let host = open(dir.path(), &key(1), HostConfig::default());
    let read = |key: &str| {
        invoke(&host, "valve-sim", "read", json!({"valve": "valve/k"}), key).expect("read")
    };
    let before = read("e3/read/1");
    // Every acknowledged action survived the kill: K's and a third of the others.
    let last_set = other_actions()
        .into_iter()
        .rev()
        .find(|(_, _, input)| input["valve"] == "valve/k")
        .map(|(_, _, input)| input["position"].clone());
    assert_eq!(before["position"], last_set.expect("a set on valve/k"));
    assert_eq!(before["actions"], 1 + 134, "{before}");
    let again = invoke(
        &host,
        "valve-sim",
        "set",
        json!({"valve": "valve/k", "position": 90}),
        "e1/k/1",
    )
    .expect("set under K again");
    assert_eq!(
        again,
        json!({"valve": "valve/k", "position": 40, "open": true, "actions": 1}),
        "K is answered with its first result"
    );
    assert_eq!(read("e3/read/2"), before, "the repeat changed nothing");
}
