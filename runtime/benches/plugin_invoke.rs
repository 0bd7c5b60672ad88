//! Plugin host speed: invoking a trivial capability on a warm host (fresh instance per
//! call) under each deadline mechanism, and opening a node with 10 installed plugins from
//! the precompiled cache. Needs `scripts/build-plugins.sh` to have run.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use eyeflow_actors::ports::CapabilityRef;
use eyeflow_runtime::plugins::{DeadlineMode, HostConfig, Package, PluginHost};
use eyeflow_runtime::secrets::LocalSecrets;
use eyeflow_runtime::store::EmbeddedStore;

fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins")
}

fn echo_package(key: &SigningKey, id: &str) -> Package {
    let dir = plugins_dir();
    let wasm =
        std::fs::read(dir.join("fixture-echo.wasm")).expect("run scripts/build-plugins.sh first");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("fixture-echo.json")).expect("manifest"))
            .expect("json");
    manifest["id"] = id.into();
    manifest["provides"][0]["capability"] = id.into();
    let mut package =
        Package::new(serde_json::to_vec(&manifest).expect("json"), wasm).expect("package");
    package.sign(key);
    package
}

fn open(dir: &Path, key: &SigningKey, config: HostConfig) -> PluginHost {
    let store = EmbeddedStore::open(dir).expect("store");
    store.trust_key(&key.verifying_key()).expect("trust");
    PluginHost::open(store, Arc::new(LocalSecrets::default()), config).expect("host")
}

fn invoke(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let wanted = CapabilityRef::new("fixture-echo", semver::VersionReq::STAR);
    let input = serde_json::json!({"n": 1});
    let mut group = c.benchmark_group("plugin_invoke");
    for (name, deadline) in [
        ("epoch", DeadlineMode::Epoch),
        (
            "fuel",
            DeadlineMode::Fuel {
                units_per_ms: 1_000_000,
            },
        ),
        ("none", DeadlineMode::Unbounded),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = open(
            dir.path(),
            &key,
            HostConfig {
                deadline,
                ..HostConfig::default()
            },
        );
        host.install(&echo_package(&key, "fixture-echo"))
            .expect("install");
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    host.invoke(&wanted, "ping", &input, "e/i/1", Duration::from_secs(1))
                        .expect("invoke"),
                )
            })
        });
    }
    group.finish();
}

fn node_start(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let host = open(dir.path(), &key, HostConfig::default());
        for i in 0..10 {
            host.install(&echo_package(&key, &format!("echo-{i}")))
                .expect("install");
        }
    }
    c.bench_function("node_start_10_plugins", |b| {
        b.iter(|| {
            let host = open(dir.path(), &key, HostConfig::default());
            assert_eq!(host.loaded_counts(), (10, 10));
            black_box(host)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = invoke, node_start
}
criterion_main!(benches);
