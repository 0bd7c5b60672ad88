//! The audit chain: hashes, canonical encoding, verification naming the first broken entry
//! after tampering with the stored bytes, checkpoints detecting truncation.

use ed25519_dalek::SigningKey;
use eyeflow_actors::ports::AuditEntry;
use eyeflow_runtime::audit::{self, AuditConfig, FjallAudit, canonical};
use eyeflow_runtime::store::{Durability, EmbeddedStore, Space};
use sha2::{Digest, Sha256};

use crate::support::{open, temp_store};

fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        node_id: "node-1".into(),
        execution_id: format!("x{i:016}"),
        program_id: "cooling".into(),
        program_version: "1.2.0".into(),
        program_sha256: None,
        instruction_id: format!("step-{i}"),
        opcode: "CALL_ACTION".into(),
        input_digest: hex::encode(Sha256::digest(format!("in{i}"))),
        output_digest: hex::encode(Sha256::digest(format!("out{i}"))),
        outcome: "done".into(),
        fallback: i.is_multiple_of(2).then(|| "retry".into()),
        started_ms: 1000 + i,
        finished_ms: 2000 + i,
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn chain(store: &EmbeddedStore, n: u64, config: AuditConfig) -> FjallAudit {
    let audit = FjallAudit::open(store.clone(), config).expect("audit");
    for i in 0..n {
        let receipt = audit.append(&entry(i)).expect("append");
        assert_eq!(receipt.index, i);
    }
    audit
}

/// The key of the stored record holding entry `index`: the first whose key is at least the
/// index's 8 bytes (`eyeflow_runtime::audit`, "Stored records"). Appended one at a time, each
/// entry has a record of its own.
fn record_key(store: &EmbeddedStore, index: u64) -> Vec<u8> {
    let (key, _) = store
        .scan_from(Space::Audit, b"", &index.to_be_bytes(), 1)
        .expect("scan")
        .pop()
        .expect("a record");
    assert!(key.starts_with(&index.to_be_bytes()), "entry {index} alone");
    key
}

fn broken(store: &EmbeddedStore, key: Option<&ed25519_dalek::VerifyingKey>) -> (u64, String) {
    let err = audit::verify(store, key)
        .expect("store readable")
        .expect_err("the chain must not verify");
    (err.index, err.reason)
}

#[test]
fn canonical_form_is_sorted_compact_json() {
    let mut e = entry(1);
    e.outcome = "failed:\"quoted\"\n/é".into();
    let text = String::from_utf8(canonical(&e)).unwrap();
    let expected = format!(
        concat!(
            r#"{{"execution_id":"x0000000000000001","fallback":null,"finished_ms":2001,"#,
            r#""input_digest":"{}","instruction_id":"step-1","node_id":"node-1","#,
            r#""opcode":"CALL_ACTION","outcome":"failed:\"quoted\"\n/é","#,
            r#""output_digest":"{}","program_id":"cooling","program_version":"1.2.0","#,
            r#""started_ms":1001}}"#
        ),
        e.input_digest, e.output_digest
    );
    assert_eq!(text, expected);
}

#[test]
fn hashes_chain_from_zero_and_a_clean_chain_verifies() {
    let (_dir, store) = temp_store();
    let audit = FjallAudit::open(store.clone(), AuditConfig::default()).unwrap();
    let mut previous = [0u8; 32];
    for i in 0..25 {
        let receipt = audit.append(&entry(i)).unwrap();
        let mut hasher = Sha256::new();
        hasher.update(previous);
        hasher.update(canonical(&entry(i)));
        let expected: [u8; 32] = hasher.finalize().into();
        assert_eq!(receipt.hash, expected, "entry {i}");
        previous = receipt.hash;
    }
    assert_eq!(audit.head(), (25, previous));
    let report = audit::verify(&store, None).unwrap().unwrap();
    assert_eq!(report.entries, 25);
    assert_eq!(report.head_hash, previous);
    let stored = audit.entries(20, 10).unwrap();
    assert_eq!(stored.len(), 5);
    assert_eq!(stored[0].index, 20);
    assert_eq!(stored[0].entry, entry(20));
    assert_eq!(stored[4].hash, previous);
}

#[test]
fn a_batch_of_entries_chains_like_single_appends() {
    let config = || AuditConfig {
        checkpoint_every: 4,
        signing_key: Some(key()),
        ..AuditConfig::default()
    };
    let (_dir, one_by_one) = temp_store();
    let single = chain(&one_by_one, 10, config());
    let (_dir2, batched) = temp_store();
    let audit = FjallAudit::open(batched.clone(), config()).unwrap();
    let entries: Vec<AuditEntry> = (0..10).map(entry).collect();
    audit.append_all(&entries[..3]).unwrap();
    audit.append_all(&[]).unwrap();
    audit.append_all(&entries[3..]).unwrap();
    assert_eq!(audit.head(), single.head());
    let report = audit::verify(&batched, Some(&key().verifying_key()))
        .unwrap()
        .unwrap();
    assert_eq!(report.entries, 10);
    // Checkpoints fall on the same entries, inside a batch too.
    let indexes = |a: &FjallAudit| {
        a.checkpoints()
            .unwrap()
            .iter()
            .map(|c| c.index)
            .collect::<Vec<_>>()
    };
    assert_eq!(indexes(&audit), [3, 7]);
    assert_eq!(indexes(&audit), indexes(&single));
    assert_eq!(audit.of_execution("x0000000000000004").unwrap().len(), 1);
}

#[test]
fn an_empty_chain_verifies() {
    let (_dir, store) = temp_store();
    let report = audit::verify(&store, Some(&key().verifying_key()))
        .unwrap()
        .unwrap();
    assert_eq!((report.entries, report.head_hash), (0, [0; 32]));
    let audit = FjallAudit::open(store, AuditConfig::default()).unwrap();
    assert_eq!(audit.checkpoint(&key()).unwrap(), None);
}

#[test]
fn the_chain_continues_after_a_reopen() {
    let (dir, store) = temp_store();
    let audit = chain(&store, 5, AuditConfig::default());
    let head = audit.head();
    drop((audit, store));
    let store = open(dir.path());
    let audit = FjallAudit::open(store.clone(), AuditConfig::default()).unwrap();
    assert_eq!(audit.head(), head);
    assert_eq!(audit.append(&entry(5)).unwrap().index, 5);
    assert_eq!(audit::verify(&store, None).unwrap().unwrap().entries, 6);
}

#[test]
fn an_edited_entry_is_named() {
    let (_dir, store) = temp_store();
    chain(&store, 12, AuditConfig::default());
    let key = record_key(&store, 7);
    let mut record = store.get(Space::Audit, &key).unwrap().unwrap();
    // Still a readable entry: "done" → "dona" in the outcome field.
    let at = record
        .windows(4)
        .position(|w| w == b"done")
        .expect("outcome in the record");
    record[at + 3] = b'a';
    store.put(Space::Audit, &key, &record).unwrap();
    let (index, reason) = broken(&store, None);
    assert_eq!(index, 7);
    assert!(reason.contains("content altered"), "{reason}");
}

#[test]
fn a_rewritten_entry_with_its_hash_breaks_the_next_link() {
    let (_dir, store) = temp_store();
    let audit = chain(&store, 6, AuditConfig::default());
    // Rewrite entry 2 consistently (new content, recomputed hash) in the single-entry form
    // of earlier versions, which still reads: entry 3 no longer links.
    let previous = audit.entries(1, 1).unwrap()[0].hash;
    store.remove(Space::Audit, &record_key(&store, 2)).unwrap();
    let mut forged = entry(2);
    forged.outcome = "skipped".into();
    let body = canonical(&forged);
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(&body);
    let hash: [u8; 32] = hasher.finalize().into();
    let mut rewritten = previous.to_vec();
    rewritten.extend_from_slice(&hash);
    rewritten.extend_from_slice(&body);
    store
        .put(Space::Audit, &2u64.to_be_bytes(), &rewritten)
        .unwrap();
    let (index, reason) = broken(&store, None);
    assert_eq!(index, 3);
    assert!(reason.contains("bad link"), "{reason}");
}

#[test]
fn a_gap_is_named() {
    let (_dir, store) = temp_store();
    chain(&store, 8, AuditConfig::default());
    store.remove(Space::Audit, &record_key(&store, 4)).unwrap();
    let (index, reason) = broken(&store, None);
    assert_eq!(index, 4);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn a_truncated_tail_is_caught_by_a_checkpoint() {
    let (_dir, store) = temp_store();
    let audit = chain(&store, 10, AuditConfig::default());
    let checkpoint = audit.checkpoint(&key()).unwrap().unwrap();
    assert_eq!(checkpoint.index, 9);
    assert!(checkpoint.verify(&key().verifying_key()));
    let report = audit::verify(&store, Some(&key().verifying_key()))
        .unwrap()
        .unwrap();
    assert_eq!((report.entries, report.checkpoints), (10, 1));
    assert!(report.signatures_checked);

    for i in 7..10u64 {
        store.remove(Space::Audit, &record_key(&store, i)).unwrap();
    }
    let (index, reason) = broken(&store, Some(&key().verifying_key()));
    assert_eq!(index, 7);
    assert!(reason.contains("truncated"), "{reason}");

    // Deleting the stored checkpoint too: only a published copy still tells.
    store
        .remove(Space::AuditCheckpoints, &9u64.to_be_bytes())
        .unwrap();
    assert_eq!(audit::verify(&store, None).unwrap().unwrap().entries, 7);
    let err = audit::verify_with(&store, Some(&key().verifying_key()), &[checkpoint], None)
        .unwrap()
        .unwrap_err();
    assert_eq!(err.index, 7);
}

#[test]
fn checkpoints_are_signed_every_n_entries_and_checked() {
    let (_dir, store) = temp_store();
    let config = AuditConfig {
        durability: Durability::Sync,
        checkpoint_every: 4,
        signing_key: Some(key()),
    };
    let audit = chain(&store, 10, config);
    let checkpoints = audit.checkpoints().unwrap();
    let indices: Vec<u64> = checkpoints.iter().map(|c| c.index).collect();
    assert_eq!(indices, [3, 7]);
    let report = audit::verify(&store, Some(&key().verifying_key()))
        .unwrap()
        .unwrap();
    assert_eq!(report.checkpoints, 2);

    // Another key's public half does not verify them.
    let other = SigningKey::from_bytes(&[10; 32]).verifying_key();
    let (index, reason) = broken(&store, Some(&other));
    assert_eq!(index, 3);
    assert!(reason.contains("does not verify"), "{reason}");

    // A checkpoint that disagrees with the chain (a fork) is named at its index.
    let mut forged = checkpoints[1].clone();
    forged.hash[0] ^= 1;
    let err = audit::verify_with(&store, None, &[forged], None)
        .unwrap()
        .unwrap_err();
    assert_eq!(err.index, 7);
    assert!(err.reason.contains("fork"), "{}", err.reason);
}

#[test]
fn concurrent_appends_form_one_chain() {
    let (dir, store) = temp_store();
    let audit = FjallAudit::open(store.clone(), AuditConfig::default()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let audit = &audit;
            scope.spawn(move || {
                for i in 0..50 {
                    audit.append(&entry(t * 1000 + i)).unwrap();
                }
            });
        }
    });
    drop((audit, store));
    let report = audit::verify(&open(dir.path()), None).unwrap().unwrap();
    assert_eq!(report.entries, 400);
}

#[test]
fn an_executions_entries_are_found_by_its_id_in_chain_order() {
    let (_dir, store) = temp_store();
    let audit = FjallAudit::open(store, AuditConfig::default()).expect("audit");
    // Two executions interleaved, and one whose id is a prefix of another's.
    for i in 0..6u64 {
        let mut e = entry(i);
        e.execution_id = ["x1", "x10"][usize::from(i % 2 == 1)].to_owned();
        audit.append(&e).expect("append");
    }
    let found = audit.of_execution("x1").expect("lookup");
    assert_eq!(
        found.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
    assert!(found.iter().all(|e| e.entry.execution_id == "x1"));
    assert_eq!(audit.of_execution("x10").expect("lookup").len(), 3);
    assert!(audit.of_execution("x").expect("lookup").is_empty());
}
