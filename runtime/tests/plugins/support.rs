//! Shared fixtures: built plugins, a signed-package factory, a host on a temp data dir,
//! and a local HTTP server on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use eyeflow_actors::ports::{
    CallError, CallErrorKind, CapabilityRef, Secret, SecretError, SecretSource,
};
use eyeflow_runtime::plugins::{HostConfig, Package, PluginHost};
use eyeflow_runtime::secrets::LocalSecrets;
use eyeflow_runtime::store::EmbeddedStore;
use serde_json::Value;

/// Where `scripts/build-plugins.sh` puts the components and manifests.
pub(crate) fn plugins_dir() -> PathBuf {
    let dir = std::env::var_os("EYEFLOW_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    assert!(
        dir.join("fixture-echo.wasm").exists(),
        "built plugins missing in {}: run scripts/build-plugins.sh first",
        dir.display()
    );
    dir
}

/// The component and manifest of a built plugin.
pub(crate) fn parts(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = plugins_dir();
    let wasm = std::fs::read(dir.join(format!("{name}.wasm"))).expect("component");
    let manifest = std::fs::read(dir.join(format!("{name}.json"))).expect("manifest");
    (manifest, wasm)
}

/// A built plugin as a package signed by `key`.
pub(crate) fn signed(name: &str, key: &SigningKey) -> Package {
    let (manifest, wasm) = parts(name);
    let mut package = Package::new(manifest, wasm).expect("package");
    package.sign(key);
    package
}

/// A deterministic test key.
pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A host on a temp data dir whose keyring trusts `key(1)`.
pub(crate) struct Node {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) host: PluginHost,
    pub(crate) key: SigningKey,
}

impl Node {
    pub(crate) fn new() -> Self {
        Self::with_config(HostConfig::default())
    }

    pub(crate) fn with_config(config: HostConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = key(1);
        let host = open(dir.path(), &key, config);
        Self { dir, host, key }
    }

    /// Installs a built plugin signed with the trusted key.
    pub(crate) fn install(&self, name: &str) {
        self.host
            .install(&signed(name, &self.key))
            .expect("install");
    }

    /// Drops the host and reopens the same data directory.
    pub(crate) fn reopen(&mut self) {
        let config = HostConfig::default();
        // The store is single-process: drop the old host (and its store) first.
        let placeholder = tempfile::tempdir().expect("temp dir");
        let old = std::mem::replace(
            &mut self.host,
            open(placeholder.path(), &self.key, config.clone()),
        );
        drop(old);
        self.host = open(self.dir.path(), &self.key, config);
    }

    /// Invokes `action` under the idempotency key `e1/i1/1`.
    pub(crate) fn invoke(
        &self,
        capability: &str,
        action: &str,
        input: Value,
    ) -> Result<Value, CallError> {
        self.invoke_with_key(capability, action, input, "e1/i1/1")
    }

    /// Invokes `action` under `idempotency_key`.
    pub(crate) fn invoke_with_key(
        &self,
        capability: &str,
        action: &str,
        input: Value,
        idempotency_key: &str,
    ) -> Result<Value, CallError> {
        invoke(&self.host, capability, action, input, idempotency_key)
    }

    pub(crate) fn read(
        &self,
        connector: &str,
        key: &str,
        params: Value,
    ) -> Result<Value, CallError> {
        self.host
            .read(&cap(connector, "*"), key, &params, Duration::from_secs(5))
    }
}

/// Invokes `action` of `capability` (any version) on `host` under `idempotency_key`.
pub(crate) fn invoke(
    host: &PluginHost,
    capability: &str,
    action: &str,
    input: Value,
    idempotency_key: &str,
) -> Result<Value, CallError> {
    host.invoke(
        &cap(capability, "*"),
        action,
        &input,
        idempotency_key,
        Duration::from_secs(5),
    )
}

/// A host on the store in `dir` whose keyring trusts `key` (what [`Node`] opens; for a test
/// that shares a data directory with another process).
pub(crate) fn open(dir: &Path, key: &SigningKey, config: HostConfig) -> PluginHost {
    let store = EmbeddedStore::open(dir).expect("store");
    store.trust_key(&key.verifying_key()).expect("trust");
    let secrets = LocalSecrets::from_pairs([("webhook-token", "s3cr3t-t0ken"), ("other", "x")]);
    PluginHost::open(store, Arc::new(TestSecrets(secrets)), config).expect("host")
}

/// The node's secrets: those of the local file, except that the source refuses
/// `denied-token` (as a Vault policy would) and cannot reach its backend for
/// `unreachable-token`.
struct TestSecrets(LocalSecrets);

#[async_trait::async_trait]
impl SecretSource for TestSecrets {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        let refuse = |kind, why: &str| {
            Err(SecretError::new(
                name,
                kind,
                format!("vault at http://127.0.0.1:8200: {why}"),
            ))
        };
        match name {
            "denied-token" => refuse(CallErrorKind::Denied, "permission denied"),
            "unreachable-token" => refuse(CallErrorKind::Unavailable, "connection refused"),
            _ => self.0.get(name).await,
        }
    }
}

pub(crate) fn cap(id: &str, req: &str) -> CapabilityRef {
    CapabilityRef::new(id, semver::VersionReq::parse(req).expect("version req"))
}

/// A request the local server received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) body: String,
    pub(crate) authorization: Option<String>,
}

/// A local HTTP server on 127.0.0.1 answering each path from a table.
pub(crate) struct HttpServer {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) received: Arc<Mutex<Vec<Received>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// `routes`: path → (status, body).
    pub(crate) fn start(routes: Vec<(&'static str, u16, &'static str)>) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind"));
        let addr = server.server_addr().to_ip().expect("ip address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let (srv, log) = (server.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            for mut request in srv.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let authorization = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string());
                let url = request.url().to_owned();
                log.lock().expect("request log").push(Received {
                    method: request.method().to_string(),
                    body,
                    authorization,
                });
                let (status, text) = routes
                    .iter()
                    .find(|(path, _, _)| *path == url.split('?').next().unwrap_or(""))
                    .map(|(_, s, b)| (*s, *b))
                    .unwrap_or((404, "{\"error\":\"not found\"}"));
                let _ = request
                    .respond(tiny_http::Response::from_string(text).with_status_code(status));
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

    pub(crate) fn host_port(&self) -> String {
        self.addr.to_string()
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
