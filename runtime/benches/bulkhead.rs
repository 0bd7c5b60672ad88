//! Bulkheads under a poison program: how a healthy program's latency moves when another
//! program of the same node runs at its maximum rate and every one of its executions hangs
//! on an endpoint that never answers, or retries against a closed port. A node (durable,
//! group commit, 4 slots, each program at most 3 of them) takes the healthy program's events
//! at a steady rate (`BULKHEAD_RATE` per second, default 200, for `BULKHEAD_SECS` seconds,
//! default 10) three times: alone, beside the hanging poison, beside the retrying poison
//! (submitted as fast as the node admits it). Prints the healthy executions' p50 and p99 from
//! acceptance to end (as the node measures them), their ratio to the healthy program alone,
//! how many healthy events were refused, and how many poison executions were accepted.
//! Run: `cargo bench -p eyeflow-runtime --bench bulkhead`.

/// The allocator of the `eyeflow` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eyeflow_compiler::CompileOptions;
use eyeflow_runtime::node::{Node, NodeConfig};
use eyeflow_runtime::store::Durability;
use eyeflow_tests::poison::{self, SlowEndpoint, closed_port};

/// Healthy executions run first and not measured.
const WARM_UP: u64 = 200;

const HEALTHY: &str = r#"
id: healthy
version: 1.0.0
max_wait_ms: 600000
triggers: [{kind: manual}]
instructions:
  - {id: level, op: EVAL, expression: "double(event.value) * 2.0", next: high}
  - {id: high, op: EVAL, expression: "level > 10.0", next: done}
  - {id: done, op: RETURN, expression: "high"}
"#;

/// Hangs: its call waits for an answer that never comes, up to its 2 s timeout.
fn hanging(port: u16) -> String {
    poison::rule(
        port,
        2000,
        "    fallback: {strategy: value, value: '\"gave up\"'}\n",
    )
}

/// Retries: its call is refused at once and retried five times with backoff.
fn retrying(port: u16) -> String {
    poison::rule(
        port,
        2000,
        "    retry: {max_retries: 5, backoff_ms: 100, multiplier: 2.0}\n    fallback: {strategy: value, value: '\"gave up\"'}\n",
    )
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one phase measured.
struct Phase {
    p50_ms: f64,
    p99_ms: f64,
    completed: usize,
    refused: u64,
    poison_accepted: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(0) as f64 / 1000.0
}

fn phase(poison: Option<String>) -> Phase {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::embedded(dir.path());
    config.durability = Durability::GroupCommit;
    config.workers = 4;
    config.http_allow = Some(vec!["127.0.0.1".to_owned()]);
    let node = Node::start(config).expect("node");
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    node.trust(&key.verifying_key()).expect("trust");
    let options = CompileOptions {
        source_name: "bulkhead.yaml".into(),
        compiled_by: "bench".into(),
        compiled_at: 0,
    };
    let deploy = |rule: &str| {
        let program = eyeflow_compiler::compile_and_sign(rule, &options, &key).expect("compile");
        node.deploy(&eyeflow_ir::encode(&program)).expect("deploy");
    };
    deploy(HEALTHY);
    if let Some(poison) = &poison {
        deploy(poison);
    }
    // Warm-up: the healthy program's first executions (caches, the first fsyncs) are not
    // measured.
    let finished = || {
        node.stats()
            .get("healthy")
            .map_or(0, |s| s.latencies_us.len() as u64)
    };
    for i in 0..WARM_UP {
        let payload = serde_json::json!({"value": i});
        node.submit("healthy", &format!("w-{i}"), "bench", payload)
            .expect("warm-up");
    }
    while finished() < WARM_UP {
        std::thread::sleep(Duration::from_millis(1));
    }
    let rate = env_or("BULKHEAD_RATE", 200).max(1);
    let count = rate * env_or("BULKHEAD_SECS", 10);
    let stop = AtomicBool::new(false);
    let poison_accepted = AtomicU64::new(0);
    let mut refused = 0;
    std::thread::scope(|scope| {
        if poison.is_some() {
            scope.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let payload = serde_json::json!({});
                    match node.submit("poison", &format!("p-{n}"), "bench", payload) {
                        Ok(_) => {
                            poison_accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            });
            // The poison fills its share of the slots first.
            std::thread::sleep(Duration::from_secs(3));
        }
        let started = Instant::now();
        let every = Duration::from_micros(1_000_000 / rate);
        for i in 0..count {
            let due = started + every * u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let payload = serde_json::json!({"value": i % 100});
            if node
                .submit("healthy", &format!("h-{i}"), "bench", payload)
                .is_err()
            {
                refused += 1;
            }
        }
        // Every accepted healthy event ends (counted below), then the poison stops.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if finished() + refused >= WARM_UP + count {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let stats = node.stats();
    let mut latencies: Vec<u64> = stats
        .get("healthy")
        .map(|s| {
            s.latencies_us
                .iter()
                .skip(WARM_UP as usize)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    latencies.sort_unstable();
    let _ = node.shutdown_within(Duration::from_secs(5));
    drop(node);
    Phase {
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        completed: latencies.len(),
        refused,
        poison_accepted: poison_accepted.load(Ordering::Relaxed),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) only
    // checks that the bench builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let alone = phase(None);
    let slow = SlowEndpoint::start();
    let report = |label: &str, p: &Phase| {
        println!(
            "{label:<32} healthy p50 {:>7.2} ms p99 {:>7.2} ms ({:>4.1}× alone) | {} completed, {} refused | poison accepted {}",
            p.p50_ms,
            p.p99_ms,
            p.p99_ms / alone.p99_ms.max(0.001),
            p.completed,
            p.refused,
            p.poison_accepted,
        );
    };
    report("alone", &alone);
    report("beside a hanging poison", &phase(Some(hanging(slow.port))));
    report(
        "beside a retrying poison",
        &phase(Some(retrying(closed_port()))),
    );
}
