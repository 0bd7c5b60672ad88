//! Deadlines under load: how far past its deadline a spinning plugin stops, alone and with
//! 64 spinning at once, and how a healthy plugin's latency moves while hostile ones spin.
//! Prints p50 / p99 / max; needs `scripts/build-plugins.sh` to have run. Not a criterion
//! bench: it measures an overshoot distribution, not a mean.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use eyeflow_actors::ports::CapabilityRef;
use eyeflow_runtime::plugins::{HostConfig, PluginHost};
use eyeflow_runtime::secrets::LocalSecrets;
use eyeflow_runtime::store::EmbeddedStore;
use eyeflow_tests::node::bundled_package;
use serde_json::json;

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label:<44} n={:<5} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        samples.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}

fn spin(host: &PluginHost, deadline: Duration) -> Duration {
    let hostile = CapabilityRef::new("fixture-hostile", semver::VersionReq::STAR);
    let started = Instant::now();
    let err = host
        .invoke(&hostile, "spin", &json!({}), "e/i/1", deadline)
        .expect_err("spin never returns");
    assert_eq!(
        err.kind,
        eyeflow_actors::ports::CallErrorKind::Timeout,
        "{err}"
    );
    started.elapsed().saturating_sub(deadline)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let key = SigningKey::from_bytes(&[7; 32]);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    store.trust_key(&key.verifying_key()).expect("trust");
    let host = Arc::new(
        PluginHost::open(
            store,
            Arc::new(LocalSecrets::default()),
            HostConfig {
                max_concurrent_calls: 128,
                max_calls_per_plugin: 128,
                memory_limit: 32 * 1024 * 1024,
                ..HostConfig::default()
            },
        )
        .expect("host"),
    );
    host.install(&bundled_package("fixture-hostile", &key))
        .expect("install");
    host.install(&bundled_package("fixture-echo", &key))
        .expect("install");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("deadline overshoot (1 tick = 1 ms), {cores} cores");

    let deadline = Duration::from_millis(50);
    let alone: Vec<Duration> = (0..100).map(|_| spin(&host, deadline)).collect();
    percentiles("spin, 50 ms deadline, alone", alone);

    let at_once = |threads: usize, rounds: usize| -> Vec<Duration> {
        (0..threads)
            .map(|_| {
                let host = host.clone();
                std::thread::spawn(move || {
                    (0..rounds)
                        .map(|_| spin(&host, deadline))
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|t| t.join().expect("spinner"))
            .collect()
    };
    // A node runs at most one call per worker (workers = cores by default).
    percentiles(
        &format!("spin, 50 ms deadline, {cores} at once (one per core)"),
        at_once(cores, 50),
    );
    percentiles("spin, 50 ms deadline, 64 at once", at_once(64, 3));

    let echo = CapabilityRef::new("fixture-echo", semver::VersionReq::STAR);
    let healthy = |n: usize| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let started = Instant::now();
                host.invoke(
                    &echo,
                    "ping",
                    &json!({"n": 1}),
                    "e/i/1",
                    Duration::from_secs(5),
                )
                .expect("echo");
                started.elapsed()
            })
            .collect()
    };
    percentiles("healthy echo, alone", healthy(2000));
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    spin(&host, deadline);
                }
            })
        })
        .collect();
    percentiles("healthy echo, 2 hostile spinners running", healthy(2000));
    stop.store(true, Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().expect("spinner");
    }
}
