//! The audit chain verified offline: `eyeflow audit export` of a real node's data directory
//! (more than 10,000 entries written by `eyeflow demo`), then `eyeflow audit verify --file`
//! with no data directory, on the untouched file and on copies edited every way the chain
//! must show (a changed byte, a deleted, inserted or reordered entry, a truncated file, a
//! fork); and `--programs`, which checks each entry's program hash against the signed
//! programs `eyeflow compile` wrote.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use eyeflow_actors::chain::{EntryRecord, Record, canonical, chain_hash};
use eyeflow_actors::ports::AuditEntry;
use eyeflow_tests::eventually;
use eyeflow_tests::node::{PLAIN_RULE, Workdir, binary, run};
use serde_json::json;

fn eyeflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("eyeflow runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The file's lines.
fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .expect("the export")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn entry_at(lines: &[String], index: u64) -> (usize, EntryRecord) {
    lines
        .iter()
        .enumerate()
        .find_map(|(at, line)| match Record::decode(line.as_bytes()) {
            Ok(Record::Entry(entry)) if entry.index == index => Some((at, entry)),
            _ => None,
        })
        .expect("the entry is in the file")
}

/// `eyeflow audit verify --file` of `lines` (written to `name`) with the node key `pubkey`.
fn verify(dir: &Path, name: &str, lines: &[String], pubkey: &str, extra: &[&str]) -> Output {
    std::fs::write(dir.join(name), lines.join("\n") + "\n").expect("write the edited copy");
    let mut args = vec!["audit", "verify", "--file", name, "--pubkey", pubkey];
    args.extend_from_slice(extra);
    eyeflow(dir, &args)
}

/// Verifies an edited copy: it must fail with exit code 5, naming `index` and saying
/// `what`.
fn refused(dir: &Path, name: &str, lines: &[String], index: u64, what: &str) {
    let out = verify(dir, name, lines, "data/dev.pub", &[]);
    let error = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{name}: {error}");
    assert!(
        error.contains(&format!("broken at entry {index}:")),
        "{name} should name entry {index}: {error}"
    );
    assert!(error.contains(what), "{name} should say `{what}`: {error}");
}

/// The record of `entry` (changed) at `index` after the entry whose hash is `previous`.
fn record(index: u64, previous: [u8; 32], entry: &AuditEntry) -> (String, [u8; 32]) {
    let body = canonical(entry);
    let hash = chain_hash(&previous, &body);
    let line = Record::Entry(EntryRecord {
        index,
        previous,
        hash,
        body,
    })
    .encode();
    (String::from_utf8(line).expect("utf-8"), hash)
}

#[test]
fn an_export_of_ten_thousand_entries_verifies_offline_and_every_edit_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    // `eyeflow demo` runs a real node in the process: 1,000 events of a rule of twelve
    // instructions write 12,001 entries.
    std::fs::create_dir_all(dir.join("rules")).expect("rules dir");
    let mut rule = String::from(
        "id: chain\nversion: 1.0.0\ntriggers:\n  - {kind: webhook, source: chain}\ninstructions:\n",
    );
    for i in 0..11 {
        let next = if i < 10 {
            format!("s{}", i + 1)
        } else {
            "done".into()
        };
        rule += &format!("  - {{id: s{i}, op: EVAL, expression: \"{i} + 1\", next: {next}}}\n");
    }
    rule += "  - {id: done, op: RETURN, expression: \"s10\"}\n";
    std::fs::write(dir.join("rules/chain.yaml"), rule).expect("rule");
    run(
        &binary(),
        &[
            "demo",
            "--rules",
            "rules",
            "--data-dir",
            "data",
            "--events",
            "1000",
        ],
        dir,
    );
    let out = eyeflow(
        dir,
        &[
            "audit",
            "export",
            "--data-dir",
            "data",
            "--pubkey",
            "data/dev.pub",
            "-o",
            "chain.jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = lines(&dir.join("chain.jsonl"));
    let Ok(Record::Header(header)) = Record::decode(lines[0].as_bytes()) else {
        panic!("a header first: {}", lines[0])
    };
    assert_eq!(header.from, 0);
    assert!(header.entries >= 10_000, "{} entries", header.entries);

    // Untouched, also against the node's signed programs; no data directory needed.
    std::fs::rename(dir.join("data/store"), dir.join("store-aside")).expect("store aside");
    let out = verify(
        dir,
        "untouched.jsonl",
        &lines,
        "data/dev.pub",
        &["--programs", "data/programs"],
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(report.contains("audit file verified"), "{report}");
    assert!(report.contains("ran a given signed program"), "{report}");

    // A changed byte (in the output digest of entry 5000).
    let (at, _) = entry_at(&lines, 5000);
    let mut changed = lines.clone();
    let offset = changed[at].find("\"output_digest\":\"").expect("digest") + 17;
    let mut bytes = changed[at].clone().into_bytes();
    bytes[offset] ^= 1;
    changed[at] = String::from_utf8(bytes).expect("utf-8");
    refused(dir, "changed.jsonl", &changed, 5000, "content altered");

    let mut deleted = lines.clone();
    deleted.remove(at);
    refused(dir, "deleted.jsonl", &deleted, 5000, "missing");

    let mut inserted = lines.clone();
    inserted.insert(at + 1, lines[entry_at(&lines, 10).0].clone());
    refused(dir, "inserted.jsonl", &inserted, 5001, "inserted");

    let mut reordered = lines.clone();
    let (next, _) = entry_at(&lines, 5001);
    reordered.swap(at, next);
    refused(dir, "reordered.jsonl", &reordered, 5000, "out of order");

    let (cut, _) = entry_at(&lines, 7000);
    refused(dir, "truncated.jsonl", &lines[..=cut], 7001, "truncated");

    // A second, different entry 5000 beside the first.
    let (_, original) = entry_at(&lines, 5000);
    let mut entry: AuditEntry = serde_json::from_slice(&original.body).expect("an entry");
    entry.outcome = "skipped".into();
    let (twin, _) = record(5000, original.previous, &entry);
    let mut twins = lines.clone();
    twins.insert(at + 1, twin);
    refused(dir, "twins.jsonl", &twins, 5000, "fork");

    // The chain rewritten from entry 5000 on, every link recomputed: the next signed
    // checkpoint shows it.
    let mut previous = original.previous;
    let rewritten: Vec<String> = lines
        .iter()
        .map(|line| match Record::decode(line.as_bytes()) {
            Ok(Record::Entry(e)) if e.index >= 5000 => {
                let mut entry: AuditEntry = serde_json::from_slice(&e.body).expect("an entry");
                if e.index == 5000 {
                    entry.outcome = "skipped".into();
                }
                let (line, hash) = record(e.index, previous, &entry);
                previous = hash;
                line
            }
            _ => line.clone(),
        })
        .collect();
    let checkpoint = lines
        .iter()
        .find_map(|line| match Record::decode(line.as_bytes()) {
            Ok(Record::Checkpoint(c)) if c.checkpoint.index >= 5000 => Some(c.checkpoint.index),
            _ => None,
        })
        .expect("a checkpoint after entry 5000");
    refused(
        dir,
        "rewritten.jsonl",
        &rewritten,
        checkpoint,
        "signed checkpoint",
    );

    // A part of the chain, verified from the hash of the entry before it.
    std::fs::rename(dir.join("store-aside"), dir.join("data/store")).expect("store back");
    let out = eyeflow(
        dir,
        &[
            "audit",
            "export",
            "--data-dir",
            "data",
            "--pubkey",
            "data/dev.pub",
            "--from",
            "3000",
            "--to",
            "8000",
            "-o",
            "part.jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(
        dir,
        &[
            "audit",
            "verify",
            "--file",
            "part.jsonl",
            "--pubkey",
            "data/dev.pub",
        ],
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(report.contains("entries 3000 to 8000"), "{report}");
    assert!(
        report.contains("started from the hash of entry 2999"),
        "{report}"
    );
}

#[test]
fn program_hashes_verify_against_the_files_eyeflow_compile_wrote() {
    let work = Workdir::new("");
    let dir = work.path();
    std::fs::write(dir.join("plain.yaml"), PLAIN_RULE).expect("rule");
    std::fs::create_dir_all(dir.join("programs")).expect("programs dir");
    work.eyeflow(&[
        "compile",
        "plain.yaml",
        "--key",
        "admin.key",
        "-o",
        "programs/plain.ir",
    ]);
    // The same rule as another version: its file is not what ran.
    std::fs::create_dir_all(dir.join("other")).expect("other dir");
    std::fs::write(
        dir.join("plain-next.yaml"),
        PLAIN_RULE.replace("version: 1.0.0", "version: 1.0.1"),
    )
    .expect("rule");
    work.eyeflow(&[
        "compile",
        "plain-next.yaml",
        "--key",
        "admin.key",
        "-o",
        "other/plain.ir",
    ]);

    let (node, url) = work.start();
    work.eyeflow(&[
        "deploy",
        "programs/plain.ir",
        "--node",
        &url,
        "--token",
        &work.admin,
    ]);
    for n in 0..5 {
        let id = work
            .send(&url, "plain", &format!("e-{n}"), &json!({"a": n}))
            .expect("accepted");
        let view = eventually("the execution finishes", Duration::from_secs(60), || {
            work.execution(&url, &id)
                .filter(|v| v["outcome"].is_object())
        });
        assert_eq!(view["outcome"]["value"], json!(n + 1), "{view}");
    }
    work.stop(node);

    let data_dir_verify = |programs: &str| {
        eyeflow(
            dir,
            &[
                "audit",
                "verify",
                "--data-dir",
                "data",
                "--programs",
                programs,
            ],
        )
    };
    let out = data_dir_verify("programs");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(report.contains("ran a given signed program"), "{report}");

    work.eyeflow(&[
        "audit",
        "export",
        "--data-dir",
        "data",
        "--pubkey",
        "data/node.pub",
        "-o",
        "chain.jsonl",
    ]);
    let lines = lines(&dir.join("chain.jsonl"));
    let first = lines
        .iter()
        .find_map(|line| match Record::decode(line.as_bytes()) {
            Ok(Record::Entry(e)) => serde_json::from_slice::<AuditEntry>(&e.body)
                .ok()
                .filter(|entry| entry.program_sha256.is_some())
                .map(|_| e.index),
            _ => None,
        })
        .expect("an entry of the program");
    let out = verify(
        dir,
        "chain.jsonl",
        &lines,
        "data/node.pub",
        &["--programs", "programs"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    for out in [
        data_dir_verify("other"),
        verify(
            dir,
            "chain.jsonl",
            &lines,
            "data/node.pub",
            &["--programs", "other"],
        ),
    ] {
        let error = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{error}");
        assert!(
            error.contains(&format!("broken at entry {first}:")),
            "{error}"
        );
        assert!(error.contains("matches none"), "{error}");
    }
}
