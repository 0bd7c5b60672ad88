//! A program that calls out and an endpoint that makes it hang: what the bulkhead tests and
//! the `bulkhead` bench put beside a healthy program.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Accepts connections and never answers them, until they are released.
pub struct SlowEndpoint {
    /// Its port on 127.0.0.1.
    pub port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SlowEndpoint {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().expect("held").push(stream);
            }
        });
        Self { port, held }
    }

    /// Connections held open.
    pub fn connections(&self) -> usize {
        self.held.lock().expect("held").len()
    }

    /// Closes every held connection: the calls on them fail at once.
    pub fn release(&self) {
        self.held.lock().expect("held").clear();
    }
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Program `poison` (triggered by hand and by webhook source `poison`): a CALL_API to
/// `127.0.0.1:port` under a timeout of `timeout_ms`, with `policy` (YAML lines of the
/// call, e.g. its retry and fallback, each indented by four spaces), then RETURN.
pub fn rule(port: u16, timeout_ms: u64, policy: &str) -> String {
    format!(
        r#"
id: poison
version: 1.0.0
max_wait_ms: 600000
triggers: [{{kind: manual}}, {{kind: webhook, source: poison}}]
instructions:
  - id: call
    op: CALL_API
    http: {{method: GET, url: "http://127.0.0.1:{port}/poison"}}
    timeout_ms: {timeout_ms}
{policy}    next: done
  - {{id: done, op: RETURN, expression: "call"}}
"#
    )
}
