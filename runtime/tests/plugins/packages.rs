//! Package signatures, manifest/component checks, the catalog and the precompiled cache.

use eyeflow_runtime::Error;
use eyeflow_runtime::plugins::{Installed, Package};
use semver::Version;

use crate::support::{Node, key, parts, signed};

fn install_err(node: &Node, package: &Package) -> String {
    let err = node.host.install(package).expect_err("refused");
    err.to_string()
}

#[test]
fn unsigned_packages_are_refused() {
    let node = Node::new();
    let (manifest, wasm) = parts("fixture-echo");
    let package = Package::new(manifest, wasm).unwrap();
    let err = node.host.install(&package).unwrap_err();
    assert!(matches!(err, Error::UnsignedPackage { .. }), "{err}");
    assert!(
        err.to_string().contains("fixture-echo@1.0.0 is unsigned"),
        "{err}"
    );
    assert!(node.host.list().unwrap().is_empty(), "nothing recorded");
}

#[test]
fn a_flipped_component_byte_is_refused() {
    let node = Node::new();
    let bytes = signed("fixture-echo", &node.key).to_bytes();
    let package = Package::from_bytes(&bytes, "x").unwrap();
    // Flip a byte near the end of the component (inside the code, past the header).
    let component_end = bytes.len() - 1 - 16 - 64;
    let mut tampered = bytes.clone();
    tampered[component_end - 100] ^= 0x01;
    let tampered = Package::from_bytes(&tampered, "tampered").unwrap();
    let err = node.host.install(&tampered).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("modified after signing"), "{err}");
    // The untouched package still installs.
    assert!(matches!(
        node.host.install(&package).unwrap(),
        Installed::New { .. }
    ));
}

#[test]
fn a_flipped_manifest_byte_is_refused() {
    let node = Node::new();
    let bytes = signed("fixture-echo", &node.key).to_bytes();
    let manifest_start = 16 + 4;
    let text = String::from_utf8_lossy(&bytes[manifest_start..manifest_start + 200]).into_owned();
    // Change one letter of the description so that the manifest still parses.
    let at = manifest_start + text.find("\"description\"").expect("description") + 17;
    let mut tampered = bytes.clone();
    tampered[at] ^= 0x20;
    let tampered = Package::from_bytes(&tampered, "tampered").expect("still a parseable manifest");
    let err = install_err(&node, &tampered);
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn wrong_or_revoked_keys_are_refused() {
    let node = Node::new();
    let stranger = key(9);
    let err = install_err(&node, &signed("fixture-echo", &stranger));
    assert!(err.contains("signed by unknown key"), "{err}");
    assert!(
        err.contains(&eyeflow_ir::keys::key_id(&stranger.verifying_key())),
        "{err}"
    );

    let store = node.host.catalog().store();
    let publisher = key(2);
    store.trust_key(&publisher.verifying_key()).unwrap();
    let id = eyeflow_ir::keys::key_id(&publisher.verifying_key());
    assert!(store.revoke_key(&id).unwrap());
    let err = install_err(&node, &signed("fixture-echo", &publisher));
    assert!(
        err.contains(&format!("signed by revoked key {id}")),
        "{err}"
    );
}

#[test]
fn truncated_or_foreign_files_are_refused_with_the_reason() {
    let node = Node::new();
    let bytes = signed("fixture-echo", &node.key).to_bytes();
    let err = Package::from_bytes(&bytes[..bytes.len() - 10], "p.efp")
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated"), "{err}");
    let err = Package::from_bytes(b"\0asm\x0d\0\x01\0 and then some code", "p.wasm")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad magic"), "{err}");
    let mut extra = bytes.clone();
    extra.push(0);
    let err = Package::from_bytes(&extra, "p.efp")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected bytes"), "{err}");
    let (manifest, _) = parts("fixture-echo");
    let err = Package::new(manifest, b"\0asm\x01\0\0\0".to_vec())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a WebAssembly component"), "{err}");
}

#[test]
fn revoked_versions_are_never_chosen_nor_reinstalled() {
    let node = Node::new();
    node.install("fixture-echo");
    node.install("fixture-echo-v2");
    assert_eq!(
        node.invoke("fixture-echo", "ping", serde_json::json!({}))
            .unwrap()["version"],
        "2.0.0"
    );
    node.host
        .revoke("fixture-echo", &Version::new(2, 0, 0))
        .unwrap();
    assert_eq!(
        node.invoke("fixture-echo", "ping", serde_json::json!({}))
            .unwrap()["version"],
        "1.0.0"
    );
    let err = install_err(&node, &signed("fixture-echo-v2", &node.key));
    assert!(err.contains("fixture-echo@2.0.0 is revoked"), "{err}");
    let listed = node.host.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].runnable, Err("revoked".to_owned()));
}

#[test]
fn same_version_with_other_content_is_a_conflict() {
    let node = Node::new();
    node.install("fixture-echo");
    // v2's component under v1's manifest: same id and version, different bytes.
    let (manifest, _) = parts("fixture-echo");
    let (_, other) = parts("fixture-echo-v2");
    let mut package = Package::new(manifest, other).unwrap();
    package.sign(&node.key);
    let err = install_err(&node, &package);
    assert!(
        err.contains("already installed with different content"),
        "{err}"
    );
    // Reinstalling the identical package is harmless.
    assert!(matches!(
        node.host
            .install(&signed("fixture-echo", &node.key))
            .unwrap(),
        Installed::Unchanged { .. }
    ));
}

#[test]
fn the_catalog_and_precompiled_cache_survive_a_restart() {
    let mut node = Node::new();
    node.install("fixture-echo");
    node.install("valve-sim");
    assert_eq!(node.host.loaded_counts(), (2, 0), "first load compiles");
    node.reopen();
    assert_eq!(
        node.host.loaded_counts(),
        (2, 2),
        "restart loads both from the cache"
    );
    assert_eq!(
        node.invoke("fixture-echo", "ping", serde_json::json!({"n": 1}))
            .unwrap()["input"]["n"],
        1
    );
}

#[test]
fn a_corrupt_cache_artifact_is_recompiled_not_trusted() {
    let mut node = Node::new();
    node.install("fixture-echo");
    let cache = node.dir.path().join("plugins/cache");
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    node.reopen();
    assert_eq!(node.host.loaded_counts(), (1, 0), "recompiled");
    assert!(
        node.invoke("fixture-echo", "ping", serde_json::json!({}))
            .is_ok()
    );
}

#[test]
fn a_package_modified_on_disk_is_not_loaded_at_restart() {
    let mut node = Node::new();
    node.install("fixture-echo");
    let stored = node
        .host
        .catalog()
        .package_path("fixture-echo", &Version::new(1, 0, 0));
    let mut bytes = std::fs::read(&stored).unwrap();
    let at = bytes.len() - 200;
    bytes[at] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    node.reopen();
    let listed = node.host.list().unwrap();
    let why = listed[0].runnable.clone().unwrap_err();
    assert!(why.contains("content changed since installation"), "{why}");
    assert!(
        node.invoke("fixture-echo", "ping", serde_json::json!({}))
            .is_err()
    );
}

#[test]
fn imports_must_be_declared_and_provided() {
    let node = Node::new();
    let err = install_err(&node, &signed("fixture-undeclared-import", &node.key));
    assert!(err.contains("does not declare `secrets`"), "{err}");
    let err = install_err(&node, &signed("fixture-unknown-import", &node.key));
    assert!(err.contains("eyeflow:plugin/teleport"), "{err}");
    assert!(err.contains("does not provide"), "{err}");
}

#[test]
fn a_plugin_built_for_the_older_wit_still_loads() {
    let node = Node::new();
    node.install("fixture-legacy");
    let out = node
        .invoke("fixture-legacy", "anything", serde_json::json!({}))
        .unwrap();
    assert_eq!(out["legacy"], true);
}

#[test]
fn a_plugin_built_for_wit_1_1_links_its_kv_and_clock_and_runs() {
    let mut node = Node::new();
    node.install("fixture-legacy-1-1");
    let calls = |node: &Node| {
        node.invoke("fixture-legacy-1-1", "count", serde_json::json!({}))
            .unwrap()
    };
    assert_eq!(
        calls(&node),
        serde_json::json!({"wit": "1.1.0", "calls": 1})
    );
    assert_eq!(calls(&node)["calls"], 2);
    node.reopen();
    assert_eq!(calls(&node)["calls"], 3);
}

/// What `cargo fuzz run package` (runtime/fuzz) checks, on a fixed budget in every test run:
/// a real package with bytes flipped, cut or repeated is read or refused, never a panic.
#[test]
fn mangled_packages_are_refused_never_a_crash() {
    let bytes = signed("valve-sim", &key(1)).to_bytes();
    let mut rng = eyeflow_ir::testing::Xorshift::new(0x2545_f491_4f6c_dd1d);
    for _ in 0..400 {
        let mut mangled = bytes.clone();
        let at = rng.below(bytes.len());
        match rng.below(3) {
            0 => mangled[at] ^= 1 << rng.below(8),
            1 => mangled.truncate(at),
            _ => mangled
                .splice(at..at, bytes[..at.min(64)].iter().copied())
                .for_each(drop),
        }
        let _ = Package::from_bytes(&mangled, "mangled package");
    }
}
