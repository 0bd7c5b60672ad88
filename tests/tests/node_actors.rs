//! The supervision tree of a real node: listed by `GET /api/actors` (and `eyeflow actors`),
//! one actor per instruction of each deployed program; actors crashed through
//! `POST /api/actors/restart` under a steady stream of events come back, and every event
//! accepted meanwhile ends in exactly one finished execution; the audit chain verifies.

use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

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
    let (node, url) = work.start();
    work.deploy(&url, PLAIN_RULE);
    let program = "node/registry/plain@1.0.0";
    let instruction = "node/registry/plain@1.0.0/sum";
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
    assert_eq!(
        kinds,
        [
            ("node", "node"),
            ("node/registry", "registry"),
            (program, "program"),
            (instruction, "instruction"),
            ("node/registry/plain@1.0.0/done", "instruction"),
        ]
    );
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

    // A steady stream of events while an instruction actor, the program actor and the
    // registry are crashed in turn.
    let streaming = std::sync::atomic::AtomicBool::new(true);
    let accepted = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let mut accepted = Vec::new();
            let mut n = 0u32;
            while streaming.load(std::sync::atomic::Ordering::SeqCst) || n < 30 {
                if let Some(id) = work.send(&url, "plain", &format!("e-{n}"), &json!({"a": n})) {
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
