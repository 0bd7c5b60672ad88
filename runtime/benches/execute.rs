//! Execution throughput and latency of a 10-instruction program without LLM (EVAL, BRANCH,
//! STORE/LOAD in the execution and node scopes, one valve-sim CALL_ACTION, RETURN) on a node
//! with journal and audit on: durable (group commit) and without fsync. Prints executions per
//! second, p50/p99 latency at low load (one at a time) and under saturation, and CPU per
//! execution. Run: `cargo bench -p eyeflow-runtime --bench execute` (needs
//! `scripts/build-plugins.sh`); `EXECUTE_WORKERS=N` sets the node's worker slots (default
//! 4: the scheduler's default on this 2-core machine) and `EXECUTE_SUBMITTERS=N` the threads
//! submitting at once when saturating (default 4). With group commit, throughput grows with
//! the writes waiting on an fsync at once, hence with both. `EXECUTE_SOAK_SECS=N`: a soak
//! with retention instead (see `soak`).

/// The allocator of the `eyeflow` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::Instant;

use eyeflow_compiler::CompileOptions;
use eyeflow_runtime::node::{Node, NodeConfig};
use eyeflow_runtime::store::Durability;

const RULE: &str = r#"
id: bench-ten
version: 1.0.0
priority: normal
max_wait_ms: 600000
requires: {valve-sim: ^1.0}
triggers: [{kind: manual}]
instructions:
  - {id: level, op: EVAL, expression: "double(event.value) * 2.0", next: high}
  - {id: high, op: EVAL, expression: "level > 10.0", next: decide}
  - {id: decide, op: BRANCH, condition: high, then: keep, else: keep}
  - {id: keep, op: STORE, scope: execution, key: level, expression: level, next: again}
  - {id: again, op: LOAD, scope: execution, key: level, next: share}
  - {id: share, op: STORE, scope: node, key: "bench/last", expression: again, next: shared}
  - {id: shared, op: LOAD, scope: node, key: "bench/last", next: act}
  - id: act
    op: CALL_ACTION
    capability: valve-sim
    action: set
    params: {valve: "'valve/bench-' + string(int(event.value) % 64)", position: "int(shared) % 100"}
    next: result
  - {id: result, op: EVAL, expression: "act.position", next: done}
  - {id: done, op: RETURN, expression: "{'position': result}"}
"#;

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes this process has handed to `write` so far (`wchar` of /proc/self/io): the journal,
/// the audit chain, the event log and plugin data, before compression (fjall compresses its
/// segments when it flushes memtables, later).
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p).round() as usize)
        .map_or(0.0, |us| *us as f64 / 1000.0)
}

/// Threads submitting at once in the saturation phase (`EXECUTE_SUBMITTERS`, default 4).
/// Each waits for its acceptance to be durable, so with group commit they bound how many
/// writes share one fsync.
fn submitters() -> usize {
    std::env::var("EXECUTE_SUBMITTERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4)
}

/// Submits one event, waiting while the node refuses it as overloaded (as a client does on
/// its 503): the submitters outrun execution without fsync.
fn submit(node: &Node, event_id: String, value: usize) {
    loop {
        match node.submit(
            "bench-ten",
            &event_id,
            "bench",
            serde_json::json!({"value": value}),
        ) {
            Err(eyeflow_runtime::Error::Overloaded { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other => {
                other.expect("submit");
                return;
            }
        }
    }
}

fn node(dir: &Path, durability: Durability) -> Node {
    let mut config = NodeConfig::embedded(dir);
    config.durability = durability;
    start(config)
}

fn start(mut config: NodeConfig) -> Node {
    config.workers = std::env::var("EXECUTE_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(4);
    // One program: its bulkhead may take every slot.
    config.max_running_per_program = Some(config.workers);
    let node = Node::start(config).expect("node");
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    node.trust(&key.verifying_key()).expect("trust");
    node.plugins()
        .install(&eyeflow_tests::node::bundled_package("valve-sim", &key))
        .expect("install");
    let options = CompileOptions {
        source_name: "bench.yaml".into(),
        compiled_by: "bench".into(),
        compiled_at: 0,
    };
    let program = eyeflow_compiler::compile_and_sign(RULE, &options, &key).expect("compile");
    node.deploy(&eyeflow_ir::encode(&program)).expect("deploy");
    node
}

fn run(label: &str, durability: Durability) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node(dir.path(), durability);
    // Warm up.
    for i in 0..50 {
        node.submit(
            "bench-ten",
            &format!("warm-{i}"),
            "bench",
            serde_json::json!({"value": i}),
        )
        .expect("submit");
    }
    node.wait_idle();

    // Low load: one execution at a time.
    let mut low = Vec::new();
    for i in 0..300 {
        let started = Instant::now();
        node.submit(
            "bench-ten",
            &format!("low-{i}"),
            "bench",
            serde_json::json!({"value": i}),
        )
        .expect("submit");
        node.wait_idle();
        low.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    low.sort_unstable();

    // Saturation: submit as fast as possible from `submitters()` threads.
    let threads = submitters();
    let n = 2000 / threads * threads;
    let cpu = cpu_seconds();
    let written = bytes_written();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let node = node.clone();
            scope.spawn(move || {
                for i in 0..n / threads {
                    submit(&node, format!("sat-{t}-{i}"), i);
                }
            });
        }
    });
    node.wait_idle();
    let took = started.elapsed();
    let cpu = cpu_seconds() - cpu;
    let written = bytes_written() - written;
    let stats = node.stats();
    let stats = &stats["bench-ten"];
    assert_eq!(
        stats.outcomes.get("completed").copied().unwrap_or(0),
        50 + 300 + n as u64,
        "{:?} {:?}",
        stats.outcomes,
        stats.first_failure
    );
    let mut all = stats.latencies_us[350..].to_vec();
    all.sort_unstable();
    println!(
        "{label:<22} low load p50 {:>7.3} ms p99 {:>7.3} ms | saturated {:>7.0} exec/s, p50 {:>7.2} ms p99 {:>7.2} ms | CPU {:>6.1} µs/exec | {:>5} bytes written/exec",
        percentile(&low, 0.5),
        percentile(&low, 0.99),
        n as f64 / took.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        cpu * 1e6 / n as f64,
        written / n as u64,
    );
    node.shutdown().expect("shutdown");
}

/// `EXECUTE_PROFILE=N`: only N executions after the warm-up, for `valgrind
/// --tool=callgrind`, `perf stat` or `strace -c` (compare two values of N for the cost of
/// one execution). One at a time, without fsync; `EXECUTE_PROFILE_DURABLE` set: with group
/// commit; `EXECUTE_PROFILE_SATURATE` set: submitted from 4 threads as fast as possible, as
/// in the saturation phase (with the full instance pool: not under valgrind).
fn profile(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::embedded(dir.path());
    config.durability = if std::env::var_os("EXECUTE_PROFILE_DURABLE").is_some() {
        Durability::GroupCommit
    } else {
        Durability::Buffered
    };
    let saturate = std::env::var_os("EXECUTE_PROFILE_SATURATE").is_some();
    if !saturate {
        // Valgrind cannot reserve the address space of a 64-instance pool.
        config.host.max_concurrent_calls = 1;
    }
    let node = start(config);
    let submit = |name: String, i: usize| submit(&node, name, i);
    for i in 0..50 {
        submit(format!("warm-{i}"), i);
        node.wait_idle();
    }
    if saturate {
        std::thread::scope(|scope| {
            for t in 0..4 {
                scope.spawn(move || {
                    for i in 0..n / 4 {
                        submit(format!("p-{t}-{i}"), i);
                    }
                });
            }
        });
        node.wait_idle();
    } else {
        for i in 0..n {
            submit(format!("p-{i}"), i);
            node.wait_idle();
        }
    }
    node.shutdown().expect("shutdown");
}

/// Disk space the files under `dir` take (allocated blocks: fjall's journals are sparse).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// `EXECUTE_SOAK_SECS=N`: the program at the saturated rate (group commit, 4 submitters)
/// for N seconds on a node with `[retention] executions_secs = audit_secs =
/// EXECUTE_SOAK_WINDOW` (default 60) and an audit key, an operator releasing a checkpoint
/// every 10 s. Prints, every 10 s, completed executions/s and the data directory's size;
/// then its peak and final size, and executions/s before deletion started and with it.
/// `EXECUTE_SOAK_STORE=JOURNAL_MIB,MEMTABLE_MIB` sets the store's sizes (`[node]
/// store_journal_mib`, `store_memtable_mib`; default 64,8).
fn soak(secs: u64) {
    let window = std::env::var("EXECUTE_SOAK_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(60u64);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::embedded(dir.path());
    config.durability = Durability::GroupCommit;
    config.audit_key = Some(ed25519_dalek::SigningKey::from_bytes(&[5; 32]));
    let sizes = std::env::var("EXECUTE_SOAK_STORE").unwrap_or_default();
    if let Some((journal, memtable)) = sizes
        .split_once(',')
        .and_then(|(j, m)| Some((j.parse::<u64>().ok()?, m.parse::<u64>().ok()?)))
    {
        config.store = eyeflow_runtime::store::StoreSizes {
            journal_bytes: journal << 20,
            memtable_bytes: memtable << 20,
        };
    }
    // A window of 0: no retention (to compare).
    config.retention = eyeflow_runtime::retention::RetentionSection {
        executions_secs: Some(window).filter(|w| *w > 0),
        audit_secs: Some(window).filter(|w| *w > 0),
        ..Default::default()
    }
    .policy()
    .expect("policy");
    let node = start(config);
    let completed = |node: &Node| {
        node.stats()
            .get("bench-ten")
            .and_then(|s| s.outcomes.get("completed").copied())
            .unwrap_or(0)
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let (mut peak, mut samples) = (0u64, Vec::new());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (node, stop) = (&node, &stop);
            scope.spawn(move || {
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    submit(node, format!("soak-{t}-{i}"), i);
                    i += 1;
                }
            });
        }
        let mut last = (0.0f64, completed(&node));
        while started.elapsed().as_secs() < secs {
            std::thread::sleep(std::time::Duration::from_secs(10));
            node.release_checkpoint().expect("checkpoint");
            let (at, done) = (started.elapsed().as_secs_f64(), completed(&node));
            let rate = (done - last.1) as f64 / (at - last.0);
            let size = disk_bytes(dir.path());
            peak = peak.max(size);
            println!(
                "soak t={at:>6.0} s  {rate:>6.0} completed/s  data dir {:>7.1} MiB",
                size as f64 / 1048576.0
            );
            samples.push((at, rate));
            last = (at, done);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    node.wait_idle();
    let mean = |keep: &dyn Fn(f64) -> bool| {
        let rates: Vec<f64> = samples
            .iter()
            .filter(|(at, _)| keep(*at))
            .map(|(_, r)| *r)
            .collect();
        rates.iter().sum::<f64>() / rates.len().max(1) as f64
    };
    let window = window as f64;
    println!(
        "soak {secs} s, window {window} s: peak {:.1} MiB, final {:.1} MiB; {:.0} completed/s before deletion (t ≤ {window} s), {:.0} with it (t > {} s)",
        peak as f64 / 1048576.0,
        disk_bytes(dir.path()) as f64 / 1048576.0,
        mean(&|at| at < window + 1.0),
        mean(&|at| at > window + 20.0),
        window + 20.0,
    );
    node.shutdown().expect("shutdown");
    drop(node);
    // How far audit compaction kept up: the entries the chain still holds.
    let store = eyeflow_runtime::store::EmbeddedStore::open(dir.path()).expect("store");
    let audit = eyeflow_runtime::audit::FjallAudit::open(store, Default::default()).expect("audit");
    let (next, _) = audit.head();
    let first = audit.first_kept().expect("first kept");
    println!(
        "soak: the audit chain holds entries {first}..{next} ({} of {next}; about {:.0} s of entries at the mean rate)",
        next - first,
        (next - first) as f64 / (next as f64 / secs as f64),
    );
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("execute bench: run with `cargo bench -p eyeflow-runtime --bench execute`");
        return;
    }
    if let Some(secs) = std::env::var("EXECUTE_SOAK_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        soak(secs);
        return;
    }
    if let Some(n) = std::env::var("EXECUTE_PROFILE")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        profile(n);
        return;
    }
    run("durable (group commit)", Durability::GroupCommit);
    run("durable (fsync each)", Durability::Sync);
    run("no fsync", Durability::Buffered);
}
