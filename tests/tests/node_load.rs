//! Zero loss under a short load, on a real `eyeflow node` (durable, group commit): 16
//! keep-alive clients post events as fast as the node takes them for 3 s. Every 202 must
//! be one journaled execution that ran to its end with its own value; what the node
//! refused it answered 503 `overloaded` (never another failure); after a SIGTERM drain the
//! journal holds exactly the accepted executions, all finished, and the audit verifies.
//! (The load bench, `cargo bench -p eyeflow-runtime --bench load`, measures the same at
//! length; this is its correctness check, which CI runs.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir};
use serde_json::{Value, json};

const CLIENTS: usize = 16;
const LOAD: Duration = Duration::from_secs(3);
const PATIENCE: Duration = Duration::from_secs(120);

#[test]
fn every_event_the_node_accepts_under_load_runs_to_its_end() {
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.deploy(&url, PLAIN_RULE);
    let accepted: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let refused = Arc::new(Mutex::new(Vec::<u16>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (accepted, refused, stop) = (accepted.clone(), refused.clone(), stop.clone());
            let (url, token) = (url.clone(), work.operator.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let a = c as u64 * 1_000_000 + n;
                    let response = client
                        .post(format!("{url}/api/events/plain"))
                        .bearer_auth(&token)
                        .header("x-event-id", format!("load-{a}"))
                        .header("content-type", "application/json")
                        .body(json!({ "a": a }).to_string())
                        .send()
                        .expect("the node answers");
                    let status = response.status().as_u16();
                    let text = response.text().unwrap_or_default();
                    if status == 202 {
                        let answer: Value = serde_json::from_str(&text).expect("JSON");
                        let id = answer["routed"][0]["execution_id"]
                            .as_str()
                            .expect("an execution id")
                            .to_owned();
                        accepted.lock().expect("accepted").push((a, id));
                    } else {
                        refused.lock().expect("refused").push(status);
                    }
                }
            })
        })
        .collect();
    // The load lasts LOAD (a duration, not a wait for something to happen).
    std::thread::sleep(LOAD);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client");
    }
    let accepted = accepted.lock().expect("accepted").clone();
    let refused = refused.lock().expect("refused").clone();
    assert!(
        accepted.len() >= 100,
        "the node took work: {}",
        accepted.len()
    );
    assert!(
        refused.iter().all(|status| *status == 503),
        "a refusal other than 503 overloaded: {refused:?}"
    );
    eventually("every accepted execution finished", PATIENCE, || {
        work.counts(&url)
            .filter(|c| c["pending"] == 0 && c["finished"] == accepted.len())
    });
    for (a, id) in &accepted {
        let view = work.execution(&url, id).expect("the execution");
        assert_eq!(
            view["outcome"],
            json!({"status": "completed", "value": a + 1}),
            "{id}"
        );
    }
    work.stop(node);
    let summary = work.eyeflow(&["executions", "summary", "--data-dir", "data"]);
    let summary: Value = serde_json::from_str(summary.trim()).expect("summary JSON");
    assert_eq!(summary["executions"], accepted.len(), "{summary}");
    assert_eq!(summary["finished"], accepted.len(), "{summary}");
    let verified = work.eyeflow(&["audit", "verify", "--data-dir", "data"]);
    assert!(verified.contains("verified"), "{verified}");
}
