//! The supervision tree of a real node: listed by `GET /api/actors` (and `eyeflow actors`),
//! the service actors (arbiter shards, fallback engine, memory tiers) and one actor per
//! instruction of each deployed program; actors crashed through `POST /api/actors/restart`
//! under a steady stream of events come back, and every event accepted meanwhile ends in
//! exactly one finished execution; the audit chain verifies.

use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// Every execution reads and writes node memory, holding a resource key while it writes,
/// and calls an endpoint that refuses connections (`{closed}`): it fails, waits its retry
/// on the fallback engine's timer, fails again and takes a fallback value.
fn steady_rule(closed: u16) -> String {
    format!(
        r#"
id: steady
version: 1.0.0
triggers:
  - {{kind: webhook, source: steady}}
instructions:
  - {{id: last, op: LOAD, scope: node, key: steady/last, default: '0', next: keep}}
  - {{id: keep, op: STORE, scope: node, key: steady/last, expression: "event.a", resource_key: memory/steady, next: call}}
  - id: call
    op: CALL_API
    http: {{method: GET, url: "http://127.0.0.1:{closed}/none"}}
    timeout_ms: 2000
    retry: {{max_retries: 1, backoff_ms: 20}}
    fallback: {{strategy: value, value: '0'}}
    next: done
  - {{id: done, op: RETURN, expression: "event.a + 1"}}
"#
    )
}

fn tree(work: &Workdir, url: &str) -> Vec<Value> {
    let text = work.eyeflow(&["actors", "--node", url, "--token", &work.admin]);
    serde_json::from_str::<Value>(&text)
        .expect("a JSON array")
        .as_array()
        .cloned()
        .expect("array")
}

/// `eyeflow actors --restart PATH` against the node at `url`.
fn crash(work: &Workdir, url: &str, path: &str) {
    work.eyeflow(&[
        "actors",
        "--node",
        url,
        "--token",
        &work.admin,
        "--restart",
        path,
    ]);
}

fn restarts(tree: &[Value], path: &str) -> Option<u64> {
    tree.iter()
        .find(|a| a["path"] == path)
        .and_then(|a| a["restarts"].as_u64())
}

#[test]
fn crashed_actors_come_back_and_no_accepted_event_is_lost() {
    let work = Workdir::new("");
    std::fs::write(
        work.path().join("node.toml"),
        "[node]\ndata_dir = \"data\"\nworkers = 2\nhttp_allow = [\"127.0.0.1\"]\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (node, url) = work.start();
    work.deploy(&url, PLAIN_RULE);
    let program = "node/registry/plain@1.0.0";
    let instruction = "node/registry/plain@1.0.0/sum";
    work.deploy(&url, &steady_rule(closed));
    let listed = tree(&work, &url);
    let kinds: Vec<(&str, &str)> = listed
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap_or(""),
                a["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // One arbiter shard per worker.
    let arbiters = ["node/arbiter/0", "node/arbiter/1"];
    let services = [
        ("node/fallback", "fallback"),
        ("node/memory/node", "memory"),
        ("node/memory/cluster", "memory"),
    ];
    let mut expected = vec![("node", "node")];
    expected.extend(arbiters.map(|path| (path, "arbiter")));
    expected.extend(services);
    expected.extend([
        ("node/registry", "registry"),
        (program, "program"),
        (instruction, "instruction"),
        ("node/registry/plain@1.0.0/done", "instruction"),
        ("node/registry/steady@1.0.0", "program"),
        ("node/registry/steady@1.0.0/last", "instruction"),
        ("node/registry/steady@1.0.0/keep", "instruction"),
        ("node/registry/steady@1.0.0/call", "instruction"),
        ("node/registry/steady@1.0.0/done", "instruction"),
    ]);
    assert_eq!(kinds, expected);
    let sum = listed
        .iter()
        .find(|a| a["path"] == instruction)
        .expect("listed");
    assert_eq!(
        (
            &sum["program"],
            &sum["version"],
            &sum["index"],
            &sum["opcode"]
        ),
        (&json!("plain"), &json!("1.0.0"), &json!(0), &json!("EVAL")),
        "{sum}"
    );

    // A steady stream of events while an instruction actor, the program actor, the
    // registry, every arbiter shard, the fallback engine and both memory tiers are crashed
    // in turn.
    let streaming = std::sync::atomic::AtomicBool::new(true);
    let accepted = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let mut accepted = Vec::new();
            let mut n = 0u32;
            while streaming.load(std::sync::atomic::Ordering::SeqCst) || n < 30 {
                let source = if n.is_multiple_of(2) {
                    "plain"
                } else {
                    "steady"
                };
                if let Some(id) = work.send(&url, source, &format!("e-{n}"), &json!({"a": n})) {
                    accepted.push((n, id));
                }
                n += 1;
            }
            accepted
        });
        crash(&work, &url, instruction);
        eventually("the instruction actor restarted", PATIENCE, || {
            (restarts(&tree(&work, &url), instruction)? == 1).then_some(())
        });
        crash(&work, &url, program);
        eventually(
            "the program actor restarted with new instruction actors",
            PATIENCE,
            || {
                let listed = tree(&work, &url);
                (restarts(&listed, program)? == 1 && restarts(&listed, instruction)? == 0)
                    .then_some(())
            },
        );
        crash(&work, &url, "node/registry");
        eventually("the registry restarted with its programs", PATIENCE, || {
            let listed = tree(&work, &url);
            (restarts(&listed, "node/registry")? == 1 && restarts(&listed, instruction).is_some())
                .then_some(())
        });
        for service in arbiters
            .iter()
            .copied()
            .chain(services.iter().map(|(path, _)| *path))
        {
            crash(&work, &url, service);
            eventually(&format!("{service} restarted"), PATIENCE, || {
                (restarts(&tree(&work, &url), service)? == 1).then_some(())
            });
        }
        streaming.store(false, std::sync::atomic::Ordering::SeqCst);
        sender.join().expect("the sender")
    });
    assert!(
        accepted.len() >= 30,
        "events were accepted: {}",
        accepted.len()
    );
    for (n, id) in &accepted {
        let view = eventually(&format!("execution {id} finished"), PATIENCE, || {
            work.execution(&url, id)
                .filter(|v| v["outcome"].is_object())
        });
        assert_eq!(view["outcome"]["value"], json!(n + 1), "{view}");
    }
    let counts = work.counts(&url).expect("counts");
    assert_eq!(counts["executions"], accepted.len(), "{counts}");
    assert_eq!(counts["finished"], accepted.len(), "{counts}");

    // The root cannot be restarted, an unknown path is not found.
    let client = reqwest::blocking::Client::new();
    let restart = |path: &str| {
        client
            .post(format!("{url}/api/actors/restart"))
            .bearer_auth(&work.admin)
            .header("content-type", "application/json")
            .body(json!({ "path": path }).to_string())
            .send()
            .expect("answer")
            .status()
            .as_u16()
    };
    assert_eq!(restart("node"), 409);
    assert_eq!(restart("node/registry/nope@1.0.0"), 404);
    assert_eq!(restart("node/registry/plain@1.0.0/nope"), 404);
    work.stop(node);
    // The audit chain of all that verifies.
    let verified = work.eyeflow(&["audit", "verify", "--data-dir", "data"]);
    assert!(verified.contains("audit chain verified"), "{verified}");
}

#[test]
fn an_actor_crashing_past_its_restart_intensity_stops_the_node_and_a_restart_resumes() {
    let work = Workdir::new("");
    // One restart allowed per minute (the default is 3 in 10 s).
    std::fs::write(
        work.path().join("node.toml"),
        "[node]\ndata_dir = \"data\"\nmax_restarts = 1\nrestart_window_ms = 60000\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let (mut node, url) = work.start();
    work.deploy(&url, PLAIN_RULE);
    let before = work
        .send(&url, "plain", "before", &json!({"a": 1}))
        .expect("accepted");
    // The first crash is restarted; the second within the window escalates to the node
    // supervisor, which stops, and the process with it.
    crash(&work, &url, "node/fallback");
    eventually("the fallback engine restarted", PATIENCE, || {
        (restarts(&tree(&work, &url), "node/fallback")? == 1).then_some(())
    });
    crash(&work, &url, "node/fallback");
    let exit = eventually("the node process stops", PATIENCE, || {
        node.try_wait().expect("wait")
    });
    assert!(!exit.success(), "an escalation is a failure exit: {exit}");
    // Started again from its data directory, it serves, and what it had accepted ended.
    let (node, url) = work.start();
    let view = eventually("the earlier execution finished", PATIENCE, || {
        work.execution(&url, &before)
            .filter(|v| v["outcome"].is_object())
    });
    assert_eq!(view["outcome"]["value"], json!(2), "{view}");
    let after = work
        .send(&url, "plain", "after", &json!({"a": 5}))
        .expect("accepted");
    let view = eventually("a new execution finished", PATIENCE, || {
        work.execution(&url, &after)
            .filter(|v| v["outcome"].is_object())
    });
    assert_eq!(view["outcome"]["value"], json!(6), "{view}");
    work.stop(node);
}

#[test]
fn an_instruction_actor_crash_looping_restarts_its_program_and_spares_the_others() {
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.deploy(&url, PLAIN_RULE);
    work.deploy(
        &url,
        &PLAIN_RULE
            .replace("id: plain", "id: other")
            .replace("source: plain", "source: other"),
    );
    let program = "node/registry/plain@1.0.0";
    let instruction = "node/registry/plain@1.0.0/sum";
    let streaming = std::sync::atomic::AtomicBool::new(true);
    let accepted = std::thread::scope(|scope| {
        // The other program's events flow all along.
        let sender = scope.spawn(|| {
            let mut accepted = Vec::new();
            let mut n = 0u32;
            while streaming.load(std::sync::atomic::Ordering::SeqCst) || n < 20 {
                if let Some(id) = work.send(&url, "other", &format!("o-{n}"), &json!({"a": n})) {
                    accepted.push((n, id));
                }
                n += 1;
            }
            accepted
        });
        // Three restarts of the instruction actor are within the program actor's budget
        // (3 in 10 s); the fourth crash fails the program actor, which the registry
        // restarts with new instruction actors.
        for n in 1..=3 {
            crash(&work, &url, instruction);
            eventually(&format!("instruction restart {n}"), PATIENCE, || {
                (restarts(&tree(&work, &url), instruction)? == n).then_some(())
            });
        }
        crash(&work, &url, instruction);
        eventually("the program actor restarted", PATIENCE, || {
            let listed = tree(&work, &url);
            (restarts(&listed, program)? == 1 && restarts(&listed, instruction)? == 0).then_some(())
        });
        streaming.store(false, std::sync::atomic::Ordering::SeqCst);
        sender.join().expect("the sender")
    });
    for (n, id) in &accepted {
        let view = eventually(&format!("execution {id} finished"), PATIENCE, || {
            work.execution(&url, id)
                .filter(|v| v["outcome"].is_object())
        });
        assert_eq!(view["outcome"]["value"], json!(n + 1), "{view}");
    }
    // The restarted program serves again.
    let id = work
        .send(&url, "plain", "after", &json!({"a": 41}))
        .expect("accepted");
    let view = eventually("the restarted program ran", PATIENCE, || {
        work.execution(&url, &id)
            .filter(|v| v["outcome"].is_object())
    });
    assert_eq!(view["outcome"]["value"], json!(42), "{view}");
    assert_eq!(
        restarts(&tree(&work, &url), "node/registry"),
        Some(0),
        "the registry itself was not restarted"
    );
    work.stop(node);
}
