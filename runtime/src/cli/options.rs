//! What every command family shares: the data directory option (and how a command reaches
//! the store in it, or the running node that holds it), the options that name a running
//! node, and the exit codes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use eyeflow_runtime::api::{Role, TokenKey};
use eyeflow_runtime::store::EmbeddedStore;
use serde_json::Value;

/// Why a command failed, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// I/O or internal failure.
    Failure = 1,
    /// The rule does not compile.
    CompileError = 3,
    /// The program was refused (decode, signature, version, structure).
    Refused = 4,
    /// The audit chain does not verify.
    AuditBroken = 5,
}

/// A failed command: the exit code and the error to print.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            code: Code::Failure,
            error,
        }
    }
}

impl From<eyeflow_runtime::Error> for Failure {
    fn from(error: eyeflow_runtime::Error) -> Self {
        let code = match error {
            eyeflow_runtime::Error::Refused { .. } | eyeflow_runtime::Error::Ir(_) => Code::Refused,
            _ => Code::Failure,
        };
        Self {
            code,
            error: error.into(),
        }
    }
}

impl From<eyeflow_ir::Error> for Failure {
    fn from(error: eyeflow_ir::Error) -> Self {
        Self {
            code: Code::Failure,
            error: error.into(),
        }
    }
}

impl From<eyeflow_compiler::Error> for Failure {
    fn from(error: eyeflow_compiler::Error) -> Self {
        Self {
            code: Code::CompileError,
            error: error.into(),
        }
    }
}

impl From<eyeflow_runtime::audit::AuditBroken> for Failure {
    fn from(broken: eyeflow_runtime::audit::AuditBroken) -> Self {
        Self {
            code: Code::AuditBroken,
            error: broken.into(),
        }
    }
}

/// A failure with exit code 4: the program was refused.
pub(crate) fn refused(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: Code::Refused,
        error: error.into(),
    }
}

/// What a command returns.
pub(crate) type CliResult = Result<(), Failure>;

/// The data directory of every command when none is given.
pub(crate) const DEFAULT_DATA_DIR: &str = "./eyeflow-data";

/// The file in a data directory where a running node leaves its API's URL (written once the
/// API listens, removed when the node stops cleanly): the commands that find the store
/// locked by that node go through its API instead.
pub(crate) const NODE_URL_FILE: &str = "node.url";

/// The data directory option of the commands that work on a node's data directory.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DataDir {
    /// The node's data directory.
    #[arg(long = "data-dir", env = "EYEFLOW_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

/// Where a command that works on a data directory does its work.
pub(crate) enum Target {
    /// The store itself: no node runs on the data directory.
    Store(EmbeddedStore),
    /// A running node, through its API: `--node`, or the node that holds the store.
    Node(Remote),
}

impl DataDir {
    /// The directory, refused when it does not exist: a command other than `eyeflow node`
    /// never creates a data directory, so a wrong default or a typo is said, not made.
    pub(crate) fn path(&self) -> anyhow::Result<&Path> {
        let dir = &self.data_dir;
        if !dir.is_dir() {
            return Err(anyhow!(
                "no node data directory at {} (start one with `eyeflow node --data-dir DIR`, \
                 or pass --data-dir / set EYEFLOW_DATA_DIR)",
                dir.display()
            ));
        }
        Ok(dir)
    }

    /// The store, or the node that runs on the directory (through its API, with an admin
    /// token minted from the directory's token key: whoever reads the directory holds that
    /// authority already).
    pub(crate) fn target(&self) -> anyhow::Result<Target> {
        let dir = self.path()?;
        match EmbeddedStore::open(dir) {
            Ok(store) => Ok(Target::Store(store)),
            Err(eyeflow_runtime::Error::Locked { .. }) => Ok(Target::Node(running_node(dir)?)),
            Err(e) => Err(self.cannot_open(e)),
        }
    }

    /// The store, for `eyeflow {command}`, which the API cannot do: refused while a node
    /// runs on it.
    pub(crate) fn store(&self, command: &str) -> anyhow::Result<EmbeddedStore> {
        self.opened(EmbeddedStore::open(self.path()?), command)
    }

    /// What opening the store of this directory gave, for `eyeflow {command}`: a store
    /// locked by a running node is refused, saying so.
    pub(crate) fn opened<T>(
        &self,
        opened: eyeflow_runtime::Result<T>,
        command: &str,
    ) -> anyhow::Result<T> {
        opened.map_err(|e| match e {
            eyeflow_runtime::Error::Locked { .. } => anyhow!(
                "the node of {} is running (its store is locked): stop it first \
                 (`eyeflow {command}` has no API equivalent)",
                self.data_dir.display()
            ),
            e => self.cannot_open(e),
        })
    }

    fn cannot_open(&self, error: eyeflow_runtime::Error) -> anyhow::Error {
        anyhow::Error::new(error).context(format!(
            "cannot open data directory {}",
            self.data_dir.display()
        ))
    }
}

/// The node running on `dir`, from the URL it left there, with a new admin token.
fn running_node(dir: &Path) -> anyhow::Result<Remote> {
    let file = dir.join(NODE_URL_FILE);
    let url = std::fs::read_to_string(&file).map_err(|_| {
        anyhow!(
            "the node of {} is running (its store is locked) and left no {NODE_URL_FILE}: \
             stop it, or use --node URL",
            dir.display()
        )
    })?;
    let token = TokenKey::load_or_create(dir)?.issue(Role::Admin)?;
    Ok(Remote {
        url: url.trim().to_owned(),
        token: Some(token),
    })
}

/// Where a client command sends its request.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Remote {
    /// The node's API base URL.
    #[arg(
        long = "node",
        env = "EYEFLOW_NODE",
        default_value = "http://127.0.0.1:7070"
    )]
    pub(crate) url: String,
    /// Bearer token (`eyeflow tokens issue`).
    #[arg(long, env = "EYEFLOW_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

/// `--node URL` and `--token T` of a command that otherwise works on a data directory.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OnNode {
    /// Do it on a running node through its API (URL) instead of in the data directory.
    #[arg(long = "node", env = "EYEFLOW_NODE")]
    node: Option<String>,
    /// Bearer token for `--node` (admin role).
    #[arg(long, env = "EYEFLOW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    data_dir: DataDir,
}

impl OnNode {
    /// The node named by `--node`, else [`DataDir::target`].
    pub(crate) fn target(&self) -> anyhow::Result<Target> {
        match &self.node {
            Some(url) => Ok(Target::Node(Remote {
                url: url.clone(),
                token: self.token.clone(),
            })),
            None => self.data_dir.target(),
        }
    }

    /// The data directory option.
    pub(crate) fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }
}

/// `text` as one URL path segment (percent-encoded).
pub(crate) fn path_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Remote {
    /// Sends a request with a body and prints the JSON answer; an API error becomes the
    /// matching exit code with the server's message.
    pub(crate) fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> Result<Value, Failure> {
        let value = self.call(method, path, body, headers)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        Ok(value)
    }

    /// [`Remote::send`] without printing the answer.
    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> Result<Value, Failure> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request
            .send()
            .with_context(|| format!("cannot reach the node at {url}"))?;
        let status = response.status();
        let text = response.text().context("cannot read the node's answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let code = value["error"]["code"].as_str().unwrap_or("error");
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        let exit = match status.as_u16() {
            422 | 413 => Code::Refused,
            _ => Code::Failure,
        };
        Err(Failure {
            code: exit,
            error: anyhow!("{} {code}: {message}", status.as_u16()),
        })
    }
}
