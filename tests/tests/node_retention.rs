//! Retention on a real `eyeflow node` (`[retention]` with a window of a few seconds): old
//! executions answer 404 `expired`, redeliveries inside the dedupe window are refused, a
//! paused execution survives, the journal stops growing under a steady stream; and a node
//! killed (`kill -9`) while it deletes loses nothing it keeps.

use std::path::Path;
use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// An action held for an operator's approval: its execution pauses.
const GATED: &str = r#"
id: gated
version: 1.0.0
requires: {valve-sim: ^1.0}
triggers:
  - {kind: webhook, source: gated}
instructions:
  - {id: open, op: CALL_ACTION, capability: valve-sim, action: open, params: {valve: "'V-7'"}, requires_human_validation: true}
"#;

/// Posts `body` to webhook `source` as event `event_id`: the first routed answer
/// (`execution_id`, `duplicate`).
fn post(url: &str, work: &Workdir, source: &str, event_id: &str, body: &Value) -> Option<Value> {
    let response = reqwest::blocking::Client::new()
        .post(format!("{url}/api/events/{source}"))
        .bearer_auth(&work.operator)
        .header("x-event-id", event_id)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .ok()?;
    let answer: Value = serde_json::from_str(&response.text().ok()?).ok()?;
    Some(answer["routed"][0].clone())
}

fn status(work: &Workdir, url: &str, id: &str) -> Option<String> {
    work.execution(url, id)?["status"]
        .as_str()
        .map(str::to_owned)
}

fn error_code(work: &Workdir, url: &str, id: &str) -> Option<String> {
    work.execution(url, id)?["error"]["code"]
        .as_str()
        .map(str::to_owned)
}

/// Bytes under `dir`.
fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_dir() => size(&entry.path()),
                Ok(meta) => meta.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

#[test]
fn old_executions_expire_paused_ones_stay_and_redeliveries_are_refused() {
    let work =
        Workdir::new("[retention]\nexecutions_secs = 2\ndedupe_secs = 600\ninterval_ms = 200\n");
    let (node, url) = work.start();
    work.install(&url, "valve-sim", &[]);
    work.deploy(&url, GATED);
    work.deploy(&url, PLAIN_RULE);

    let paused = work
        .send(&url, "gated", "gated-1", &json!({}))
        .expect("accepted");
    eventually("the gated execution waits", PATIENCE, || {
        (status(&work, &url, &paused)? == "awaiting_approval").then_some(())
    });
    let old = work
        .send(&url, "plain", "old", &json!({"a": 1}))
        .expect("accepted");

    // A steady stream: the old execution expires while new ones keep coming.
    let mut sent = 0u64;
    let mut stream = || {
        sent += 1;
        work.send(&url, "plain", &format!("s-{sent}"), &json!({"a": sent}))
    };
    eventually("the old execution expires", PATIENCE, || {
        stream();
        (error_code(&work, &url, &old)? == "expired").then_some(())
    });
    let answer = work.execution(&url, &old).expect("an answer");
    println!("an expired execution: {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("retention")),
        "{answer}"
    );
    assert_eq!(
        error_code(&work, &url, "x9999999999999999").as_deref(),
        Some("not_found"),
        "an id never handed out is not found, not expired"
    );
    // Inside the dedupe window a redelivery is refused, even once its execution is gone.
    let again = post(&url, &work, "plain", "old", &json!({"a": 1})).expect("an answer");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["execution_id"], old.as_str(), "{again}");
    // The paused execution outlived the window, and still waits.
    assert_eq!(
        status(&work, &url, &paused).as_deref(),
        Some("awaiting_approval")
    );

    // The journal stops growing under the stream: what it keeps stays bounded while the
    // sent count grows. (The audit chain still grows: its compaction is separate work.)
    let data = work.data();
    let mut samples = Vec::new();
    let (kept, total) = eventually("the journal stays bounded", PATIENCE * 2, || {
        let id = stream()?;
        let seq: u64 = id.trim_start_matches('x').parse().ok()?;
        if !seq.is_multiple_of(100) {
            return None;
        }
        let counts = work.counts(&url)?;
        let kept = counts["executions"].as_u64()?;
        let bytes = size(&data);
        println!(
            "accepted {seq}: kept {kept} executions, {} steps; data directory {bytes} bytes",
            counts["steps"]
        );
        samples.push((seq, bytes));
        (seq >= 600 && kept * 3 < seq).then_some((kept, seq))
    });
    if let [.., (s0, b0), (s1, b1)] = samples[..] {
        println!(
            "{} bytes per accepted execution over the last {} (retention on; audit kept)",
            b1.saturating_sub(b0) / (s1 - s0).max(1),
            s1 - s0
        );
    }
    println!("kept {kept} of {total} executions");
    let deleted = work
        .metric(&url, "eyeflow_retention_deleted_total{kind=\"executions\"}")
        .expect("the retention metric");
    assert!(deleted >= 1.0, "{deleted}");
    let age = work
        .metric(&url, "eyeflow_retention_oldest_finished_age_seconds")
        .expect("the age gauge");
    println!("deleted {deleted} executions; oldest kept finished {age} s ago");

    // Approved, the paused execution finishes, and then expires too.
    let approval = reqwest::blocking::Client::new()
        .post(format!("{url}/api/executions/{paused}/approvals/open"))
        .bearer_auth(&work.operator)
        .header("content-type", "application/json")
        .body(r#"{"approve": true}"#)
        .send()
        .expect("approve");
    assert!(approval.status().is_success(), "{}", approval.status());
    eventually("the approved execution expires", PATIENCE, || {
        stream();
        (error_code(&work, &url, &paused)? == "expired").then_some(())
    });
    work.stop(node);
}

#[test]
fn a_node_killed_while_it_deletes_loses_nothing_it_keeps() {
    const OLD: u64 = 600;
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.install(&url, "valve-sim", &[]);
    work.deploy(&url, GATED);
    work.deploy(&url, PLAIN_RULE);
    let paused = work
        .send(&url, "gated", "gated-1", &json!({}))
        .expect("accepted");
    let old: Vec<String> = (0..OLD)
        .map(|n| {
            work.send(&url, "plain", &format!("old-{n}"), &json!({"a": n}))
                .expect("accepted")
        })
        .collect();
    eventually("every old execution finished", PATIENCE, || {
        let counts = work.counts(&url)?;
        (counts["finished"].as_u64()? == OLD && counts["pending"].as_u64()? == 1).then_some(())
    });
    work.stop(node);

    // A one-second window deleting four keys per write, ten executions per pass.
    let config = work.path().join("node.toml");
    let plain = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "{plain}\n[retention]\nexecutions_secs = 1\ninterval_ms = 50\nbatch_keys = 4\nexecutions_per_pass = 10\n"
        ),
    )
    .expect("config");
    let finished_at = eyeflow_runtime::now_ms();
    eventually("the old executions are past the window", PATIENCE, || {
        (eyeflow_runtime::now_ms() > finished_at + 1500).then_some(())
    });
    let (node, url) = work.start();
    let fresh: Vec<String> = (0..20)
        .map(|n| {
            work.send(&url, "plain", &format!("fresh-{n}"), &json!({"a": n}))
                .expect("accepted")
        })
        .collect();
    let left = eventually("deletion is under way", PATIENCE, || {
        let kept = work.counts(&url)?["executions"].as_u64()?;
        (kept < OLD).then_some(kept)
    });
    let mut node = node;
    node.kill().expect("kill -9");
    node.wait().expect("reaped");
    println!("killed with {left} executions kept of {}", OLD + 21);

    // Back without retention: what was kept reads back whole, nothing is pending but the
    // paused execution, and the audit chain verifies.
    std::fs::write(&config, plain).expect("config");
    let (node, url) = work.start();
    for id in &fresh {
        let view = eventually("a kept execution reads back", PATIENCE, || {
            work.execution(&url, id)
                .filter(|v| v["status"] == "completed")
        });
        assert_eq!(view["steps"].as_array().map(Vec::len), Some(2), "{view}");
    }
    assert_eq!(
        status(&work, &url, &paused).as_deref(),
        Some("awaiting_approval")
    );
    let (mut expired, mut completed) = (0, 0);
    for id in &old {
        let view = work.execution(&url, id).expect("an answer");
        match (view["status"].as_str(), view["error"]["code"].as_str()) {
            (Some("completed"), _) => completed += 1,
            (_, Some("expired")) => expired += 1,
            _ => panic!("{id} is neither finished nor expired: {view}"),
        }
    }
    println!("after the restart: {expired} old executions expired, {completed} kept");
    let counts = work.counts(&url).expect("counts");
    assert_eq!(counts["pending"], 1, "only the paused execution: {counts}");
    work.stop(node);
    let verified = work.eyeflow(&["audit", "verify", "--data-dir", "data"]);
    assert!(verified.contains("verified"), "{verified}");
}

/// Sets a valve through valve-sim, which keeps an `apply_once` record per idempotency key.
const ACT: &str = r#"
id: act
version: 1.0.0
requires: {valve-sim: ^1.0}
triggers:
  - {kind: webhook, source: act}
instructions:
  - {id: set, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: "'V-9'", position: "int(event.a) % 100"}}
"#;

/// The plugin KV keys under `prefix` in the stopped node's store.
fn plugin_keys(data: &Path, prefix: &str) -> Vec<String> {
    let store = eyeflow_runtime::store::EmbeddedStore::open(data).expect("store");
    store
        .scan(eyeflow_runtime::store::Space::PluginKv, prefix.as_bytes())
        .expect("scan")
        .into_iter()
        .map(|(key, _)| String::from_utf8_lossy(&key).into_owned())
        .collect()
}

#[test]
fn a_deleted_execution_takes_its_plugins_apply_once_records_along() {
    let work = Workdir::new("[retention]\nexecutions_secs = 1\ninterval_ms = 200\n");
    let (node, url) = work.start();
    work.install(&url, "valve-sim", &[]);
    work.deploy(&url, ACT);
    let ids: Vec<String> = (0..120)
        .map(|i| {
            work.send(&url, "act", &format!("a-{i}"), &json!({"a": i}))
                .expect("accepted")
        })
        .collect();
    for id in &ids {
        eventually("the action ran", PATIENCE, || {
            (status(&work, &url, id)? == "completed").then_some(())
        });
    }
    // Every execution but the newest goes (the newest is always kept).
    let last = ids.last().expect("sent");
    eventually("older executions expire", PATIENCE, || {
        ids[..ids.len() - 1]
            .iter()
            .all(|id| error_code(&work, &url, id).as_deref() == Some("expired"))
            .then_some(())
    });
    work.stop(node);

    let once = plugin_keys(&work.data(), "valve-sim\0once/");
    println!("apply_once records left: {once:?}");
    assert!(
        once.iter()
            .any(|key| key.contains(&format!("once/{last}/"))),
        "the kept execution's record is where retention looks for it: {once:?}"
    );
    for id in &ids[..ids.len() - 1] {
        assert!(
            !once.iter().any(|key| key.contains(&format!("once/{id}/"))),
            "{id} expired but its apply_once record stayed"
        );
    }
}
