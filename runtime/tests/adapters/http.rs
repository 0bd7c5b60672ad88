//! The reqwest HTTP adapter against a local server.

use std::time::{Duration, Instant};

use eyeflow_actors::ports::{CallErrorKind, HttpPort, HttpRequest};
use eyeflow_runtime::http::{MAX_BODY, ReqwestHttp};
use serde_json::{Value, json};

use crate::support::{HttpServer, Reply};

fn request(method: &str, url: String) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        url,
        headers: Vec::new(),
        body: None,
        timeout: Duration::from_secs(5),
        idempotency_key: None,
    }
}

fn server() -> HttpServer {
    HttpServer::start(|r| match r.path.as_str() {
        "/json" => Reply::new(200, r#"{"ok":true,"n":[1,2]}"#),
        "/echo" => Reply::new(201, r.body.clone()),
        "/missing" => Reply::new(404, r#"{"error":"no such thing"}"#),
        "/text" => Reply::new(200, "plain words"),
        "/empty" => Reply::new(204, ""),
        "/redirect" => Reply::new(302, "elsewhere"),
        "/big" => Reply::new(200, "x".repeat(MAX_BODY + 1)),
        "/slow" => Reply {
            delay: Duration::from_secs(3),
            ..Reply::new(200, "{}")
        },
        _ => Reply::new(500, "?"),
    })
}

#[test]
fn json_bodies_statuses_and_headers() {
    let server = server();
    let http = ReqwestHttp::new().unwrap();
    let response = eyeflow_tests::wait(http.send(&request("GET", server.url("/json")))).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({"ok": true, "n": [1, 2]}));

    let mut post = request("POST", server.url("/echo"));
    post.body = Some(json!({"valve": "open", "pct": 40}));
    post.headers = vec![("X-Trace".into(), "t-1".into())];
    post.idempotency_key = Some("x0000000000000001/open/1".into());
    let response = eyeflow_tests::wait(http.send(&post)).unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.body, json!({"valve": "open", "pct": 40}));
    let seen = server.requests().pop().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.json(), json!({"valve": "open", "pct": 40}));
    assert_eq!(
        seen.header("Idempotency-Key"),
        Some("x0000000000000001/open/1")
    );
    assert_eq!(seen.header("Content-Type"), Some("application/json"));
    assert_eq!(seen.header("X-Trace"), Some("t-1"));

    // Without a key, no Idempotency-Key header.
    eyeflow_tests::wait(http.send(&request("GET", server.url("/json")))).unwrap();
    assert_eq!(
        server.requests().pop().unwrap().header("Idempotency-Key"),
        None
    );

    // Non-2xx answers are responses.
    let response = eyeflow_tests::wait(http.send(&request("GET", server.url("/missing")))).unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(response.body, json!({"error": "no such thing"}));
}

#[test]
fn non_json_empty_redirect_and_oversized_bodies() {
    let server = server();
    let http = ReqwestHttp::new().unwrap();
    let text = eyeflow_tests::wait(http.send(&request("GET", server.url("/text")))).unwrap();
    assert_eq!(text.body, Value::String("plain words".into()));
    let empty = eyeflow_tests::wait(http.send(&request("GET", server.url("/empty")))).unwrap();
    assert_eq!((empty.status, empty.body), (204, Value::Null));
    let redirect =
        eyeflow_tests::wait(http.send(&request("GET", server.url("/redirect")))).unwrap();
    assert_eq!(redirect.status, 302, "redirects are not followed");
    let big = eyeflow_tests::wait(http.send(&request("GET", server.url("/big")))).unwrap_err();
    assert_eq!(big.kind, CallErrorKind::InvalidOutput);
}

#[test]
fn a_slow_server_times_out() {
    let server = server();
    let http = ReqwestHttp::new().unwrap();
    let mut slow = request("GET", server.url("/slow"));
    slow.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = eyeflow_tests::wait(http.send(&slow)).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.origin, server.url("").trim_start_matches("http://"));
}

#[test]
fn transport_and_input_errors() {
    let http = ReqwestHttp::new().unwrap();
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = eyeflow_tests::wait(http.send(&request("GET", format!("http://127.0.0.1:{port}/"))))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Unavailable, "{err}");
    assert_eq!(err.origin, format!("127.0.0.1:{port}"));

    let err = eyeflow_tests::wait(http.send(&request("GET", "not a url".into()))).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput);
    let err =
        eyeflow_tests::wait(http.send(&request("GET", "file:///etc/passwd".into()))).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput);
    let err = eyeflow_tests::wait(http.send(&request("BAD METHOD", "http://127.0.0.1/".into())))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::InvalidInput);
}
