//! Live upgrade under load and version resolution.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use eyeflow_actors::ports::CallErrorKind;
use semver::Version;
use serde_json::json;

use crate::support::{Node, cap, signed};

#[test]
fn resolution_picks_the_highest_compatible_version() {
    let node = Node::new();
    node.install("fixture-echo");
    node.install("fixture-echo-v2");
    let version = |req: &str| {
        node.host
            .invoke(
                &cap("fixture-echo", req),
                "ping",
                &json!({}),
                "k",
                Duration::from_secs(5),
            )
            .map(|out| out["version"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(version("^1").unwrap(), "1.0.0");
    assert_eq!(version(">=1").unwrap(), "2.0.0");
    assert_eq!(version("^2").unwrap(), "2.0.0");
    let err = version("^3").unwrap_err();
    assert_eq!(err.kind, CallErrorKind::NotFound, "{err}");
    assert!(err.message.contains("fixture-echo@^3"), "{err}");
}

#[test]
fn upgrade_under_load_drops_nothing_and_switches_at_install() {
    let node = Arc::new(Node::new());
    node.install("fixture-echo");
    let installed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let (node, installed, stop, calls) =
                (node.clone(), installed.clone(), stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut stale = 0u64;
                let mut seen_v2 = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let after_install = installed.load(Ordering::SeqCst);
                    let key = format!("w{worker}/{n}/1");
                    match node.host.invoke(
                        &cap("fixture-echo", ">=1"),
                        "ping",
                        &json!({"n": n}),
                        &key,
                        Duration::from_secs(5),
                    ) {
                        Ok(out) => {
                            let v2 = out["version"] == "2.0.0";
                            seen_v2 += u64::from(v2);
                            if after_install && !v2 {
                                stale += 1;
                            }
                            assert_eq!(out["input"]["n"], n);
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                    n += 1;
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                (failures, stale, seen_v2, n)
            })
        })
        .collect();
    // Let the load run, then upgrade and revoke the old version mid-stream.
    eyeflow_tests::eventually("200 calls under load", Duration::from_secs(60), || {
        (calls.load(Ordering::Relaxed) >= 200).then_some(())
    });
    node.host
        .install(&signed("fixture-echo-v2", &node.key))
        .expect("install v2");
    installed.store(true, Ordering::SeqCst);
    node.host
        .revoke("fixture-echo", &Version::new(1, 0, 0))
        .expect("revoke v1");
    let before = calls.load(Ordering::Relaxed);
    eyeflow_tests::eventually(
        "200 more calls after the upgrade",
        Duration::from_secs(60),
        || (calls.load(Ordering::Relaxed) >= before + 200).then_some(()),
    );
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for worker in workers {
        let (failures, stale, seen_v2, n) = worker.join().expect("worker");
        assert!(failures.is_empty(), "failed calls: {failures:?}");
        assert_eq!(stale, 0, "calls started after the install saw v1");
        assert!(seen_v2 > 0);
        total += n;
    }
    assert!(total >= 400, "{total} calls");
}
