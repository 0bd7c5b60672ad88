//! Shared fixtures: stores in temp directories and a local HTTP server with a handler.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eyeflow_runtime::store::EmbeddedStore;

/// A store in a fresh temp directory (kept alive by the returned guard).
pub(crate) fn temp_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    (dir, store)
}

/// Opens the store under `dir`.
pub(crate) fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).expect("store")
}

/// A request the local server received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Received {
    /// The value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON request body")
    }
}

/// What the server answers.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// Wait this long before answering.
    pub(crate) delay: Duration,
}

impl Reply {
    pub(crate) fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
}

type Handler = dyn Fn(&Received) -> Reply + Send + Sync;

/// A local HTTP server on 127.0.0.1; each request is answered on its own thread.
pub(crate) struct HttpServer {
    addr: std::net::SocketAddr,
    pub(crate) received: Arc<Mutex<Vec<Received>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    pub(crate) fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        let handler: Arc<Handler> = Arc::new(handler);
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind"));
        let addr = server.server_addr().to_ip().expect("ip address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let (srv, log) = (server.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            for mut request in srv.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let seen = Received {
                    method: request.method().to_string(),
                    path: request.url().to_owned(),
                    headers: request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                };
                log.lock().expect("request log").push(seen.clone());
                let handler = handler.clone();
                std::thread::spawn(move || {
                    let reply = handler(&seen);
                    std::thread::sleep(reply.delay);
                    let _ = request.respond(
                        tiny_http::Response::from_string(reply.body).with_status_code(reply.status),
                    );
                });
            }
        });
        Self {
            addr,
            received,
            server,
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The requests received so far.
    pub(crate) fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("request log").clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
