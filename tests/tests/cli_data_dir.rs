//! The operator commands on a data directory: while a node runs on it (its store locked)
//! they go through the node's API, with the URL it left in the directory and a token minted
//! from the directory's key; a data directory that does not exist is refused, never made.

use std::process::{Command, Output};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir, binary};
use serde_json::{Value, json};

fn eyeflow(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env_remove("EYEFLOW_DATA_DIR")
        .env_remove("EYEFLOW_NODE")
        .env_remove("EYEFLOW_TOKEN")
        .output()
        .expect("eyeflow runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn api(work: &Workdir, url: &str, path: &str) -> Value {
    let body = reqwest::blocking::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(&work.admin)
        .send()
        .and_then(reqwest::blocking::Response::text)
        .expect("the node answers");
    serde_json::from_str(&body).expect("JSON")
}

#[test]
fn operator_commands_work_while_the_node_runs() {
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.install(&url, "valve-sim", &[]);
    work.deploy(&url, PLAIN_RULE);
    let id = work
        .send(&url, "plain", "e-1", &json!({"a": 1}))
        .expect("accepted");
    eventually("the execution finishes", Duration::from_secs(60), || {
        work.execution(&url, &id)
            .filter(|v| v["outcome"].is_object())
    });

    let out = eyeflow(work.path(), &["plugin", "list", "--data-dir", "data"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("valve-sim@"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("ready"), "{}", text(&out.stdout));

    let other = SigningKey::from_bytes(&[7; 32]);
    eyeflow_ir::keys::write_keypair(&work.path().join("other"), &other).expect("key");
    let other_id = eyeflow_ir::keys::key_id(&other.verifying_key());
    let out = eyeflow(
        work.path(),
        &["keys", "trust", "other.pub", "--data-dir", "data"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("trusted key {other_id}")),
        "{}",
        text(&out.stdout)
    );
    let keys = api(&work, &url, "/api/keys");
    assert!(
        keys["keys"]
            .as_array()
            .is_some_and(|keys| keys.contains(&json!({"key_id": other_id, "revoked": false}))),
        "the node trusts it at once: {keys}"
    );

    let out = eyeflow(
        work.path(),
        &["executions", "summary", "--data-dir", "data"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_str(text(&out.stdout).trim()).expect("JSON");
    let counts = work.counts(&url).expect("counts");
    assert_eq!(summary["executions"], counts["executions"], "{summary}");
    assert_eq!(summary["finished"], json!(1), "{summary}");

    // It reads a copy of the store: the running node's lock is not in its way.
    let out = eyeflow(work.path(), &["audit", "verify", "--data-dir", "data"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // No API equivalent: refused, saying why.
    let out = eyeflow(
        work.path(),
        &[
            "plugin",
            "grant",
            "valve-sim",
            "--http",
            "x.test",
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is running (its store is locked): stop it first"),
        "{}",
        text(&out.stderr)
    );

    work.stop(node);
    assert!(
        !work.data().join("node.url").exists(),
        "a node that stopped cleanly takes its URL away"
    );
    let out = eyeflow(work.path(), &["plugin", "list", "--data-dir", "data"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("valve-sim@"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_data_directory_that_does_not_exist_is_refused_not_made() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nonexistent/x");
    let out = eyeflow(
        dir.path(),
        &[
            "plugin",
            "list",
            "--data-dir",
            &missing.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "no node data directory at {} (start one with `eyeflow node --data-dir DIR`, \
             or pass --data-dir / set EYEFLOW_DATA_DIR)",
            missing.display()
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("nonexistent").exists());

    // The default is the node's: ./eyeflow-data, for every command.
    let out = eyeflow(dir.path(), &["tokens", "issue", "--role", "admin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no node data directory at ./eyeflow-data"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("eyeflow-data").exists());
    let out = eyeflow(dir.path(), &["plugin", "list", "--help"]);
    assert!(
        text(&out.stdout).contains("[default: ./eyeflow-data]"),
        "{}",
        text(&out.stdout)
    );
}
