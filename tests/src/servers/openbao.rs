//! An OpenBao dev server (`bao server -dev`: in memory, unsealed, KV v2 mounted at
//! `secret/`) with a random root token, and the setup calls the Vault tests need: secrets,
//! policies, tokens and AppRoles, made over its HTTP API with the root token.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};

use super::{Process, find_binary, free_port, wait_for_port};

/// A running `bao server -dev`, killed when dropped.
#[derive(Debug)]
pub struct OpenBao {
    process: Process,
    port: u16,
    root_token: String,
    client: Client,
}

impl OpenBao {
    /// Starts a dev server on a free loopback port and waits until `/v1/sys/health` says it
    /// is unsealed and active.
    pub fn start() -> Self {
        let bao = find_binary("bao", "EYEFLOW_BAO");
        let port = port_pair();
        let root_token = format!("root-{:016x}", RandomState::new().build_hasher().finish());
        let mut command = Command::new(bao);
        command
            .arg("server")
            .arg("-dev")
            .arg("-dev-no-store-token")
            .arg(format!("-dev-root-token-id={root_token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Process::spawn("bao server -dev", command);
        wait_for_port("OpenBao", port, Duration::from_secs(30));
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client for OpenBao");
        let bao = Self {
            process,
            port,
            root_token,
            client,
        };
        bao.wait_healthy(Duration::from_secs(30));
        bao
    }

    /// `http://127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The root token.
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// Kills the server now (later calls fail to connect).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Writes a new version of the KV v2 secret at `path` under the `secret/` mount with
    /// `data`, e.g. `{"value": "s3cret"}`.
    pub fn put_secret(&self, path: &str, data: &Value) {
        self.root(
            reqwest::Method::POST,
            &format!("secret/data/{path}"),
            Some(&json!({ "data": data })),
        );
    }

    /// Creates or replaces ACL policy `name` with the HCL `rules`.
    pub fn write_policy(&self, name: &str, rules: &str) {
        self.root(
            reqwest::Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(&json!({ "policy": rules })),
        );
    }

    /// A new renewable token carrying `policies` (and `default`) that lives `ttl`, such as
    /// `"3s"` or `"1h"`, between renewals.
    pub fn create_token(&self, policies: &[&str], ttl: &str) -> String {
        let answer = self.root(
            reqwest::Method::POST,
            "auth/token/create",
            Some(&json!({ "policies": policies, "ttl": ttl, "renewable": true })),
        );
        answer["auth"]["client_token"]
            .as_str()
            .expect("token create answers a client_token")
            .to_owned()
    }

    /// Enables the AppRole auth method at `auth/approle` (once per server) and creates
    /// `role` whose tokens carry `policies` and live `token_ttl` (e.g. `"1h"`). Returns
    /// `(role_id, secret_id)`.
    pub fn approle(&self, role: &str, policies: &[&str], token_ttl: &str) -> (String, String) {
        let auths = self.root(reqwest::Method::GET, "sys/auth", None);
        if auths["data"]["approle/"].is_null() {
            self.root(
                reqwest::Method::POST,
                "sys/auth/approle",
                Some(&json!({ "type": "approle" })),
            );
        }
        self.root(
            reqwest::Method::POST,
            &format!("auth/approle/role/{role}"),
            Some(&json!({ "token_policies": policies, "token_ttl": token_ttl })),
        );
        let role_id = self.root(
            reqwest::Method::GET,
            &format!("auth/approle/role/{role}/role-id"),
            None,
        );
        let secret_id = self.root(
            reqwest::Method::POST,
            &format!("auth/approle/role/{role}/secret-id"),
            Some(&json!({})),
        );
        (
            role_id["data"]["role_id"]
                .as_str()
                .expect("role-id answers a role_id")
                .to_owned(),
            secret_id["data"]["secret_id"]
                .as_str()
                .expect("secret-id answers a secret_id")
                .to_owned(),
        )
    }

    /// A request to `/v1/{path}` with the root token; panics unless it succeeds. Returns the
    /// JSON answer (`null` for an empty body).
    pub fn root(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}/v1/{path}", self.addr());
        let mut request = self
            .client
            .request(method.clone(), &url)
            .header("X-Vault-Token", &self.root_token);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let text = response
            .text()
            .unwrap_or_else(|e| panic!("{method} {url}: reading the answer: {e}"));
        assert!(status.is_success(), "{method} {url}: {status}: {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
        }
    }

    fn wait_healthy(&self, timeout: Duration) {
        let url = format!("{}/v1/sys/health", self.addr());
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self
                .client
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("OpenBao at {url} was not healthy within {timeout:?}");
    }
}

/// A free port whose successor is free too: the dev server also binds its cluster listener
/// on `port + 1`.
fn port_pair() -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free loopback ports");
}
