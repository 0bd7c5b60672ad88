//! Sustained webhook load against a real `eyeflow node` process on loopback:
//! `cargo bench -p eyeflow-runtime --bench load`.
//!
//! The node (durable, group commit) runs the valve-guard rule with the bundled plugins;
//! `EYEFLOW_LOAD_CONNECTIONS` keep-alive clients (default 32) post readings to
//! `/api/events/boiler-1-pressure` for `EYEFLOW_LOAD_SECS` seconds (default 60), each with
//! its own event id. Then the node drains (SIGTERM) and the bench reads its data directory:
//! every 202 must be one journaled, finished execution (zero lost), and the latency from
//! acceptance to the execution's last audit entry gives p50/p99. It reports *completed*
//! executions per second (from the first acceptance to the last end), how every execution
//! ended (completed, failed by class), how many were admitted past their `max_wait`, the
//! requests refused as `overloaded` (503), and the node's peak RSS. `EYEFLOW_LOAD_CONFIG` names
//! a TOML file whose sections are appended to the node's config (e.g. Redis, Kafka,
//! OpenBao backends).

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eyeflow_runtime::audit::{AuditConfig, FjallAudit};
use eyeflow_runtime::journal::FjallJournal;
use eyeflow_runtime::store::{Durability, EmbeddedStore};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) only
    // checks that the bench builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = env_or("EYEFLOW_LOAD_SECS", 60);
    let connections = env_or("EYEFLOW_LOAD_CONNECTIONS", 32);
    // The node's directory as the tests make it (trusted key, tokens), with this bench's
    // config.
    let workdir = eyeflow_tests::node::Workdir::new("");
    let work = workdir.path();
    let extra = std::env::var("EYEFLOW_LOAD_CONFIG")
        .map(|p| std::fs::read_to_string(p).expect("EYEFLOW_LOAD_CONFIG readable"))
        .unwrap_or_default();
    std::fs::write(
        work.join("node.toml"),
        format!(
            "[node]\ndata_dir = \"data\"\ndurability = \"group-commit\"\nhttp_allow = []\n\n[api]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n{extra}"
        ),
    )
    .expect("config");
    let operator = workdir.operator.clone();
    let (mut child, url) = workdir.start();
    for name in ["sensor-sim", "valve-sim", "webhook-notify"] {
        workdir.install(&url, name, &[]);
    }
    let rule = std::fs::read_to_string(
        eyeflow_tests::node::repo().join("examples/rules/valve-guard.yaml"),
    )
    .expect("valve-guard rule");
    workdir.deploy(&url, &rule);

    println!(
        "load: {connections} connections for {seconds} s against {url} (valve-guard, group commit)"
    );
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let overloaded = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|c| {
            let (accepted, refused, stop) = (accepted.clone(), refused.clone(), stop.clone());
            let overloaded = overloaded.clone();
            let (url, token) = (url.clone(), operator.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let response = client
                        .post(format!("{url}/api/events/boiler-1-pressure"))
                        .bearer_auth(&token)
                        .header("x-event-id", format!("load-{c}-{n}"))
                        .header("content-type", "application/json")
                        .body(format!("{{\"value\": 8.{}}}", 5 + n % 5))
                        .send();
                    match response {
                        Ok(r) if r.status().as_u16() == 202 => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) if r.status().as_u16() == 503 => {
                            overloaded.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("load thread");
    }
    let elapsed = started.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);

    // Peak RSS of the node so far (the load is over; the drain only finishes work).
    let pid = child.id().to_string();
    let peak_rss_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    // Drain, then read the record of truth.
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let exit = child.wait().expect("node exits");
    assert!(exit.success(), "node exit {exit:?}");
    let store = EmbeddedStore::open(&work.join("data")).expect("store");
    let journal = FjallJournal::open(store.clone(), Durability::Buffered).expect("journal");
    let counts = journal.counts().expect("counts");
    let audit = FjallAudit::open(store, AuditConfig::default()).expect("audit");
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut from = 0;
    loop {
        let page = audit.entries(from, 10_000).expect("audit entries");
        let Some(tail) = page.last() else { break };
        from = tail.index + 1;
        for e in page {
            let t = last.entry(e.entry.execution_id.clone()).or_default();
            *t = (*t).max(e.entry.finished_ms);
        }
    }
    let mut latencies: Vec<u64> = Vec::with_capacity(last.len());
    for pending in journal.pending_executions().expect("pending") {
        println!("unfinished after drain: {}", pending.execution_id);
    }
    for (execution, end) in &last {
        if let Some((event, _, _)) = journal.execution(execution).expect("execution") {
            latencies.push(end.saturating_sub(event.accepted_at_ms));
        }
    }
    latencies.sort_unstable();
    // How each execution ended, and which were admitted late.
    let mut ended: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut first_accepted, mut last_end) = (u64::MAX, 0u64);
    let mut late = 0u64;
    for (execution, end) in &last {
        let Some((event, steps, outcome)) = journal.execution(execution).expect("execution") else {
            continue;
        };
        first_accepted = first_accepted.min(event.accepted_at_ms);
        last_end = last_end.max(*end);
        if steps.iter().any(|s| {
            matches!(&s.outcome, eyeflow_actors::ports::StepOutcome::Failed { message, .. }
                if message.contains("for a worker"))
        }) {
            late += 1;
        }
        let name = match outcome {
            Some(eyeflow_actors::ports::ExecutionOutcome::Completed { .. }) => {
                "completed".to_owned()
            }
            Some(eyeflow_actors::ports::ExecutionOutcome::Failed { class, .. }) => {
                format!("failed:{class}")
            }
            Some(eyeflow_actors::ports::ExecutionOutcome::Rejected { .. }) => "rejected".to_owned(),
            None => "unfinished".to_owned(),
        };
        *ended.entry(name).or_default() += 1;
    }
    let completed = ended.get("completed").copied().unwrap_or(0);
    let span_s = (last_end.saturating_sub(first_accepted) as f64 / 1000.0).max(0.001);
    println!(
        "accepted {accepted} events in {:.1} s = {:.0} events/s; 503 overloaded {}; other refused/failed requests {refused}",
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64(),
        overloaded.load(Ordering::Relaxed)
    );
    println!(
        "completed {completed} executions in {span_s:.1} s = {:.0} completed/s; ended: {ended:?}; admitted past max_wait: {late}; node peak RSS {} MiB",
        completed as f64 / span_s,
        peak_rss_kib / 1024
    );
    println!(
        "journal: {} executions, {} finished, {} pending; lost {}",
        counts.executions,
        counts.finished,
        counts.pending,
        accepted.saturating_sub(counts.finished + counts.pending)
    );
    println!(
        "accept → last audit entry: p50 {} ms, p99 {} ms, max {} ms ({} executions)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
        latencies.len()
    );
    assert_eq!(
        counts.executions, accepted,
        "every 202 is one journaled execution"
    );
}
