//! Checkpoints kept outside the node: signed by a key that lives outside the data
//! directory (`[node] audit_key`), fetched from a running node with `eyeflow audit
//! checkpoint`, and given back to `eyeflow audit verify --checkpoint`, which fails on a
//! store rolled back before them, on a forged one and on another key's.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use eyeflow_tests::copy_dir;
use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir, binary};
use serde_json::{Value, json};

fn verify(dir: &Path, data: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "audit",
        "verify",
        "--data-dir",
        data,
        "--pubkey",
        "keys/audit.pub",
    ];
    args.extend_from_slice(extra);
    std::process::Command::new(binary())
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("eyeflow runs")
}

fn run_events(work: &Workdir, url: &str, from: u32, to: u32) {
    for n in from..to {
        let id = work
            .send(url, "plain", &format!("e-{n}"), &json!({"a": n}))
            .expect("accepted");
        let view = eventually("the execution finishes", Duration::from_secs(60), || {
            work.execution(url, &id)
                .filter(|v| v["outcome"].is_object())
        });
        assert_eq!(view["outcome"]["value"], json!(n + 1), "{view}");
    }
}

/// `eyeflow audit checkpoint` against the node at `url`, written to `file`; its output.
fn checkpoint(work: &Workdir, url: &str, file: &str) -> String {
    work.eyeflow(&[
        "audit",
        "checkpoint",
        "--node",
        url,
        "--token",
        &work.operator,
        "-o",
        file,
    ])
}

#[test]
fn checkpoints_kept_outside_the_node_catch_a_rolled_back_store() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let work = Workdir::with_audit_key("", &key);
    let dir = work.path();

    let (node, url) = work.start();
    work.deploy(&url, PLAIN_RULE);
    run_events(&work, &url, 0, 3);
    let first = checkpoint(&work, &url, "first.json");
    let first: Value = serde_json::from_str(&first).expect("checkpoint JSON");
    assert!(first["index"].as_u64().is_some(), "{first}");
    work.stop(node);
    assert!(
        !work.data().join("node.key").exists(),
        "the node made its own key though one was configured"
    );
    // The store as it was then, kept aside.
    let rollback = dir.join("rollback");
    copy_dir(&work.data(), &rollback);

    let (node, url) = work.start();
    run_events(&work, &url, 3, 6);
    checkpoint(&work, &url, "second.json");
    work.stop(node);

    // The store holds both checkpoints' entries: verified against each.
    let out = verify(
        dir,
        "data",
        &["--checkpoint", "first.json", "--checkpoint", "second.json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reaches what was kept elsewhere"));

    // The rolled-back store verifies on its own, but not against the later checkpoint.
    let out = verify(dir, "rollback", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify(dir, "rollback", &["--checkpoint", "second.json"]);
    assert!(!out.status.success(), "a rolled-back store passed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A checkpoint with another hash, or signed by another key, is refused.
    let text = std::fs::read_to_string(dir.join("second.json")).expect("second");
    let mut forged: Value = serde_json::from_str(&text).expect("json");
    let hash = forged["hash"].as_str().expect("hash").to_owned();
    let flipped = if hash.starts_with('0') { "1" } else { "0" };
    forged["hash"] = Value::String(format!("{flipped}{}", &hash[1..]));
    std::fs::write(dir.join("forged.json"), forged.to_string()).expect("forged");
    let out = verify(dir, "data", &["--checkpoint", "forged.json"]);
    assert!(!out.status.success(), "a forged checkpoint passed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = SigningKey::from_bytes(&[8; 32]);
    eyeflow_ir::keys::write_keypair(&dir.join("keys/other"), &other).expect("other key");
    let out = std::process::Command::new(binary())
        .args([
            "audit",
            "verify",
            "--data-dir",
            "data",
            "--pubkey",
            "keys/other.pub",
            "--checkpoint",
            "second.json",
        ])
        .current_dir(dir)
        .output()
        .expect("eyeflow runs");
    assert!(!out.status.success(), "another key's checkpoint passed");
}
