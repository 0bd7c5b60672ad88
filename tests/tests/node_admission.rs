//! Late admission on a real node: an execution that waits past its `max_wait` for a worker
//! runs its first instruction's fallback instead of failing without running.

use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::Workdir;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// Holds the only worker for about a second.
const BUSY: &str = r#"
id: busy
version: 1.0.0
requires: {fixture-hostile: ^1.0}
triggers:
  - {kind: webhook, source: busy}
instructions:
  - {id: nap, op: CALL_ACTION, capability: fixture-hostile, action: sleep, params: {ms: "1000"}, timeout_ms: 5000}
"#;

/// Waits 50 ms at most; its first instruction falls back to a value.
const HURRIED: &str = r#"
id: hurried
version: 1.0.0
max_wait_ms: 50
triggers:
  - {kind: webhook, source: hurried}
instructions:
  - {id: last, op: LOAD, scope: node, key: "'reading'", default: '"fresh"', fallback: {strategy: value, value: '"stale"'}, next: done}
  - {id: done, op: RETURN, expression: "last"}
"#;

/// Waits 50 ms at most; no fallback.
const STRICT: &str = r#"
id: strict
version: 1.0.0
max_wait_ms: 50
triggers:
  - {kind: webhook, source: strict}
instructions:
  - {id: last, op: LOAD, scope: node, key: "'reading'", default: '"fresh"', next: done}
  - {id: done, op: RETURN, expression: "last"}
"#;

fn finished(work: &Workdir, url: &str, id: &str) -> Value {
    eventually(&format!("execution {id} finished"), PATIENCE, || {
        work.execution(url, id).filter(|v| v["outcome"].is_object())
    })
}

#[test]
fn a_late_execution_takes_its_fallback() {
    let work = Workdir::new("");
    std::fs::write(
        work.path().join("node.toml"),
        "[node]\ndata_dir = \"data\"\nworkers = 1\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let (node, url) = work.start();
    work.install(&url, "fixture-hostile", &[]);
    work.deploy(&url, BUSY);
    work.deploy(&url, HURRIED);
    work.deploy(&url, STRICT);

    // On time: the normal path.
    let id = work
        .send(&url, "hurried", "h-0", &json!({}))
        .expect("accepted");
    assert_eq!(finished(&work, &url, &id)["outcome"]["value"], "fresh");

    // Behind a busy worker: past max_wait.
    let busy = work
        .send(&url, "busy", "b-1", &json!({}))
        .expect("accepted");
    eventually("the worker is busy", PATIENCE, || {
        let view = work.execution(&url, &busy)?;
        (!view["steps"].as_array()?.is_empty()).then_some(())
    });
    let hurried = work
        .send(&url, "hurried", "h-1", &json!({}))
        .expect("accepted");
    let strict = work
        .send(&url, "strict", "s-1", &json!({}))
        .expect("accepted");

    let view = finished(&work, &url, &hurried);
    assert_eq!(view["outcome"]["status"], "completed", "{view}");
    assert_eq!(view["outcome"]["value"], "stale", "{view}");
    let steps = view["steps"].as_array().expect("steps");
    assert!(
        steps.iter().any(|s| s["outcome"]["status"] == "failed"
            && s["outcome"]["class"] == "timeout"
            && s["fallback"] == "fallback_value"),
        "the late step and its fallback are journaled: {view}"
    );
    let view = finished(&work, &url, &strict);
    assert_eq!(view["outcome"]["status"], "failed", "{view}");
    assert_eq!(view["outcome"]["class"], "timeout", "{view}");
    assert!(
        view["outcome"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_wait")),
        "{view}"
    );
    assert_eq!(
        finished(&work, &url, &busy)["outcome"]["status"],
        "completed"
    );
    work.stop(node);
}

#[test]
fn past_its_backlog_the_node_pushes_back_and_every_accepted_event_runs() {
    let work = Workdir::new("");
    std::fs::write(
        work.path().join("node.toml"),
        "[node]\ndata_dir = \"data\"\nworkers = 1\nmax_backlog = 2\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let (node, url) = work.start();
    work.install(&url, "fixture-hostile", &[]);
    work.deploy(&url, BUSY);
    let client = reqwest::blocking::Client::new();
    let post = |id: &str| {
        client
            .post(format!("{url}/api/events/busy"))
            .bearer_auth(&work.operator)
            .header("x-event-id", id)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .expect("the node answers")
    };
    let mut accepted = Vec::new();
    let mut refused = None;
    for n in 0..6 {
        let response = post(&format!("e-{n}"));
        match response.status().as_u16() {
            202 => {
                let body: Value =
                    serde_json::from_str(&response.text().expect("body")).expect("json");
                accepted.push(
                    body["routed"][0]["execution_id"]
                        .as_str()
                        .expect("execution id")
                        .to_owned(),
                );
            }
            503 => {
                assert_eq!(
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                let body: Value =
                    serde_json::from_str(&response.text().expect("body")).expect("json");
                assert_eq!(body["error"]["code"], "overloaded", "{body}");
                refused.get_or_insert(n);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let first_refused = refused.expect("the backlog of 2 pushed back");
    assert!(accepted.len() >= 2 && accepted.len() < 6, "{accepted:?}");
    // Every accepted event runs to its end; the refused one is accepted once there is room.
    for id in &accepted {
        assert_eq!(finished(&work, &url, id)["outcome"]["status"], "completed");
    }
    eventually("accepted once there is room", PATIENCE, || {
        let response = post(&format!("e-{first_refused}"));
        (response.status().as_u16() == 202).then_some(())
    });
    let counts = work.counts(&url).expect("counts");
    assert_eq!(
        counts["executions"].as_u64(),
        Some(accepted.len() as u64 + 1),
        "{counts}"
    );
    work.stop(node);
}
