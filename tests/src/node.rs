//! The real `eyeflow` binary as a child process: a client command, or a node started with a
//! configuration file, its API URL read from the banner line it prints once it serves; and
//! [`Workdir`], a node's directory for one test (trusted key, config, tokens) with the API
//! calls the tests make (install plugins, deploy rules, send events, read executions).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ed25519_dalek::SigningKey;
use eyeflow_runtime::plugins::Package;
use serde_json::Value;

/// Bundled plugin `name` (from `target/plugins`: `scripts/build-plugins.sh`), signed with
/// `key`.
pub fn bundled_package(name: &str, key: &SigningKey) -> Package {
    let plugins = repo().join("target/plugins");
    let manifest = std::fs::read(plugins.join(format!("{name}.json")))
        .expect("built plugins (scripts/build-plugins.sh)");
    let wasm = std::fs::read(plugins.join(format!("{name}.wasm"))).expect("component");
    let mut package = Package::new(manifest, wasm).expect("package");
    package.sign(key);
    package
}

/// The `eyeflow` binary cargo built for this workspace (beside the running test's
/// executable, in `target/<profile>/`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let binary = profile.join("eyeflow");
    assert!(
        binary.exists(),
        "{} missing: build the workspace first",
        binary.display()
    );
    binary
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// A rule that only computes (webhook `plain`, `{"a": n}` → `n + 1`): the healthy program
/// beside the one a test stresses.
pub const PLAIN_RULE: &str = r#"
id: plain
version: 1.0.0
triggers:
  - {kind: webhook, source: plain}
instructions:
  - {id: sum, op: EVAL, expression: "event.a + 1", next: done}
  - {id: done, op: RETURN, expression: "sum"}
"#;

/// A node's working directory for one test: `admin.key`/`admin.pub` trusted by the data
/// directory `data`, `node.toml`, and admin and operator tokens.
pub struct Workdir {
    dir: tempfile::TempDir,
    /// The key that signs the test's plugins and programs.
    pub key: SigningKey,
    /// An admin token.
    pub admin: String,
    /// An operator token.
    pub operator: String,
    client: reqwest::blocking::Client,
    /// Nodes started here: killed when the test ends, even by a panic (a node left running
    /// would hold the test's output open and hang the run).
    started: std::sync::Mutex<Vec<u32>>,
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let pids = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for pid in pids.iter() {
            // Only if it is still our node (a stopped one's pid may be reused).
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(4).any(|w| w == b"node"));
            if ours {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl Workdir {
    /// A new directory whose `node.toml` serves the API on a free port with the data
    /// directory `data`, plus `extra` (more TOML, appended).
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = SigningKey::from_bytes(&[42; 32]);
        eyeflow_ir::keys::write_keypair(&dir.path().join("admin"), &key).expect("key");
        std::fs::create_dir(dir.path().join("data")).expect("a new data directory");
        run(
            &binary(),
            &["keys", "trust", "admin.pub", "--data-dir", "data"],
            dir.path(),
        );
        std::fs::write(
            dir.path().join("node.toml"),
            format!("[node]\ndata_dir = \"data\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n{extra}"),
        )
        .expect("config");
        let token = |role: &str| {
            run(
                &binary(),
                &["tokens", "issue", "--role", role, "--data-dir", "data"],
                dir.path(),
            )
        };
        let (admin, operator) = (token("admin"), token("operator"));
        Self {
            dir,
            key,
            admin,
            operator,
            client: reqwest::blocking::Client::new(),
            started: std::sync::Mutex::default(),
        }
    }

    /// The same with `key` as the node's audit key (`[node] audit_key = "keys/audit.key"`,
    /// the public half beside it): the node signs its audit checkpoints with it.
    pub fn with_audit_key(extra: &str, key: &SigningKey) -> Self {
        let work = Self::new("");
        let dir = work.path();
        std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
        eyeflow_ir::keys::write_keypair(&dir.join("keys/audit"), key).expect("audit key");
        std::fs::write(
            dir.join("node.toml"),
            format!(
                "[node]\ndata_dir = \"data\"\naudit_key = \"keys/audit.key\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n{extra}"
            ),
        )
        .expect("config");
        work
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The node's data directory.
    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Starts `eyeflow node` here (with the `node.toml` here); returns it and its API URL.
    /// It is killed when this directory goes, if a test ends without stopping it.
    pub fn start(&self) -> (Child, String) {
        self.start_with_env(&[])
    }

    /// [`Workdir::start`] with more variables in the node's environment (a Vault token).
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> (Child, String) {
        let (child, url) = start_with_env(&binary(), self.path(), "warn", env);
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(child.id());
        (child, url)
    }

    /// Installs bundled plugin `name` (from `target/plugins`, signed with the test key) on
    /// the node at `url`, granting HTTP to `grant_http` hosts.
    pub fn install(&self, url: &str, name: &str, grant_http: &[&str]) {
        let package = bundled_package(name, &self.key);
        let response = self
            .client
            .post(format!(
                "{url}/api/plugins?grant_http={}",
                grant_http.join(",")
            ))
            .bearer_auth(&self.admin)
            .body(package.to_bytes())
            .send()
            .expect("install");
        let status = response.status();
        assert!(
            status.is_success(),
            "install {name}: {status} {}",
            response.text().unwrap_or_default()
        );
    }

    /// Compiles `rule`, signs it with the test key and deploys it on the node at `url`.
    pub fn deploy(&self, url: &str, rule: &str) {
        self.deploy_for(url, rule, eyeflow_ir::pb::Target::Server);
    }

    /// [`Workdir::deploy`] of `rule` compiled for `target`.
    pub fn deploy_for(&self, url: &str, rule: &str, target: eyeflow_ir::pb::Target) {
        let options = eyeflow_compiler::CompileOptions {
            source_name: "test.yaml".to_owned(),
            compiled_by: "tests".to_owned(),
            compiled_at: 1_700_000_000,
        };
        let program = eyeflow_compiler::compile_and_sign_for(rule, &options, target, &self.key)
            .expect("compiles");
        let response = self
            .client
            .post(format!("{url}/api/programs"))
            .bearer_auth(&self.admin)
            .body(eyeflow_ir::encode(&program))
            .send()
            .expect("deploy");
        let status = response.status();
        assert!(
            status.is_success(),
            "deploy: {status} {}",
            response.text().unwrap_or_default()
        );
    }

    /// Posts `body` to webhook `source` as event `event_id`; the execution id it started
    /// when the node accepted it (202), `None` when the node did not answer or refused.
    pub fn send(&self, url: &str, source: &str, event_id: &str, body: &Value) -> Option<String> {
        let response = self
            .client
            .post(format!("{url}/api/events/{source}"))
            .bearer_auth(&self.operator)
            .header("x-event-id", event_id)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .ok()?;
        if response.status().as_u16() != 202 {
            return None;
        }
        let answer: Value = serde_json::from_str(&response.text().ok()?).ok()?;
        answer["routed"][0]["execution_id"]
            .as_str()
            .map(str::to_owned)
    }

    /// `GET /api/executions/{id}`, or `None` when the node does not answer.
    pub fn execution(&self, url: &str, id: &str) -> Option<Value> {
        self.get(url, &format!("/api/executions/{id}"))
    }

    /// `GET /api/executions/summary` (counts), or `None` when the node does not answer.
    pub fn counts(&self, url: &str) -> Option<Value> {
        self.get(url, "/api/executions/summary")
    }

    fn get(&self, url: &str, path: &str) -> Option<Value> {
        self.client
            .get(format!("{url}{path}"))
            .bearer_auth(&self.admin)
            .send()
            .ok()?
            .text()
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
    }

    /// The value of metric line `name` (with its labels, as `/metrics` prints it), or
    /// `None` when the node does not answer or has no such line yet.
    pub fn metric(&self, url: &str, name: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("{url}/metrics"))
            .bearer_auth(&self.admin)
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find(|line| line.starts_with(name))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    /// Stops the node with SIGTERM (a drain) and waits for it.
    pub fn stop(&self, mut node: Child) {
        let status = Command::new("kill")
            .args(["-TERM", &node.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = node.wait().expect("node exits");
        assert!(exit.success(), "the node stopped with {exit}");
    }

    /// Runs `eyeflow args` here.
    pub fn eyeflow(&self, args: &[&str]) -> String {
        run(&binary(), args, self.path())
    }
}

/// Starts `binary node --config node.toml` in `dir` (which holds `node.toml` and the data
/// directory it names) with `EYEFLOW_LOG` at `log`; returns the child and its API URL. The
/// rest of its standard output is drained on a thread.
pub fn start(binary: &Path, dir: &Path, log: &str) -> (Child, String) {
    start_with_env(binary, dir, log, &[])
}

/// [`start`] with more variables in the node's environment.
pub fn start_with_env(
    binary: &Path,
    dir: &Path,
    log: &str,
    env: &[(&str, &str)],
) -> (Child, String) {
    let mut child = Command::new(binary)
        .args(["node", "--config", "node.toml"])
        .current_dir(dir)
        .env("EYEFLOW_LOG", log)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("eyeflow node starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner = lines.next().expect("banner").expect("line");
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL in the banner")
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// Runs `binary args` in `cwd` and returns its trimmed standard output; panics with its
/// standard error when it fails.
pub fn run(binary: &Path, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(binary)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("eyeflow runs");
    assert!(
        out.status.success(),
        "eyeflow {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
