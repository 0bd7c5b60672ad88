//! The daemon under test: a data directory with a trusted publisher key, signed programs
//! and packages, `eyeflow node` as a child process, and an HTTP client with tokens.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::SigningKey;
use eyeflow_runtime::plugins::Package;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;

pub(crate) fn eyeflow(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eyeflow"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the eyeflow binary runs")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn base64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

fn plugins_dir() -> PathBuf {
    let dir = std::env::var_os("EYEFLOW_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    assert!(
        dir.join("valve-sim.wasm").exists(),
        "built plugins missing in {}: run scripts/build-plugins.sh first",
        dir.display()
    );
    dir
}

/// A work directory with a publisher key (`admin.key`) trusted by the node's data
/// directory (`data/`).
pub(crate) struct Setup {
    dir: tempfile::TempDir,
    key: SigningKey,
}

impl Setup {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = SigningKey::from_bytes(&[42; 32]);
        eyeflow_ir::keys::write_keypair(&dir.path().join("admin"), &key).expect("key files");
        std::fs::create_dir(dir.path().join("data")).expect("a new data directory");
        let out = eyeflow(
            &["keys", "trust", "admin.pub", "--data-dir", "data"],
            dir.path(),
        );
        assert!(out.status.success(), "keys trust: {}", stderr(&out));
        Self { dir, key }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A token of this node for `role`.
    pub(crate) fn issue(&self, role: &str) -> String {
        let out = eyeflow(
            &["tokens", "issue", "--role", role, "--data-dir", "data"],
            self.dir(),
        );
        assert!(out.status.success(), "tokens issue: {}", stderr(&out));
        stdout(&out).trim().to_owned()
    }

    fn parts(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        let dir = plugins_dir();
        (
            std::fs::read(dir.join(format!("{name}.json"))).expect("manifest"),
            std::fs::read(dir.join(format!("{name}.wasm"))).expect("component"),
        )
    }

    /// A built plugin as a signed package file's bytes.
    pub(crate) fn package(&self, name: &str) -> Vec<u8> {
        let (manifest, wasm) = self.parts(name);
        let mut package = Package::new(manifest, wasm).expect("package");
        package.sign(&self.key);
        package.to_bytes()
    }

    /// A built plugin as a package file's bytes signed by `key`, with `version` as its
    /// version (and that of every capability it provides) when given.
    pub(crate) fn package_by(
        &self,
        name: &str,
        key: &SigningKey,
        version: Option<&str>,
    ) -> Vec<u8> {
        let (manifest, wasm) = self.parts(name);
        let manifest = match version {
            None => manifest,
            Some(version) => {
                let mut value: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
                value["version"] = version.into();
                if let Some(provides) = value["provides"].as_array_mut() {
                    for provided in provides {
                        provided["version"] = version.into();
                    }
                }
                serde_json::to_vec(&value).expect("JSON")
            }
        };
        let mut package = Package::new(manifest, wasm).expect("package");
        package.sign(key);
        package.to_bytes()
    }

    pub(crate) fn unsigned_package(&self, name: &str) -> Vec<u8> {
        let (manifest, wasm) = self.parts(name);
        Package::new(manifest, wasm).expect("package").to_bytes()
    }

    pub(crate) fn plugin_version(&self, name: &str) -> String {
        let (manifest, _) = self.parts(name);
        let manifest: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
        manifest["version"].as_str().expect("version").to_owned()
    }

    /// `rule` compiled and signed by the trusted key.
    pub(crate) fn compile(&self, rule: &str) -> Vec<u8> {
        let options = eyeflow_compiler::CompileOptions {
            source_name: "rule.yaml".to_owned(),
            compiled_by: "tests".to_owned(),
            compiled_at: 1_700_000_000,
        };
        let program =
            eyeflow_compiler::compile_and_sign(rule, &options, &self.key).expect("rule compiles");
        eyeflow_ir::encode(&program)
    }

    /// `rule` compiled, not signed: a program to edit by hand before [`Setup::sign`].
    pub(crate) fn draft(&self, rule: &str) -> eyeflow_ir::pb::LlmIrProgram {
        let options = eyeflow_compiler::CompileOptions {
            source_name: "rule.yaml".to_owned(),
            compiled_by: "tests".to_owned(),
            compiled_at: 1_700_000_000,
        };
        eyeflow_compiler::compile(rule, &options).expect("rule compiles")
    }

    /// `program` signed by the trusted key, encoded: whatever the compiler would refuse.
    pub(crate) fn sign(&self, mut program: eyeflow_ir::pb::LlmIrProgram) -> Vec<u8> {
        eyeflow_ir::keys::sign(&mut program, &self.key);
        eyeflow_ir::encode(&program)
    }

    /// The trusted key.
    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Key id of the trusted key.
    pub(crate) fn key_id(&self) -> String {
        eyeflow_ir::keys::key_id(&self.key.verifying_key())
    }

    /// Writes `bytes` under the work directory; returns the path.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path.display().to_string()
    }
}

/// `eyeflow node` on a free port, with an admin, operator and viewer token.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) url: String,
    pub(crate) admin: String,
    pub(crate) operator: String,
    pub(crate) viewer: String,
    client: Client,
}

impl Daemon {
    /// Starts the node on `setup`'s data directory; `api` lines go into `[api]`.
    pub(crate) fn start(setup: &Setup, api: &[&str]) -> Self {
        let config = setup.dir().join("node.toml");
        let text = format!(
            "[node]\ndata_dir = \"data\"\nworkers = 2\n\n[api]\nlisten = \"127.0.0.1:0\"\n{}\n",
            api.join("\n")
        );
        std::fs::write(&config, text).expect("config");
        let admin = setup.issue("admin");
        let mut child = Command::new(env!("CARGO_BIN_EXE_eyeflow"))
            .args(["node", "--config", "node.toml"])
            .current_dir(setup.dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("eyeflow node starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next()
            .expect("the node prints its address")
            .expect("stdout line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in `{line}`"))
            .to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url,
            admin,
            operator: setup.issue("operator"),
            viewer: setup.issue("viewer"),
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().expect("the node answers");
        let status = response.status();
        (status, response.text().expect("body"))
    }

    fn json(
        &self,
        request: reqwest::blocking::RequestBuilder,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, text) = self.send(request, token);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
        (status, value)
    }

    /// Any request; a body that is not JSON (Prometheus text) comes back as a string.
    pub(crate) fn request_any(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, text) = self.send(self.client.request(method, self.url(path)), token);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub(crate) fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.json(self.client.get(self.url(path)), token)
    }

    pub(crate) fn get_text(&self, path: &str, token: Option<&str>) -> String {
        let (status, text) = self.send(self.client.get(self.url(path)), token);
        assert_eq!(status, StatusCode::OK, "{text}");
        text
    }

    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        self.json(self.client.request(method, self.url(path)), token)
    }

    /// A POST of `body` as `content_type`.
    fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::blocking::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
    }

    /// POSTs `body` as `content_type`.
    fn post_body(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        self.json(self.post(path, content_type, body), token)
    }

    pub(crate) fn post_bytes(
        &self,
        path: &str,
        bytes: &[u8],
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        self.post_body(path, "application/octet-stream", bytes.to_vec(), token)
    }

    pub(crate) fn post_text(
        &self,
        path: &str,
        text: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        self.post_body(path, "text/yaml", text.as_bytes().to_vec(), token)
    }

    /// POSTs `body` with `content_type` (`None`: no Content-Type header at all).
    pub(crate) fn post_as(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let request = self.client.post(self.url(path)).body(body.to_vec());
        let request = match content_type {
            Some(content_type) => request.header("content-type", content_type),
            None => request,
        };
        self.json(request, token)
    }

    pub(crate) fn post_raw_json(
        &self,
        path: &str,
        bytes: &[u8],
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        self.post_body(path, "application/json", bytes.to_vec(), token)
    }

    pub(crate) fn post_json(
        &self,
        path: &str,
        body: &Value,
        event_id: Option<&str>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.post(path, "application/json", body.to_string().into_bytes());
        if let Some(id) = event_id {
            request = request.header("x-event-id", id);
        }
        self.json(request, token)
    }

    /// Polls `path` until `done` holds (30 s at most).
    pub(crate) fn wait_for(
        &self,
        path: &str,
        token: Option<&str>,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eyeflow_tests::eventually(
            &format!("{path} reached the state"),
            Duration::from_secs(30),
            || {
                let (status, body) = self.get(path, token);
                (status == StatusCode::OK && done(&body)).then_some(body)
            },
        )
    }

    /// Journal counts from `GET /api/executions/summary`.
    pub(crate) fn journal_summary(&self) -> Value {
        let (status, body) = self.get("/api/executions/summary", Some(&self.viewer));
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn sigterm(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        self.child.wait().expect("the node exits")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
