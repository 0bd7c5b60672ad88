//! The MCU conformance vectors (`firmware/vectors`): the committed files are exactly what
//! `eyeflow mcu vectors` generates from their sources, every vector runs on the server
//! (`eyeflow mcu run`) to its expected trace, and together they cover the profile.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use eyeflow_tests::node::{binary, repo, run};

fn vectors() -> PathBuf {
    repo().join("firmware/vectors")
}

/// The vector folders (every folder but `src`), in name order.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("vector folder")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "src")
        .collect();
    names.sort();
    names
}

/// `eyeflow args`' standard output, trimmed.
fn eyeflow(args: &[&str]) -> String {
    run(&binary(), args, &repo())
}

#[test]
fn committed_vectors_are_what_their_sources_generate() {
    let scratch = tempfile::tempdir().expect("temporary folder");
    let src = vectors().join("src");
    eyeflow(&[
        "mcu",
        "vectors",
        "--out",
        &scratch.path().display().to_string(),
        "--src",
        &src.display().to_string(),
    ]);
    let committed = names(&vectors());
    assert_eq!(names(scratch.path()), committed);
    for name in &committed {
        for file in ["program.ir", "input.bin", "expected.trace"] {
            let read = |dir: &Path| std::fs::read(dir.join(name).join(file)).expect("vector file");
            assert!(
                read(&vectors()) == read(scratch.path()),
                "{name}/{file} differs from what `eyeflow mcu vectors` generates: regenerate with `eyeflow mcu vectors --out firmware/vectors`"
            );
        }
    }
}

#[test]
fn every_vector_runs_to_its_expected_trace_and_together_they_cover_the_profile() {
    let mut seen = BTreeSet::new();
    for name in names(&vectors()) {
        let dir = vectors().join(&name);
        let trace = eyeflow(&["mcu", "run", &dir.display().to_string()]);
        let expected = std::fs::read_to_string(dir.join("expected.trace")).expect("trace");
        assert_eq!(trace, expected.trim_end(), "vector {name}");
        for line in trace.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["step", _, _, opcode, attempts, outcome, _] => {
                    seen.insert((*opcode).to_owned());
                    seen.insert((*outcome).to_owned());
                    if *attempts != "1" {
                        seen.insert(format!("{outcome} after retries"));
                    }
                }
                ["end", status, _] | ["refused", status] => {
                    seen.insert(format!("{}:{status}", words[0]));
                }
                _ => panic!("vector {name}: unexpected trace line {line:?}"),
            }
        }
    }
    for wanted in [
        "EVAL",
        "BRANCH",
        "LOOP",
        "STORE",
        "LOAD",
        "CALL_ACTION",
        "LOAD_RESOURCE",
        "RETURN",
        "LLM_CALL",
        "EMIT_EVENT",
        "ok",
        "fallback",
        "skipped",
        "failed:invalid_input",
        "failed:timeout",
        "failed:unavailable",
        "ok after retries",
        "failed:unavailable after retries",
        "end:completed",
        "end:aborted",
        "end:failed:invalid_input",
        "refused:bad_signature",
        "refused:unknown_key",
        "refused:ir_version",
        "refused:not_mcu",
        "refused:capacity",
    ] {
        assert!(
            seen.contains(wanted),
            "no vector shows {wanted:?}: {seen:?}"
        );
    }
}
