//! The `eyeflow` binary as a user runs it: keys, compile, decode, verify, demo, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn eyeflow(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eyeflow"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the eyeflow binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn example(name: &str) -> String {
    repo_root()
        .join("examples/rules")
        .join(name)
        .display()
        .to_string()
}

/// A temp dir with `admin.key`/`admin.pub` and a signed `valve.bin`.
fn signed_setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = eyeflow(&["keys", "gen", "--out", "admin"], dir.path());
    assert!(out.status.success(), "keys gen: {}", stderr(&out));
    assert!(stdout(&out).contains("key id "));
    let rule = example("valve-guard.yaml");
    let out = eyeflow(
        &["compile", &rule, "--key", "admin.key", "-o", "valve.bin"],
        dir.path(),
    );
    assert!(out.status.success(), "compile: {}", stderr(&out));
    assert!(stdout(&out).starts_with("signed "), "{}", stdout(&out));
    dir
}

#[test]
fn keys_compile_decode_verify() {
    let dir = signed_setup();
    let out = eyeflow(
        &["ir", "decode", "--file", "valve.bin", "--pretty"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("decode prints JSON");
    assert_eq!(json["ir_version"], "2.0");
    let opcodes: Vec<&str> = json["instructions"]
        .as_array()
        .expect("instructions")
        .iter()
        .filter_map(|i| i["opcode"].as_str())
        .collect();
    assert!(opcodes.contains(&"CALL_ACTION"), "{opcodes:?}");
    assert_eq!(json["signature"].as_str().map(str::len), Some(128));

    let out = eyeflow(
        &[
            "ir",
            "verify",
            "--file",
            "valve.bin",
            "--pubkey",
            "admin.pub",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
}

#[test]
#[cfg(unix)]
fn secret_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = signed_setup();
    let mode = std::fs::metadata(dir.path().join("admin.key"))
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = eyeflow(&["keys", "gen", "--out", "admin"], dir.path());
    assert_eq!(out.status.code(), Some(1), "overwriting a key must fail");
}

#[test]
fn verify_refuses_other_key_tamper_and_drafts() {
    let dir = signed_setup();
    let out = eyeflow(&["keys", "gen", "--out", "other"], dir.path());
    assert!(out.status.success());
    let out = eyeflow(
        &[
            "ir",
            "verify",
            "--file",
            "valve.bin",
            "--pubkey",
            "other.pub",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("not in the trusted keyring"),
        "{}",
        stderr(&out)
    );

    let mut bytes = std::fs::read(dir.path().join("valve.bin")).expect("program");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(dir.path().join("tampered.bin"), &bytes).expect("write");
    let out = eyeflow(
        &[
            "ir",
            "verify",
            "--file",
            "tampered.bin",
            "--pubkey",
            "admin.pub",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("tampered.bin refused"),
        "{}",
        stderr(&out)
    );

    let rule = example("valve-guard.yaml");
    let out = eyeflow(
        &["compile", &rule, "--draft", "-o", "draft.bin"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(&["ir", "decode", "--file", "draft.bin"], dir.path());
    assert!(out.status.success(), "a draft decodes for review");
    let out = eyeflow(
        &[
            "ir",
            "verify",
            "--file",
            "draft.bin",
            "--pubkey",
            "admin.pub",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("is unsigned"), "{}", stderr(&out));
}

/// The exit code and stderr of a command that must fail naming `file` and its kind.
fn refused_for_kind(out: &Output, file: &str, found: &str, expected: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let err = stderr(out);
    assert!(
        err.contains(&format!(
            "{file} holds a {found}, but a {expected} is needed"
        )),
        "{err}"
    );
}

#[test]
fn compile_and_verify_refuse_a_key_file_of_the_other_kind() {
    let dir = signed_setup();
    let rule = example("valve-guard.yaml");
    let out = eyeflow(
        &["compile", &rule, "--key", "admin.pub", "-o", "mixed.bin"],
        dir.path(),
    );
    refused_for_kind(&out, "admin.pub", "public key", "secret key");
    assert!(!dir.path().join("mixed.bin").exists(), "nothing signed");
    let out = eyeflow(
        &[
            "ir",
            "verify",
            "--file",
            "valve.bin",
            "--pubkey",
            "admin.key",
        ],
        dir.path(),
    );
    refused_for_kind(&out, "admin.key", "secret key", "public key");
}

#[test]
fn keys_trust_refuses_a_secret_key_file() {
    let dir = signed_setup();
    let cwd = dir.path();
    std::fs::create_dir(cwd.join("data")).expect("a new data directory");
    let out = eyeflow(&["keys", "trust", "admin.key", "--data-dir", "data"], cwd);
    refused_for_kind(&out, "admin.key", "secret key", "public key");
    // Every seed: before kinds, about half of them "trusted" a key nobody holds.
    for n in 0..8 {
        let name = format!("k{n}");
        assert!(
            eyeflow(&["keys", "gen", "--out", &name], cwd)
                .status
                .success()
        );
        let out = eyeflow(
            &[
                "keys",
                "trust",
                &format!("{name}.key"),
                "--data-dir",
                "data",
            ],
            cwd,
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
    }
    let out = eyeflow(&["keys", "trust", "admin.pub", "--data-dir", "data"], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("trusted key "), "{}", stdout(&out));
}

#[test]
fn plugin_sign_refuses_a_public_key_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path();
    assert!(
        eyeflow(&["keys", "gen", "--out", "publisher"], cwd)
            .status
            .success()
    );
    unsigned_package("valve-sim", &cwd.join("valve.efp"));
    let before = std::fs::read(cwd.join("valve.efp")).expect("package");
    let out = eyeflow(
        &["plugin", "sign", "valve.efp", "--key", "publisher.pub"],
        cwd,
    );
    refused_for_kind(&out, "publisher.pub", "public key", "secret key");
    assert_eq!(
        std::fs::read(cwd.join("valve.efp")).expect("package"),
        before,
        "the package is left as it was"
    );
    let out = eyeflow(
        &["plugin", "sign", "valve.efp", "--key", "publisher.key"],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn key_files_of_earlier_versions_still_sign_and_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path();
    // What `keys gen` wrote before key files had a kind line.
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let id = eyeflow_ir::keys::key_id(&key.verifying_key());
    let secret = format!(
        "# eyeflow ed25519 secret key {id}: keep private\n{}\n",
        hex::encode(key.to_bytes())
    );
    let public = format!(
        "# eyeflow ed25519 public key {id}\n{}\n",
        hex::encode(key.verifying_key().as_bytes())
    );
    std::fs::write(cwd.join("old.key"), secret).expect("write");
    std::fs::write(cwd.join("old.pub"), public).expect("write");
    let rule = example("valve-guard.yaml");
    let out = eyeflow(&["compile", &rule, "--key", "old.key", "-o", "v.bin"], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
    let out = eyeflow(
        &["ir", "verify", "--file", "v.bin", "--pubkey", "old.pub"],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(&["keys", "trust", "old.key", "--data-dir", "data"], cwd);
    refused_for_kind(&out, "old.key", "secret key", "public key");
    // Bare hex says nothing of its kind: refused, with how to convert.
    std::fs::write(cwd.join("bare.key"), hex::encode(key.to_bytes())).expect("write");
    let out = eyeflow(&["compile", &rule, "--key", "bare.key", "-o", "b.bin"], cwd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("add the first line `eyeflow-secret-key-v1`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn program_ids_that_are_paths_are_refused_at_compile_and_at_verify() {
    let dir = signed_setup();
    let source = std::fs::read_to_string(example("valve-guard.yaml")).expect("example");
    let line = source
        .lines()
        .position(|l| l.starts_with("id:"))
        .expect("an id line")
        + 1;
    let key = eyeflow_ir::keys::read_signing_key(&dir.path().join("admin.key")).expect("key");
    let signed = std::fs::read(dir.path().join("valve.bin")).expect("program");
    let program = eyeflow_ir::decode(&signed, &eyeflow_ir::Limits::default()).expect("decodes");
    for id in ["../../x", "/tmp/x", "plant/valve"] {
        let rule = source.replacen("id: valve-guard", &format!("id: \"{id}\""), 1);
        std::fs::write(dir.path().join("bad.yaml"), rule).expect("write");
        let out = eyeflow(
            &["compile", "bad.yaml", "--key", "admin.key", "-o", "bad.bin"],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(3), "{id}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains(&format!("bad.yaml:{line}:5:")),
            "{message}"
        );
        assert!(message.contains("rule id"), "{message}");
        assert!(!dir.path().join("bad.bin").exists(), "nothing is written");

        // The same id signed by hand: `ir verify` refuses it, naming the field.
        let mut edited = program.clone();
        edited.program_id = id.to_owned();
        eyeflow_ir::keys::sign(&mut edited, &key);
        std::fs::write(dir.path().join("hand.bin"), eyeflow_ir::encode(&edited)).expect("write");
        let out = eyeflow(
            &[
                "ir",
                "verify",
                "--file",
                "hand.bin",
                "--pubkey",
                "admin.pub",
            ],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(4), "{id}: {}", stdout(&out));
        assert!(stderr(&out).contains("\"program_id\""), "{}", stderr(&out));
    }
}

#[test]
fn compile_errors_point_at_the_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = std::fs::read_to_string(example("valve-guard.yaml")).expect("example");
    // Append an unknown top-level key on a known line.
    let line = source.lines().count() + 1;
    std::fs::write(
        dir.path().join("broken.yaml"),
        format!("{source}bogus_key: 1\n"),
    )
    .expect("write");
    let out = eyeflow(
        &["compile", "broken.yaml", "--draft", "-o", "x.bin"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("broken.yaml:{line}:")),
        "{message}"
    );
    assert!(message.contains("bogus_key"), "{message}");
    assert!(
        !dir.path().join("x.bin").exists(),
        "nothing is written on error"
    );

    let out = eyeflow(&["compile", "broken.yaml", "-o", "x.bin"], dir.path());
    assert_eq!(out.status.code(), Some(2), "--key or --draft is required");
}

/// `--target mcu`: an example rule that uses what a device cannot run is refused at its
/// place (exit 3); a device rule compiles to a signed MCU program that verifies.
#[test]
fn compile_for_the_mcu_profile() {
    let dir = signed_setup();
    let out = eyeflow(
        &[
            "compile",
            &example("valve-guard.yaml"),
            "--draft",
            "--target",
            "mcu",
            "-o",
            "x.bin",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("valve-guard.yaml:"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("MCU profile"), "{}", stderr(&out));

    let rule = repo_root().join("firmware/vectors/src/threshold.yaml");
    let out = eyeflow(
        &[
            "compile",
            &rule.display().to_string(),
            "--key",
            "admin.key",
            "--target",
            "mcu",
            "-o",
            "mcu.bin",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(
        &["ir", "decode", "--file", "mcu.bin", "--pretty"],
        dir.path(),
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["target"], "TARGET_MCU");
    let out = eyeflow(
        &["ir", "verify", "--file", "mcu.bin", "--pubkey", "admin.pub"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn demo_compiles_and_loads_every_example() {
    let out = eyeflow(&["demo"], &repo_root());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("14 of 14 opcodes used"), "{text}");
    let rules = std::fs::read_dir(repo_root().join("examples/rules"))
        .expect("rules")
        .count();
    assert!(
        text.contains(&format!("{rules} rules compiled, signed and verified")),
        "{text}"
    );
}

#[test]
fn help_opens_with_what_eyeflow_is() {
    let out = eyeflow(&["--help"], &repo_root());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("eyeflow runs signed, compiled rule programs"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_demo_runs_from_any_directory() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let out = eyeflow(&["demo", "--events", "12"], cwd.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("audit chain verified"),
        "{}",
        stdout(&out)
    );

    // An installed binary finds them beside it (`examples/rules`, `plugins/`), and says
    // which flags to pass when they are not there.
    let home = tempfile::tempdir().expect("temp dir");
    let installed = install_binary(home.path());
    let demo = || {
        Command::new(&installed)
            .args(["demo", "--events", "12"])
            .current_dir(cwd.path())
            .output()
            .expect("the installed binary runs")
    };
    let out = demo();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pass --rules DIR and --plugins DIR"),
        "{}",
        stderr(&out)
    );
    let rules = home.path().join("examples/rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    for entry in std::fs::read_dir(repo_root().join("examples/rules")).expect("rules") {
        let path = entry.expect("rule").path();
        std::fs::copy(&path, rules.join(path.file_name().expect("name"))).expect("copy");
    }
    let plugins = home.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    for name in ["sensor-sim", "valve-sim", "http-json", "webhook-notify"] {
        let (wasm, manifest) = built_plugin(name);
        std::fs::copy(wasm, plugins.join(format!("{name}.wasm"))).expect("copy");
        std::fs::copy(manifest, plugins.join(format!("{name}.json"))).expect("copy");
    }
    let out = demo();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Copies the built binary to `HOME/bin/eyeflow`, as an install would. The copy is made by
/// a `cp` process, not by this one: a file this process held open for writing would be
/// inherited by the children other test threads fork at that moment, and running it would
/// then fail with "text file busy" until they exec.
fn install_binary(home: &Path) -> PathBuf {
    let installed = home.join("bin/eyeflow");
    std::fs::create_dir_all(installed.parent().expect("bin")).expect("bin dir");
    let status = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_eyeflow"))
        .arg(&installed)
        .status()
        .expect("cp runs");
    assert!(status.success(), "install the binary");
    installed
}

fn built_plugin(name: &str) -> (PathBuf, PathBuf) {
    let dir = repo_root().join("target/plugins");
    let wasm = dir.join(format!("{name}.wasm"));
    assert!(wasm.exists(), "run scripts/build-plugins.sh first");
    (wasm, dir.join(format!("{name}.json")))
}

/// Wraps a built plugin into an unsigned package file, as `plugin build` does, without
/// running cargo (the package format is the library's).
fn unsigned_package(name: &str, out: &Path) {
    let (wasm, manifest) = built_plugin(name);
    let package = eyeflow_runtime::plugins::Package::new(
        std::fs::read(manifest).expect("manifest"),
        std::fs::read(wasm).expect("component"),
    )
    .expect("package");
    package.write(out).expect("write package");
}

#[test]
fn plugin_operator_loop_sign_inspect_trust_install_list_revoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path();
    let data = cwd.join("data").display().to_string();
    std::fs::create_dir(&data).expect("a new data directory");
    assert!(
        eyeflow(&["keys", "gen", "--out", "publisher"], cwd)
            .status
            .success()
    );
    unsigned_package("valve-sim", &cwd.join("valve.efp"));

    let out = eyeflow(&["plugin", "inspect", "valve.efp"], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("valve-sim@1.1.0"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("signature   none"),
        "{}",
        stdout(&out)
    );

    let out = eyeflow(
        &["plugin", "install", "valve.efp", "--data-dir", &data],
        cwd,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is unsigned"), "{}", stderr(&out));

    let out = eyeflow(
        &["plugin", "sign", "valve.efp", "--key", "publisher.key"],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(
        &["plugin", "install", "valve.efp", "--data-dir", &data],
        cwd,
    );
    assert!(
        stderr(&out).contains("signed by unknown key"),
        "{}",
        stderr(&out)
    );

    let out = eyeflow(
        &["keys", "trust", "publisher.pub", "--data-dir", &data],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(
        &["plugin", "install", "valve.efp", "--data-dir", &data],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("installed valve-sim@1.1.0"),
        "{}",
        stdout(&out)
    );

    let out = eyeflow(&["plugin", "list", "--data-dir", &data], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("valve-sim@1.1.0") && stdout(&out).contains("ready"),
        "{}",
        stdout(&out)
    );

    let out = eyeflow(
        &["plugin", "revoke", "valve-sim@1.1.0", "--data-dir", &data],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(&["plugin", "list", "--data-dir", &data], cwd);
    assert!(stdout(&out).contains("revoked"), "{}", stdout(&out));
    let out = eyeflow(
        &["plugin", "install", "valve.efp", "--data-dir", &data],
        cwd,
    );
    assert!(
        stderr(&out).contains("valve-sim@1.1.0 is revoked"),
        "{}",
        stderr(&out)
    );
}

/// `key id XYZ` as `keys gen` prints it.
fn generated_key_id(out: &Output) -> String {
    let text = stdout(out);
    let after = text.split("key id ").nth(1).expect("a key id is printed");
    after
        .split(|c: char| c.is_whitespace() || c == ')' || c == ',')
        .next()
        .expect("key id")
        .to_owned()
}

#[test]
fn plugin_transfer_moves_an_id_to_another_publisher_and_clears_its_grant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path();
    let data = cwd.join("data").display().to_string();
    std::fs::create_dir(&data).expect("a new data directory");
    let mut ids = Vec::new();
    for name in ["first", "second"] {
        let out = eyeflow(&["keys", "gen", "--out", name], cwd);
        assert!(out.status.success(), "{}", stderr(&out));
        ids.push(generated_key_id(&out));
        let out = eyeflow(
            &["keys", "trust", &format!("{name}.pub"), "--data-dir", &data],
            cwd,
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (first, second) = (&ids[0], &ids[1]);
    let sign = |plugin: &str, file: &str, key: &str| {
        unsigned_package(plugin, &cwd.join(file));
        let out = eyeflow(&["plugin", "sign", file, "--key", key], cwd);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    sign("fixture-echo", "v1.efp", "first.key");
    sign("fixture-echo-v2", "v2-second.efp", "second.key");
    let install = |file: &str| eyeflow(&["plugin", "install", file, "--data-dir", &data], cwd);

    let out = eyeflow(
        &[
            "plugin",
            "install",
            "v1.efp",
            "--data-dir",
            &data,
            "--grant-secret",
            "token",
        ],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = install("v2-second.efp");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    for part in [
        "fixture-echo@2.0.0",
        first.as_str(),
        second.as_str(),
        "eyeflow plugin transfer fixture-echo --to-key",
    ] {
        assert!(stderr(&out).contains(part), "`{part}`: {}", stderr(&out));
    }

    let out = eyeflow(
        &[
            "plugin",
            "transfer",
            "fixture-echo",
            "--to-key",
            second,
            "--data-dir",
            &data,
        ],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("grant is cleared"),
        "{}",
        stdout(&out)
    );

    let out = install("v2-second.efp");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(&["plugin", "list", "--data-dir", &data], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("key {second}")),
        "{}",
        stdout(&out)
    );

    // The first key's packages are refused now.
    sign("fixture-echo-v2", "v2-first.efp", "first.key");
    let out = install("v2-first.efp");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("is published by key"),
        "{}",
        stderr(&out)
    );

    let out = eyeflow(&["audit", "verify", "--data-dir", &data], cwd);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn plugin_new_and_build_from_any_directory() {
    // An installed binary: a copy outside the checkout, with a home of its own and no way
    // back to the sources it was built from.
    let home = tempfile::tempdir().expect("temp dir");
    let installed = install_binary(home.path());
    let eyeflow_home = home.path().join("eyeflow-home");
    let run = |args: &[&str], cwd: &Path| {
        Command::new(&installed)
            .args(args)
            .current_dir(cwd)
            .env("EYEFLOW_HOME", &eyeflow_home)
            .env_remove("EYEFLOW_SDK_PATH")
            .output()
            .expect("the installed binary runs")
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path();
    let out = run(&["plugin", "new", "door-lock", "--kind", "capability"], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(cwd.join("door-lock/eyeflow-plugin.json").exists());
    let cargo_toml = std::fs::read_to_string(cwd.join("door-lock/Cargo.toml")).expect("Cargo.toml");
    let sdk = eyeflow_home
        .join("plugin-sdk")
        .join(env!("CARGO_PKG_VERSION"));
    assert!(
        cargo_toml.contains(
            &sdk.canonicalize()
                .expect("the SDK was written")
                .display()
                .to_string()
        ),
        "the SDK comes from the binary, not the checkout: {cargo_toml}"
    );
    assert!(sdk.join("src/lib.rs").exists() && sdk.join("wit/plugin.wit").exists());
    let out = run(&["plugin", "new", "door-lock", "--kind", "capability"], cwd);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    assert!(run(&["keys", "gen", "--out", "me"], cwd).status.success());
    let out = run(&["plugin", "build", "door-lock", "--key", "me.key"], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = PathBuf::from(stdout(&out).trim().lines().last().expect("path").to_owned());
    let path = if path.is_absolute() {
        path
    } else {
        cwd.join(path)
    };
    let package = eyeflow_runtime::plugins::Package::read(&path).expect("a package was written");
    assert_eq!(package.manifest.id, "door-lock");
    assert!(package.signature().is_some());

    std::fs::create_dir(cwd.join("data")).expect("a new data directory");
    let out = eyeflow(&["keys", "trust", "me.pub", "--data-dir", "data"], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(
        &[
            "plugin",
            "install",
            &path.display().to_string(),
            "--data-dir",
            "data",
        ],
        cwd,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // A build without --key does not replace the signed package.
    let out = run(&["plugin", "build", "door-lock"], cwd);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is a signed package") && stderr(&out).contains("--key"),
        "{}",
        stderr(&out)
    );
    let kept = eyeflow_runtime::plugins::Package::read(&path).expect("the package is still there");
    assert!(
        kept.signature().is_some(),
        "the signed package was replaced"
    );
    // The manifest must declare every host interface the component imports ...
    let manifest_path = cwd.join("door-lock/eyeflow-plugin.json");
    let manifest = std::fs::read_to_string(&manifest_path).expect("manifest");
    let declaring = |imports: &str| {
        let edited = manifest.replace(r#""imports": ["log"]"#, &format!(r#""imports": {imports}"#));
        assert_ne!(edited, manifest, "the template declares [\"log\"]");
        std::fs::write(&manifest_path, edited).expect("manifest");
    };
    declaring("[]");
    let out = run(&["plugin", "build", "door-lock", "--key", "me.key"], cwd);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("imports eyeflow:plugin/log@") && stderr(&out).contains("`log`"),
        "{}",
        stderr(&out)
    );
    // ... and is warned about one it declares that the component does not import.
    declaring(r#"["log", "kv"]"#);
    let out = run(&["plugin", "build", "door-lock", "--key", "me.key"], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning") && stderr(&out).contains("`kv`"),
        "{}",
        stderr(&out)
    );

    let out = eyeflow(&["plugin", "new", "meter", "--kind", "connector"], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest =
        std::fs::read_to_string(cwd.join("meter/eyeflow-plugin.json")).expect("manifest");
    assert!(manifest.contains("\"connector\""), "{manifest}");
    // One version everywhere, the one a rule's `^1.0` (the compiler's suggestion) selects.
    assert_eq!(
        manifest.matches("\"version\": \"1.0.0\"").count(),
        2,
        "{manifest}"
    );
    let cargo = std::fs::read_to_string(cwd.join("meter/Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("version = \"1.0.0\""), "{cargo}");
}

fn summary(data: &str, cwd: &Path) -> serde_json::Value {
    let out = eyeflow(&["executions", "summary", "--data-dir", data], cwd);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("summary is JSON")
}

#[test]
fn the_demo_survives_kill_9_and_runs_every_event_exactly_once() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let args = [
        "demo",
        "--data-dir",
        &data,
        "--events",
        "1000",
        "--workers",
        "2",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_eyeflow"))
        .args(args)
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("demo starts");
    // Kill it once it has accepted a few hundred events, with executions in flight.
    let pipe = child.stdout.take().expect("stdout");
    for line in BufReader::new(pipe).lines() {
        let line = line.expect("line");
        if line.contains("events accepted") && !line.trim_start().starts_with("100 ") {
            break;
        }
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let first = summary(&data, dir.path());
    assert!(first["executions"].as_u64().unwrap() >= 200, "{first}");
    assert!(
        first["finished"].as_u64().unwrap() < 1000,
        "killed mid-run: {first}"
    );

    // Restart: interrupted executions resume, journaled events are skipped.
    let out = Command::new(env!("CARGO_BIN_EXE_eyeflow"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("rerun");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("audit chain verified"), "{text}");
    let after = summary(&data, dir.path());
    assert_eq!(
        after["executions"], 1000,
        "one execution per event: {after}"
    );
    assert_eq!(after["finished"], 1000, "{after}");
    assert_eq!(after["pending"], 0, "{after}");
    let out = eyeflow(&["audit", "verify", "--data-dir", &data], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    emitted_once(Path::new(&data));
}

/// Every EMIT_EVENT the journal shows done is in the event log, exactly once: what the
/// journal and the log say of the emitted events agree across the kill.
fn emitted_once(data: &Path) {
    use eyeflow_actors::ports::StepOutcome;
    use eyeflow_runtime::events::FjallEventLog;
    use eyeflow_runtime::journal::FjallJournal;
    use eyeflow_runtime::store::{Durability, EmbeddedStore, Space};

    let store = EmbeddedStore::open(data).expect("store");
    let log = FjallEventLog::new(store.clone(), Durability::Sync);
    let mut logged = std::collections::BTreeMap::<String, usize>::new();
    for topic in ["plant-a.notifications", "plant-a.boiler.alerts"] {
        for event in log.read(topic, 0, usize::MAX).expect("event log") {
            *logged.entry(event.idempotency_key).or_default() += 1;
        }
    }
    assert!(
        logged.values().all(|n| *n == 1),
        "an event emitted twice: {logged:?}"
    );
    let journal = FjallJournal::open(store.clone(), Durability::Sync).expect("journal");
    let mut emitted = std::collections::BTreeSet::new();
    for (id, _) in store
        .scan(Space::JournalExecutions, b"")
        .expect("executions")
    {
        let id = String::from_utf8_lossy(&id).into_owned();
        let (event, steps, _) = journal.execution(&id).expect("read").expect("journaled");
        for step in &steps {
            let StepOutcome::Started {
                idempotency_key, ..
            } = &step.outcome
            else {
                continue;
            };
            // The EMIT_EVENT instructions of the examples.
            let emits = [("alert-notify", "publish"), ("sensor-sweep", "raise_alert")]
                .iter()
                .any(|(program, name)| {
                    event.program_id == *program
                        && step.instruction_id.rsplit('/').next() == Some(*name)
                });
            let done = steps.iter().any(|s| {
                s.instruction_id == step.instruction_id
                    && s.attempt == step.attempt
                    && matches!(s.outcome, StepOutcome::Done { .. })
            });
            if emits && done {
                emitted.insert(idempotency_key.clone());
            }
        }
    }
    assert!(!emitted.is_empty(), "the demo emits events");
    let missing: Vec<_> = emitted
        .iter()
        .filter(|k| !logged.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "journaled done, not in the log: {missing:?}"
    );
}

#[test]
fn audit_verify_names_a_tampered_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_eyeflow"))
        .args(["demo", "--data-dir", &data, "--events", "12"])
        .current_dir(repo_root())
        .output()
        .expect("demo");
    assert!(out.status.success(), "{}", stderr(&out));
    // Edit one stored entry the way an intruder with file access would: through the store.
    let tampered;
    {
        let store = eyeflow_runtime::store::EmbeddedStore::open(Path::new(&data)).expect("store");
        let entries = store
            .scan(eyeflow_runtime::store::Space::Audit, b"")
            .expect("scan");
        // A run of several entries; its key is its last entry's index then its first's. The
        // first alone holds the node id (the others share it) and only a tag of its hash
        // (the last holds the whole one): rewrite the node id.
        let span = |key: &[u8]| {
            let index = |at: usize| u64::from_be_bytes(key[at..at + 8].try_into().expect("8"));
            (index(8), index(0))
        };
        let (key, mut value) = entries[5..]
            .iter()
            .find(|(key, _)| key.len() == 16 && span(key).0 < span(key).1)
            .expect("a run of several entries")
            .clone();
        let first = span(&key).0;
        tampered = first;
        let at = value
            .windows(6)
            .position(|w| w == b"node-1")
            .expect("node id in the entry");
        value[at + 5] = b'2';
        store
            .put(eyeflow_runtime::store::Space::Audit, &key, &value)
            .expect("put");
    }
    let out = eyeflow(&["audit", "verify", "--data-dir", &data], dir.path());
    assert_eq!(out.status.code(), Some(5), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("audit chain broken at entry {tampered}")),
        "{}",
        stderr(&out)
    );
    // An export refuses to write the changed entry with a hash recomputed over its change.
    let keys = dir.path().join("node").display().to_string();
    let out = eyeflow(&["keys", "gen", "--out", &keys], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let file = dir.path().join("audit.jsonl").display().to_string();
    let pubkey = format!("{keys}.pub");
    let out = eyeflow(
        &[
            "audit",
            "export",
            "--data-dir",
            &data,
            "--pubkey",
            &pubkey,
            "-o",
            &file,
        ],
        dir.path(),
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("audit/{tampered}"))
            && stderr(&out).contains("changed since it was written"),
        "{}",
        stderr(&out)
    );
}

/// Every file under `dir` with its SHA-256, by path.
fn fingerprint(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                files.push((
                    path,
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
                ));
            }
        }
    }
    files.sort();
    files
}

/// A directory holding `data`, the data directory of a demo run of `events` events.
fn demo_dir(events: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_eyeflow"))
        .args([
            "demo",
            "--data-dir",
            &data.display().to_string(),
            "--events",
            &events.to_string(),
        ])
        .current_dir(repo_root())
        .output()
        .expect("demo");
    assert!(out.status.success(), "{}", stderr(&out));
    (dir, data)
}

#[test]
fn audit_verify_with_a_head_kept_elsewhere_never_passes_with_fewer_entries_and_never_writes() {
    let (dir, data) = demo_dir(12);
    let head_out = eyeflow(&["audit", "head", "--data-dir", "data"], dir.path());
    assert!(head_out.status.success(), "{}", stderr(&head_out));
    let head = stdout(&head_out).trim().to_owned();
    let entries: u64 = head
        .split(':')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("INDEX:HASH");
    let all = format!("audit chain verified: {} entries", entries + 1);
    let out = eyeflow(
        &["audit", "verify", "--data-dir", "data", "--head", &head],
        dir.path(),
    );
    assert!(stdout(&out).contains(&all), "{}", stdout(&out));

    // Flip one byte at many offsets of every store file, each in a fresh copy: verify either
    // fails naming the damage, or verifies every entry up to the head — never fewer — and
    // leaves the copy byte for byte as it was.
    // The largest files: the journal and the segments that hold the entries (each run
    // starts a process and opens a store, so the budget is a few dozen runs).
    let mut files: Vec<(u64, std::path::PathBuf)> = fingerprint(&data.join("store"))
        .into_iter()
        .filter_map(|(path, _)| Some((std::fs::metadata(&path).ok()?.len(), path)))
        .filter(|(len, _)| *len > 0)
        .collect();
    files.sort();
    let files: Vec<std::path::PathBuf> = files.into_iter().rev().take(8).map(|(_, p)| p).collect();
    let mut runs = 0;
    let (mut failed, mut intact) = (0, 0);
    for file in &files {
        let len = std::fs::metadata(file).expect("size").len();
        for step in 0..3u64 {
            let offset = len * step / 3 + len / 7;
            let work = tempfile::tempdir().expect("temp dir");
            let copy = work.path().join("data");
            eyeflow_tests::copy_dir(&data, &copy);
            let target = copy.join(file.strip_prefix(&data).expect("under data"));
            let mut bytes = std::fs::read(&target).expect("read");
            let at = usize::try_from(offset.min(len - 1)).expect("offset");
            bytes[at] ^= 0x5a;
            std::fs::write(&target, &bytes).expect("write");
            let before = fingerprint(&copy);
            // With the head kept elsewhere, and with only what the data directory holds
            // (the store's own mark of what was durable).
            for args in [
                &["audit", "verify", "--data-dir", "data", "--head", &head][..],
                &["audit", "verify", "--data-dir", "data"][..],
            ] {
                let out = eyeflow(args, work.path());
                runs += 1;
                if out.status.success() {
                    assert!(
                        stdout(&out).contains(&all),
                        "{} at {at} ({args:?}): passed with fewer entries: {}",
                        target.display(),
                        stdout(&out)
                    );
                    intact += 1;
                } else {
                    assert!(
                        !stderr(&out).trim().is_empty(),
                        "{} at {at}: failed without saying why",
                        target.display()
                    );
                    failed += 1;
                }
                assert_eq!(fingerprint(&copy), before, "verify changed the store");
            }
        }
    }
    assert!(runs >= 12, "{runs} runs over {} files", files.len());
    assert!(
        failed > 0,
        "no flip was detected: the test flips nothing that matters"
    );
    eprintln!("{runs} flipped copies: {failed} refused, {intact} verified in full");
}

#[test]
fn a_store_that_lost_durable_records_is_refused_until_an_audited_repair() {
    let (dir, data) = demo_dir(6);
    let head = stdout(&eyeflow(
        &["audit", "head", "--data-dir", "data"],
        dir.path(),
    ));
    let last: u64 = head
        .split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .expect("INDEX:HASH");

    // Cut the store's journal in the middle of what it wrote (a truncated copy, a disk
    // that lost a tail): fjall's recovery would take the cut for a torn write.
    let journal = std::fs::read_dir(data.join("store"))
        .expect("store")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "jnl"))
        .expect("a journal file");
    let bytes = std::fs::read(&journal).expect("journal");
    let written = bytes.iter().rposition(|b| *b != 0).expect("written bytes") + 1;
    std::fs::write(&journal, &bytes[..written / 2]).expect("cut");

    // Every command that opens the store refuses it, naming what was lost; the node too.
    let out = eyeflow(&["executions", "summary", "--data-dir", "data"], dir.path());
    assert!(!out.status.success(), "{}", stdout(&out));
    let refused = stderr(&out);
    assert!(
        refused.contains(&format!("audit entry {last} was durable but is gone"))
            && refused.contains("audit repair"),
        "{refused}"
    );
    let out = eyeflow(
        &["node", "--data-dir", "data", "--listen", "127.0.0.1:0"],
        dir.path(),
    );
    assert!(!out.status.success(), "the node started on a damaged store");
    assert!(stderr(&out).contains("is damaged"), "{}", stderr(&out));
    let kept: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("damaged-"))
        .collect();
    assert!(!kept.is_empty(), "the journal as it was is not kept");
    let out = eyeflow(&["audit", "verify", "--data-dir", "data"], dir.path());
    assert!(!out.status.success(), "verify passed a damaged store");

    // The operator accepts the loss: audited, and the store opens again.
    let out = eyeflow(&["audit", "repair", "--data-dir", "data"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("STORE_REPAIR"), "{}", stdout(&out));
    let out = eyeflow(&["executions", "summary", "--data-dir", "data"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eyeflow(&["audit", "repair", "--data-dir", "data"], dir.path());
    assert!(stdout(&out).contains("not damaged"), "{}", stdout(&out));
    // A head kept elsewhere still shows what the repair accepted.
    let out = eyeflow(
        &[
            "audit",
            "verify",
            "--data-dir",
            "data",
            "--head",
            head.trim(),
        ],
        dir.path(),
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("truncated") || stderr(&out).contains("fork"),
        "{}",
        stderr(&out)
    );
}
