//! Hostile plugins against a real node process: a deep result, a deep event, a sleeping
//! plugin and a flooding source. The node serves on, restarts after each (also after
//! `kill -9`), and the executions say what happened.

use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

const DEEP: &str = r#"
id: deep
version: 1.0.0
requires: {fixture-hostile: ^1.0}
triggers:
  - {kind: webhook, source: deep}
instructions:
  - {id: act, op: CALL_ACTION, capability: fixture-hostile, action: deep, params: {depth: "event.depth"}}
"#;

const SLEEPY: &str = r#"
id: sleepy
version: 1.0.0
requires: {fixture-hostile: ^1.0}
triggers:
  - {kind: webhook, source: sleepy}
instructions:
  - {id: nap, op: CALL_ACTION, capability: fixture-hostile, action: sleep, params: {ms: "20000"}, timeout_ms: 200}
"#;

const FLOOD: &str = r#"
id: flood
version: 1.0.0
triggers:
  - {kind: plugin, source: fixture-flood, interval_ms: 100}
instructions:
  - {id: done, op: RETURN, expression: "event.n"}
"#;

fn finished(work: &Workdir, url: &str, id: &str) -> Value {
    eventually(&format!("execution {id} finished"), PATIENCE, || {
        work.execution(url, id).filter(|v| v["outcome"].is_object())
    })
}

fn kill_9(mut node: std::process::Child) {
    node.kill().expect("kill -9");
    node.wait().expect("reaped");
}

#[test]
fn a_deep_result_fails_its_execution_and_the_node_always_restarts() {
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.install(&url, "fixture-hostile", &[]);
    work.deploy(&url, DEEP);
    work.deploy(&url, PLAIN_RULE);
    // 127 levels: under the plugin host's JSON parser limit, past the executor's bound.
    let id = work
        .send(&url, "deep", "d-1", &json!({"depth": 127}))
        .expect("accepted");
    let view = finished(&work, &url, &id);
    assert_eq!(view["outcome"]["status"], "failed", "{view}");
    assert_eq!(view["outcome"]["class"], "invalid_output", "{view}");
    assert!(
        view["outcome"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("64 levels")),
        "{view}"
    );
    // A deep event is refused before it is journaled, with the limit named.
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    assert!(
        work.send(&url, "plain", "p-deep", &json!({"a": deep}))
            .is_none(),
        "a 100-deep event was accepted"
    );
    kill_9(node);

    // The node restarts on that journal, shows the execution and serves on.
    let (node, url) = work.start();
    let view = eventually("the node answers", PATIENCE, || work.execution(&url, &id));
    assert_eq!(view["outcome"]["class"], "invalid_output", "{view}");
    let id = work
        .send(&url, "plain", "p-1", &json!({"a": 41}))
        .expect("accepted");
    assert_eq!(finished(&work, &url, &id)["outcome"]["value"], 42);
    work.stop(node);
}

#[test]
fn a_sleeping_plugin_stops_at_its_deadline_and_others_run_meanwhile() {
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.install(&url, "fixture-hostile", &[]);
    work.deploy(&url, SLEEPY);
    work.deploy(&url, PLAIN_RULE);
    let sleepers: Vec<String> = (0..4)
        .map(|n| {
            work.send(&url, "sleepy", &format!("s-{n}"), &json!({}))
                .expect("accepted")
        })
        .collect();
    // A plain program runs while they sleep.
    let id = work
        .send(&url, "plain", "p-1", &json!({"a": 1}))
        .expect("accepted");
    assert_eq!(finished(&work, &url, &id)["outcome"]["value"], 2);
    for id in &sleepers {
        let view = finished(&work, &url, id);
        assert_eq!(view["outcome"]["status"], "failed", "{view}");
        // Its deadline, or the per-plugin limit while the others held the slot.
        let class = view["outcome"]["class"].as_str().unwrap_or("");
        assert!(class == "timeout" || class == "rate_limit", "{view}");
    }
    kill_9(node);
    let (node, url) = work.start();
    let id = work
        .send(&url, "plain", "p-2", &json!({"a": 2}))
        .expect("accepted after a restart");
    assert_eq!(finished(&work, &url, &id)["outcome"]["value"], 3);
    work.stop(node);
}

#[test]
fn a_flooding_source_journals_nothing_and_the_node_serves_on() {
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.install(&url, "fixture-flood", &[]);
    work.deploy(&url, FLOOD);
    work.deploy(&url, PLAIN_RULE);
    // Polls come and are refused (10,000 events for 100 asked) while a plain program runs.
    let id = work
        .send(&url, "plain", "p-1", &json!({"a": 1}))
        .expect("accepted");
    assert_eq!(finished(&work, &url, &id)["outcome"]["value"], 2);
    // Polls happen, and each is refused whole.
    let client = reqwest::blocking::Client::new();
    eventually("three refused polls", PATIENCE, || {
        let text = client
            .get(format!("{url}/metrics"))
            .bearer_auth(&work.admin)
            .send()
            .ok()?
            .text()
            .ok()?;
        let refused: f64 = text
            .lines()
            .find(|l| {
                l.starts_with("eyeflow_source_poll_failures_total")
                    && l.contains("fixture-flood")
                    && l.contains("invalid-output")
            })?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?;
        (refused >= 3.0).then_some(())
    });
    let counts = work.counts(&url).expect("counts");
    assert_eq!(
        counts["executions"], 1,
        "flood events were journaled: {counts}"
    );
    kill_9(node);
    let (node, url) = work.start();
    let counts = eventually("the node answers", PATIENCE, || work.counts(&url));
    assert_eq!(counts["executions"], 1, "{counts}");
    work.stop(node);
}
