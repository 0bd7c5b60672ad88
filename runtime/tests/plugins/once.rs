//! Acting once: the KV's `set-if-absent` through a real plugin (fixture-kv) and the SDK's
//! `apply_once`.

use eyeflow_actors::ports::{CallError, CallErrorKind};
use serde_json::{Value, json};

use crate::support::Node;

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
