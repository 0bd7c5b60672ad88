//! Effects across `kill -9` of a real `eyeflow node` with the real valve-sim plugin: a resumed
//! execution keeps the decisions it acted on, and an actuator applies each idempotency key
//! once — checked against what valve-sim itself recorded, the journal and the audit chain.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use eyeflow_actors::ports::{Fallback, StepOutcome};
use eyeflow_actors::routing::event_key;
use eyeflow_ir::pb::TriggerKind;
use eyeflow_runtime::audit::{AuditConfig, FjallAudit};
use eyeflow_runtime::journal::FjallJournal;
use eyeflow_runtime::store::{Durability, EmbeddedStore, Space};
use eyeflow_tests::eventually;
use eyeflow_tests::node::Workdir;
use serde_json::{Value, json};

/// How long a node may take to finish what it was given.
const PATIENCE: Duration = Duration::from_secs(120);

/// valve-sim's KV, as the plugin host stores it: `valve-sim\0<key>`.
fn valve_sim_kv(store: &EmbeddedStore) -> BTreeMap<String, Value> {
    store
        .scan(Space::PluginKv, b"valve-sim\0")
        .expect("scan the plugin KV")
        .into_iter()
        .map(|(key, value)| {
            let key = String::from_utf8_lossy(&key["valve-sim\0".len()..]).into_owned();
            (key, serde_json::from_slice(&value).unwrap_or(Value::Null))
        })
        .collect()
}

/// An HTTP server on 127.0.0.1 that leaves its first request unanswered (and says so on
/// the channel) and answers every later one `{"ok": true}`.
fn slow_server() -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (held, first) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept: Vec<TcpStream> = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            if kept.is_empty() {
                kept.push(stream);
                let _ = held.send(());
                continue;
            }
            let body = r#"{"ok": true}"#;
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, first)
}

const OPEN: &str = r#"
id: open
version: 1.0.0
requires: {valve-sim: ^1.0}
triggers:
  - {kind: webhook, source: open}
instructions:
  - {id: open, op: CALL_ACTION, capability: valve-sim, action: open, params: {valve: "'V-101'"}}
"#;

/// The issue's rule: it reads the valve it then acts on, and waits on a slow read after
/// acting.
const GUARD: &str = r#"
id: guard
version: 1.0.0
requires: {valve-sim: ^1.0, http-json: ^1.0}
triggers:
  - {kind: webhook, source: guard}
instructions:
  - {id: read, op: LOAD_RESOURCE, capability: valve-sim, params: {valve: "'V-101'"}, next: high}
  - {id: high, op: BRANCH, condition: "read.position > 40", then: act, else: calm}
  - {id: act, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: "'V-101'", position: "40"}, next: slow}
  - {id: slow, op: LOAD_RESOURCE, capability: http-json, params: {url: "'SLOW_URL'"}, next: acted}
  - {id: acted, op: RETURN, expression: "'acted'"}
  - {id: calm, op: RETURN, expression: "'no action'"}
"#;

/// Waits until execution `id` has finished; its view.
fn finished(work: &Workdir, url: &str, id: &str) -> Value {
    eventually(&format!("execution {id} finished"), PATIENCE, || {
        work.execution(url, id).filter(|v| v["outcome"].is_object())
    })
}

#[test]
fn a_node_killed_after_acting_resumes_on_the_arm_it_took_and_acts_once() {
    let (port, first_slow_read) = slow_server();
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.install(&url, "valve-sim", &[]);
    work.install(&url, "http-json", &[&format!("127.0.0.1:{port}")]);
    work.deploy(&url, OPEN);
    work.deploy(
        &url,
        &GUARD.replace("SLOW_URL", &format!("http://127.0.0.1:{port}/slow")),
    );
    let opened = work
        .send(&url, "open", "open-1", &json!({}))
        .expect("accepted");
    finished(&work, &url, &opened);
    let guard = work
        .send(&url, "guard", "guard-1", &json!({}))
        .expect("accepted");
    // Killed while the slow read after the action waits.
    first_slow_read
        .recv_timeout(PATIENCE)
        .expect("the slow read started");
    let mut node = node;
    node.kill().expect("kill -9");
    node.wait().expect("reaped");

    let (node, url) = work.start();
    let view = finished(&work, &url, &guard);
    assert_eq!(
        view["outcome"],
        json!({"status": "completed", "value": "acted"}),
        "it finishes on the arm it took: {view}"
    );
    let act: Vec<(String, Value, Value)> = view["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["instruction_id"] == "act")
        .map(|s| {
            (
                s["outcome"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                s["attempt"].clone(),
                s["fallback"].clone(),
            )
        })
        .collect();
    assert_eq!(
        act,
        [
            ("started".to_owned(), json!(1), Value::Null),
            ("done".to_owned(), json!(1), json!("reissued")),
        ],
        "the journal shows the action it performed, once: {view}"
    );
    let audited: Vec<&str> = view["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["instruction_id"] == "act")
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(audited, ["started", "done"], "{view}");
    work.stop(node);

    let store = EmbeddedStore::open(&work.data()).expect("store");
    let kv = valve_sim_kv(&store);
    let state = &kv["state/V-101"];
    assert_eq!(state["position"], 40, "{state}");
    assert_eq!(state["actions"], 2, "open, then set once: {state}");
    drop(store);
    let verified = work.eyeflow(&["audit", "verify", "--data-dir", "data"]);
    assert!(verified.contains("verified"), "{verified}");
}

/// Sets a valve to the event's target when it is elsewhere: it reads what it acts on. One
/// resource key for the bank of valves: actions never overlap (valve-sim counts them per
/// valve with a read and a write).
const FOLLOW: &str = r#"
id: follow
version: 1.0.0
requires: {valve-sim: ^1.0}
triggers:
  - {kind: webhook, source: follow}
instructions:
  - {id: read, op: LOAD_RESOURCE, capability: valve-sim, params: {valve: event.valve}, next: moved}
  - {id: moved, op: BRANCH, condition: "read.position != event.target", then: act, else: still}
  - {id: act, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: event.valve, position: event.target}, resource_key: valve/bank, next: check}
  - {id: check, op: LOAD_RESOURCE, capability: valve-sim, params: {valve: event.valve}, next: acted}
  - {id: acted, op: RETURN, expression: "{'acted': true, 'position': check.position}"}
  - {id: still, op: RETURN, expression: "{'acted': false}"}
"#;

/// Sets two valves of two banks at once: parallel branches, each action holding its bank.
const PAIR: &str = r#"
id: pair
version: 1.0.0
requires: {valve-sim: ^1.0}
triggers:
  - {kind: webhook, source: pair}
instructions:
  - {id: start, op: EVAL, expression: "event.target", next: [act_a, act_b]}
  - {id: act_a, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: event.a, position: event.target}, resource_key: valve/bank-a, next: joined}
  - {id: act_b, op: CALL_ACTION, capability: valve-sim, action: set, params: {valve: event.b, position: event.target}, resource_key: valve/bank-b, next: joined}
  - {id: joined, op: MERGE, next: done}
  - {id: done, op: RETURN, expression: "{'a': act_a, 'b': act_b}"}
"#;

/// Rounds of load, each ended by `kill -9`.
const ROUNDS: usize = 5;
/// Clients posting at once.
const CLIENTS: usize = 4;
/// Valves the events spread over.
const VALVES: u64 = 6;

/// One kill -9 campaign: a rule, its program id (also its webhook source), the event body
/// of client `c`'s `n`th event in a round, and its actions with the event field that names
/// each one's valve.
struct Campaign {
    rule: &'static str,
    program: &'static str,
    body: fn(usize, u64, usize) -> Value,
    actions: &'static [(&'static str, &'static str)],
}

#[test]
fn kill_9_campaign_every_applied_action_is_journaled_and_audited_once() {
    campaign(&Campaign {
        rule: FOLLOW,
        program: "follow",
        body: |c, n, round| {
            json!({
                "valve": format!("V-{}", (n * 7 + c as u64) % VALVES),
                "target": (n * 13 + round as u64 * 29) % 101,
            })
        },
        actions: &[("act", "valve")],
    });
}

#[test]
fn kill_9_campaign_on_parallel_actions_applies_each_once() {
    campaign(&Campaign {
        rule: PAIR,
        program: "pair",
        body: |c, n, round| {
            json!({
                "a": format!("A-{}", (n + c as u64) % 3),
                "b": format!("B-{}", (n * 5 + c as u64) % 3),
                "target": (n * 13 + round as u64 * 29) % 101,
            })
        },
        actions: &[("act_a", "a"), ("act_b", "b")],
    });
}

fn campaign(campaign: &Campaign) {
    let work = Workdir::new("");
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    for round in 0..ROUNDS {
        let (mut node, url) = work.start();
        if round == 0 {
            work.install(&url, "valve-sim", &[]);
            work.deploy(&url, campaign.rule);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (stop, sent, acknowledged) = (stop.clone(), sent.clone(), acknowledged.clone());
                let (url, token) = (url.clone(), work.operator.clone());
                let (body, program) = (campaign.body, campaign.program);
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = format!("r{round}-c{c}-{n}");
                        let response = client
                            .post(format!("{url}/api/events/{program}"))
                            .bearer_auth(&token)
                            .header("x-event-id", &id)
                            .header("content-type", "application/json")
                            .body(body(c, n, round).to_string())
                            .send();
                        let Ok(response) = response else { continue };
                        if response.status().as_u16() == 202
                            && let Ok(answer) = response
                                .text()
                                .map(|t| serde_json::from_str::<Value>(&t).unwrap_or_default())
                            && let Some(execution) = answer["routed"][0]["execution_id"].as_str()
                        {
                            acknowledged
                                .lock()
                                .expect("acknowledged")
                                .insert(id, execution.to_owned());
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        // Kill it once it has acknowledged some events in this round, while clients post.
        let goal = 40 + 25 * round as u64;
        eventually("events acknowledged", PATIENCE, || {
            (sent.load(Ordering::Relaxed) >= goal).then_some(())
        });
        node.kill().expect("kill -9");
        node.wait().expect("reaped");
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().expect("client");
        }
    }

    // The last start resumes what the last kill interrupted. Some events were accepted
    // (journaled) just before a kill took their 202 with it: they run too.
    let (node, url) = work.start();
    eventually("every accepted event finished", PATIENCE, || {
        work.counts(&url)
            .filter(|c| c["pending"] == 0 && c["finished"] == c["executions"])
    });
    work.stop(node);
    check_effects(
        &work.data(),
        &acknowledged.lock().expect("acknowledged"),
        campaign.program,
        campaign.actions,
    );
    let verified = work.eyeflow(&["audit", "verify", "--data-dir", "data"]);
    assert!(verified.contains("verified"), "{verified}");
}

/// Compares what valve-sim applied with the journal and the audit chain.
fn check_effects(
    data: &Path,
    acknowledged: &BTreeMap<String, String>,
    program: &str,
    actions: &[(&str, &str)],
) {
    let store = EmbeddedStore::open(data).expect("store");
    let journal = FjallJournal::open(store.clone(), Durability::Sync).expect("journal");
    let audit = FjallAudit::open(store.clone(), AuditConfig::default()).expect("audit");
    // Every acknowledged event ran once, to its end.
    for (event, execution) in acknowledged {
        assert_eq!(
            journal
                .execution_of_event(&event_key(TriggerKind::Webhook, program, event, program))
                .expect("index")
                .as_deref(),
            Some(execution.as_str()),
            "event {event}"
        );
    }
    let counts = journal.counts().expect("counts");
    assert_eq!(counts.pending, 0);
    assert!(counts.executions >= acknowledged.len() as u64);
    let executions: Vec<String> = store
        .scan(Space::JournalExecutions, b"")
        .expect("executions")
        .into_iter()
        .map(|(id, _)| String::from_utf8_lossy(&id).into_owned())
        .collect();
    assert_eq!(executions.len() as u64, counts.executions);

    // What valve-sim applied, by idempotency key, and each valve's count of actions.
    let kv = valve_sim_kv(&store);
    let applied: BTreeSet<String> = kv
        .keys()
        .filter_map(|k| k.strip_prefix("once/").map(str::to_owned))
        .collect();
    let mut per_valve: BTreeMap<String, u64> = BTreeMap::new();
    let mut journaled = BTreeSet::new();
    let mut reissued = 0;
    for execution in &executions {
        let (event, steps, outcome) = journal
            .execution(execution)
            .expect("read")
            .expect("journaled");
        assert!(outcome.is_some(), "{execution} finished");
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s.outcome, StepOutcome::Ambiguous { .. })),
            "valve-sim declares reissue: nothing is ambiguous"
        );
        let entries = audit.of_execution(execution).expect("audit");
        for (action, field) in actions {
            let done: Vec<_> = steps
                .iter()
                .filter(|s| {
                    s.instruction_id == *action && matches!(s.outcome, StepOutcome::Done { .. })
                })
                .collect();
            assert!(
                done.len() <= 1,
                "{execution}: one result for its action {action}: {steps:?}"
            );
            let audited: Vec<&str> = entries
                .iter()
                .filter(|e| e.entry.instruction_id == *action)
                .map(|e| e.entry.outcome.as_str())
                .collect();
            if let Some(step) = done.first() {
                reissued += usize::from(step.fallback.map(Fallback::as_str) == Some("reissued"));
                let key = format!("{execution}/{action}/{}", step.attempt);
                assert!(
                    applied.contains(&key),
                    "{key} journaled as done but never applied"
                );
                journaled.insert(key);
                *per_valve
                    .entry(event.payload[field].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
                assert_eq!(
                    audited.iter().filter(|o| **o == "done").count(),
                    1,
                    "{execution}: one audited result for {action}: {audited:?}"
                );
            } else {
                assert!(
                    audited.iter().all(|o| *o != "done"),
                    "{execution}: no {action}, none audited: {audited:?}"
                );
            }
        }
        // One audit entry per journaled step, never two.
        assert_eq!(
            entries.len(),
            steps.len(),
            "{execution}: audit and journal agree"
        );
    }
    assert_eq!(
        applied, journaled,
        "every action valve-sim applied is one journaled and audited step"
    );
    eprintln!(
        "campaign: {} executions ({} acknowledged), {} actions applied, {reissued} re-issued after a kill",
        executions.len(),
        acknowledged.len(),
        applied.len()
    );
    for (valve, actions) in per_valve {
        assert_eq!(
            kv[&format!("state/{valve}")]["actions"],
            actions,
            "{valve}: applied exactly once per key"
        );
    }
}
