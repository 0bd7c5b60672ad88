//! The Redis `node` memory adapter against a real `redis-server`: JSON round trips, TTL
//! expiry, prefix isolation, a refused start, and an outage with recovery.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use eyeflow_actors::ports::{CallErrorKind, NodeMemory};
use eyeflow_runtime::backends::redis::{RedisConfig, RedisNodeMemory};
use eyeflow_tests::eventually;
use eyeflow_tests::servers::free_port;
use eyeflow_tests::servers::redis::RedisServer;
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

fn memory(server: &RedisServer, prefix: &str) -> RedisNodeMemory {
    let mut config = RedisConfig::new(server.url());
    config.prefix = prefix.to_owned();
    RedisNodeMemory::connect(&config).expect("connect to the test redis-server")
}

/// Sends one command to the server over a fresh connection and returns the reply: a bulk
/// string or an integer as text, `None` for a nil reply. Checks what the adapter stored,
/// independently of it.
fn raw(server: &RedisServer, args: &[&str]) -> Option<String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", server.port())).expect("connect to redis-server");
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .expect("send to redis-server");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read redis reply");
    let line = line.trim_end();
    match line.split_at(1) {
        ("$", "-1") => None,
        ("$", len) => {
            let len: usize = len.parse().expect("bulk length");
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).expect("read bulk string");
            body.truncate(len);
            Some(String::from_utf8(body).expect("UTF-8 reply"))
        }
        (":", n) | ("+", n) => Some(n.to_owned()),
        _ => panic!("unexpected redis reply {line:?}"),
    }
}

#[test]
fn json_values_round_trip_as_compact_json_under_the_prefix() {
    let server = RedisServer::start();
    let memory = memory(&server, "eyeflow:");
    let values = [
        json!({"pressure": 4.5, "valve": "V-12", "tags": ["a", "b"], "ok": true, "none": null}),
        json!([1, 2.5, "three", {"four": 4}]),
        json!("a string with \"quotes\" and ünïcode"),
        json!(-17),
        json!(false),
        Value::Null,
    ];
    for (i, value) in values.iter().enumerate() {
        let key = format!("k{i}");
        eyeflow_tests::wait(memory.set(&key, value, HOUR)).unwrap();
        assert_eq!(
            eyeflow_tests::wait(memory.get(&key)).unwrap().as_ref(),
            Some(value)
        );
    }
    assert_eq!(eyeflow_tests::wait(memory.get("never-set")).unwrap(), None);

    eyeflow_tests::wait(memory.set("k0", &json!({"replaced": 1}), HOUR)).unwrap();
    assert_eq!(
        eyeflow_tests::wait(memory.get("k0")).unwrap(),
        Some(json!({"replaced": 1}))
    );
    assert_eq!(
        raw(&server, &["GET", "eyeflow:k0"]).as_deref(),
        Some(r#"{"replaced":1}"#)
    );
    let pttl: u64 = raw(&server, &["PTTL", "eyeflow:k0"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(pttl > 3_500_000 && pttl <= 3_600_000, "PTTL {pttl}");
    assert_eq!(raw(&server, &["GET", "k0"]), None);
}

#[test]
fn entries_expire_after_their_ttl() {
    let server = RedisServer::start();
    let memory = memory(&server, "eyeflow:");
    eyeflow_tests::wait(memory.set("short", &json!("soon gone"), Duration::from_millis(300)))
        .unwrap();
    eyeflow_tests::wait(memory.set("long", &json!("stays"), HOUR)).unwrap();
    eventually("expiry of `short`", Duration::from_secs(10), || {
        eyeflow_tests::wait(memory.get("short"))
            .unwrap()
            .is_none()
            .then_some(())
    });
    assert_eq!(
        eyeflow_tests::wait(memory.get("long")).unwrap(),
        Some(json!("stays"))
    );

    // A zero TTL stores nothing and drops the previous value, as in the embedded scope.
    eyeflow_tests::wait(memory.set("long", &json!("replaced"), Duration::ZERO)).unwrap();
    assert_eq!(eyeflow_tests::wait(memory.get("long")).unwrap(), None);
}

#[test]
fn prefixes_isolate_two_adapters_on_one_server() {
    let server = RedisServer::start();
    let a = memory(&server, "node-a:");
    let b = memory(&server, "node-b:");
    eyeflow_tests::wait(a.set("shared-key", &json!("from a"), HOUR)).unwrap();
    assert_eq!(eyeflow_tests::wait(b.get("shared-key")).unwrap(), None);
    eyeflow_tests::wait(b.set("shared-key", &json!("from b"), HOUR)).unwrap();
    assert_eq!(
        eyeflow_tests::wait(a.get("shared-key")).unwrap(),
        Some(json!("from a"))
    );
    assert_eq!(
        eyeflow_tests::wait(b.get("shared-key")).unwrap(),
        Some(json!("from b"))
    );
    assert_eq!(
        raw(&server, &["GET", "node-a:shared-key"]).as_deref(),
        Some(r#""from a""#)
    );
    assert_eq!(
        raw(&server, &["GET", "node-b:shared-key"]).as_deref(),
        Some(r#""from b""#)
    );
}

#[test]
fn connecting_to_a_dead_port_fails_naming_redis_and_the_url() {
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let start = Instant::now();
    let err = RedisNodeMemory::connect(&RedisConfig::new(url.clone())).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("redis: "), "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn outage_fails_fast_with_unavailable_and_recovers_on_the_same_port() {
    let mut server = RedisServer::start();
    let memory = memory(&server, "eyeflow:");
    eyeflow_tests::wait(memory.set("before", &json!(1), HOUR)).unwrap();
    assert!(memory.healthy());

    server.stop();
    // Generous for a loaded CI machine, far below a hang: the bound is 500 ms per call.
    let bound = Duration::from_secs(5);
    for attempt in 0..3 {
        let start = Instant::now();
        let err = eyeflow_tests::wait(memory.get("before")).unwrap_err();
        assert_eq!(err.kind, CallErrorKind::Unavailable, "{err}");
        assert!(err.reason.starts_with("redis"), "{err}");
        assert!(
            start.elapsed() < bound,
            "get {attempt} took {:?}",
            start.elapsed()
        );

        let start = Instant::now();
        let err = eyeflow_tests::wait(memory.set("during", &json!(attempt), HOUR)).unwrap_err();
        assert_eq!(err.kind, CallErrorKind::Unavailable, "{err}");
        assert!(err.reason.starts_with("redis"), "{err}");
        assert!(
            start.elapsed() < bound,
            "set {attempt} took {:?}",
            start.elapsed()
        );
    }
    assert!(!memory.healthy());

    server.restart();
    eventually("recovery after restart", Duration::from_secs(15), || {
        eyeflow_tests::wait(memory.set("after", &json!("back"), HOUR)).ok()
    });
    assert_eq!(
        eyeflow_tests::wait(memory.get("after")).unwrap(),
        Some(json!("back"))
    );
    // The restarted server persisted nothing.
    assert_eq!(eyeflow_tests::wait(memory.get("before")).unwrap(), None);
    assert!(memory.healthy());
}

/// Sends `signal` (`STOP`, `CONT`) to the server.
fn signal(server: &RedisServer, signal: &str) {
    let pid = server.pid().expect("redis-server runs");
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

#[test]
fn a_frozen_server_times_calls_out_instead_of_hanging_them() {
    let server = RedisServer::start();
    let memory = memory(&server, "eyeflow:");
    eyeflow_tests::wait(memory.set("k", &json!("v"), HOUR)).unwrap();

    // A stopped process keeps its socket: connections and writes succeed, answers never come.
    signal(&server, "STOP");
    let start = Instant::now();
    let err = eyeflow_tests::wait(memory.get("k")).unwrap_err();
    let elapsed = start.elapsed();
    signal(&server, "CONT");
    assert_eq!(err.kind, CallErrorKind::Unavailable, "{err}");
    assert!(err.reason.starts_with("redis"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "get took {elapsed:?}");

    let value = eventually("answers after SIGCONT", Duration::from_secs(15), || {
        eyeflow_tests::wait(memory.get("k")).ok()
    });
    assert_eq!(value, Some(json!("v")));
}
