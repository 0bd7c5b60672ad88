//! Audit compaction on a real `eyeflow node` with an audit key and a one-second audit
//! window: nothing goes before an operator fetched a checkpoint; then the entries it covers
//! are deleted under a steady stream, `eyeflow audit verify --data-dir` passes and names the
//! signed checkpoint it starts from, and a node killed (`kill -9`) while it compacts keeps a
//! chain that verifies with nothing after the released checkpoint lost.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);
const DELETED: &str = "eyeflow_retention_deleted_total{kind=\"audit\"}";

/// `eyeflow audit verify` of the data directory (a copy of it: the node may run) with the
/// audit key: its output, or its error.
fn verify(work: &Workdir) -> Result<String, String> {
    let out = std::process::Command::new(eyeflow_tests::node::binary())
        .args([
            "audit",
            "verify",
            "--data-dir",
            "data",
            "--pubkey",
            "keys/audit.pub",
        ])
        .current_dir(work.path())
        .output()
        .expect("eyeflow runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The head's entry index, from `eyeflow audit head` (beside the running node).
fn head(work: &Workdir) -> u64 {
    let head = work.eyeflow(&["audit", "head", "--data-dir", "data"]);
    let (index, _) = head.split_once(':').expect("INDEX:HASH");
    index.parse().expect("an index")
}

#[test]
fn entries_behind_a_fetched_checkpoint_are_compacted_and_the_chain_still_verifies() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let work = Workdir::with_audit_key(
        "[retention]\naudit_secs = 1\ninterval_ms = 50\nbatch_keys = 4\n",
        &key,
    );
    let (node, url) = work.start();
    work.deploy(&url, PLAIN_RULE);

    let mut sent = 0u64;
    let mut stream = || {
        sent += 1;
        work.send(&url, "plain", &format!("s-{sent}"), &json!({"a": sent}))
    };
    // A second and a half of stream: entries older than the window, none released.
    let started = eyeflow_runtime::now_ms();
    eventually("entries older than the window", PATIENCE, || {
        stream();
        (eyeflow_runtime::now_ms() > started + 1500).then_some(())
    });
    assert_eq!(
        work.metric(&url, DELETED).unwrap_or(0.0),
        0.0,
        "deleted before any checkpoint was released"
    );
    assert!(
        verify(&work)
            .expect("verifies")
            .contains("audit chain verified: ")
    );

    // The operator fetches a checkpoint: it is released.
    let fetched = work.eyeflow(&[
        "audit",
        "checkpoint",
        "--node",
        &url,
        "--token",
        &work.operator,
        "-o",
        "released.json",
    ]);
    let released: Value = serde_json::from_str(&fetched).expect("checkpoint JSON");
    let released = released["index"].as_u64().expect("an index");
    println!("released checkpoint of entry {released}");

    // Compaction starts while the stream goes on; the node is killed in its middle.
    let deleted = eventually("compaction is under way", PATIENCE, || {
        stream();
        work.metric(&url, DELETED).filter(|n| *n >= 1.0)
    });
    let head_before = head(&work);
    let mut node = node;
    node.kill().expect("kill -9");
    node.wait().expect("reaped");
    println!("killed after {deleted} entries compacted; head {head_before}");

    // The chain as the kill left it verifies, starting after a signed checkpoint, and holds
    // every entry from the released checkpoint's on.
    let verified = verify(&work).expect("the chain verifies after the kill");
    println!("{verified}");
    assert!(
        verified.contains("starting from signed checkpoint"),
        "{verified}"
    );

    // Restarted, the node finishes the compaction up to the released checkpoint.
    let (node, url) = work.start();
    let verified = eventually("compacted up to the released checkpoint", PATIENCE, || {
        work.send(&url, "plain", "after", &json!({"a": 0}));
        verify(&work)
            .ok()
            .filter(|out| out.contains(&format!("starting from signed checkpoint {released} ")))
    });
    println!("{verified}");
    let first = released + 1;
    assert!(
        verified.contains(&format!("verified entries {first}..")),
        "{verified}"
    );
    // Nothing after the released checkpoint was lost: the chain reaches the head seen
    // before the kill.
    let last: u64 = verified
        .split(&format!("verified entries {first}.."))
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("the last entry verified");
    assert!(last >= head_before, "{last} < {head_before}: {verified}");
    work.stop(node);
}
