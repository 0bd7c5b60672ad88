//! The node's configuration file (`node.toml`, documented in `docs/config.md`): which data
//! directory, listen address and worker count a node uses, and which real backends replace
//! the embedded defaults. Every section is optional; an empty file (or none) runs the node on
//! embedded defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use eyeflow_actors::supervision::RestartPolicy;
use serde::Deserialize;

use crate::node::{LlmEndpoint, NodeConfig};
use crate::retention::RetentionSection;
use crate::store::Durability;
use crate::{Error, Result};

/// The default HTTP listen address of `eyeflow node`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// A parsed `node.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FileConfig {
    /// `[node]`: identity, storage, workers.
    #[serde(default)]
    pub node: NodeSection,
    /// `[api]`: the HTTP API.
    #[serde(default)]
    pub api: ApiSection,
    /// `[llm]`: an OpenAI-compatible endpoint for LLM_CALL.
    pub llm: Option<LlmSection>,
    /// `[retention]`: what the node deletes and when; absent = everything is kept.
    #[serde(default)]
    pub retention: RetentionSection,
    /// The backends' sections (`[redis]`, `[vault]`, `[kafka]`, ...).
    #[serde(flatten)]
    pub backends: crate::backends::Sections,
    /// The event sources' sections (`[mqtt]`, ...).
    #[serde(flatten)]
    pub sources: crate::sources::Sections,
    /// `[[devices]]`: field devices served over the serial gateway.
    #[serde(default)]
    pub devices: Vec<crate::devices::DeviceSection>,
    /// The config file's folder (relative program paths of `[[devices]]` start there).
    #[serde(skip)]
    base: Option<PathBuf>,
}

/// The sections of `node.toml` besides the backends' and the sources'.
const OWN_SECTIONS: &[&str] = &["node", "api", "llm", "retention", "devices"];

/// `[node]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Node id written into audit entries (default `node-1`).
    #[serde(default = "default_node_id")]
    pub id: String,
    /// Data directory; relative paths are taken from the config file's folder.
    pub data_dir: Option<PathBuf>,
    /// Scheduler slots: executions running at once (default: twice the number of cores).
    pub workers: Option<usize>,
    /// `sync`, `group-commit` (default) or `buffered`.
    #[serde(default)]
    pub durability: DurabilityName,
    /// Most MiB of store journal files kept before the oldest one's data is written as
    /// tables and the file deleted (default 64, the least).
    pub store_journal_mib: Option<u64>,
    /// MiB a store keyspace holds in memory before writing a table (default 8, at least 1).
    pub store_memtable_mib: Option<u64>,
    /// Hosts CALL_API / CALL_SERVICE may reach (`host` or `host:port`); absent = any.
    pub http_allow: Option<Vec<String>>,
    /// How long SIGTERM waits for running executions before journaling the rest as pending
    /// (default 30 000 ms).
    #[serde(default = "default_drain_ms")]
    pub drain_timeout_ms: u64,
    /// Most executions queued or running at once (default 4096): past it, new events get
    /// 503 `overloaded` with `Retry-After` (Kafka and MQTT consumption waits) instead of
    /// being accepted to wait.
    pub max_backlog: Option<usize>,
    /// Most executions of one program running at once (default: `workers` − 1, at least 1):
    /// a program whose executions hold their slots long (retries, a slow endpoint) leaves
    /// the other slots to the other programs; its further executions wait in its own lane.
    pub max_running_per_program: Option<usize>,
    /// Restart intensity of every supervisor of the node's actors: at most this many
    /// restarts of one supervisor's children within `restart_window_ms` (default 3), then
    /// it escalates (up to the node supervisor, which stops the process).
    #[serde(default = "default_max_restarts")]
    pub max_restarts: usize,
    /// The sliding window of `max_restarts` (default 10 000 ms).
    #[serde(default = "default_restart_window_ms")]
    pub restart_window_ms: u64,
    /// The secret key file (`eyeflow keys gen`) that signs the audit chain's checkpoints;
    /// absent = `node.key` in the data directory, generated on first start. Relative paths
    /// are taken from the config file's folder.
    pub audit_key: Option<PathBuf>,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: default_node_id(),
            data_dir: None,
            workers: None,
            durability: DurabilityName::default(),
            store_journal_mib: None,
            store_memtable_mib: None,
            http_allow: None,
            drain_timeout_ms: default_drain_ms(),
            max_backlog: None,
            max_running_per_program: None,
            max_restarts: default_max_restarts(),
            restart_window_ms: default_restart_window_ms(),
            audit_key: None,
        }
    }
}

fn default_max_restarts() -> usize {
    RestartPolicy::default().max_restarts
}

fn default_restart_window_ms() -> u64 {
    u64::try_from(RestartPolicy::default().within.as_millis()).unwrap_or(u64::MAX)
}

fn default_node_id() -> String {
    "node-1".to_owned()
}

fn default_drain_ms() -> u64 {
    30_000
}

/// Journal durability as written in the file.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityName {
    /// fsync every write.
    Sync,
    /// fsync batched across concurrent writers.
    #[default]
    GroupCommit,
    /// No fsync (tests and benchmarks only).
    Buffered,
}

impl From<DurabilityName> for Durability {
    fn from(name: DurabilityName) -> Self {
        match name {
            DurabilityName::Sync => Durability::Sync,
            DurabilityName::GroupCommit => Durability::GroupCommit,
            DurabilityName::Buffered => Durability::Buffered,
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address (default [`DEFAULT_LISTEN`]).
    pub listen: Option<SocketAddr>,
    /// Largest JSON or text body accepted, bytes (default 1 MiB).
    #[serde(default = "default_json_limit")]
    pub max_body_bytes: usize,
    /// Largest program or plugin package upload, bytes (default 32 MiB).
    #[serde(default = "default_upload_limit")]
    pub max_upload_bytes: usize,
    /// HTTP worker threads (default 2).
    #[serde(default = "default_http_workers")]
    pub workers: usize,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: None,
            max_body_bytes: default_json_limit(),
            max_upload_bytes: default_upload_limit(),
            workers: default_http_workers(),
        }
    }
}

fn default_json_limit() -> usize {
    1 << 20
}

fn default_upload_limit() -> usize {
    32 << 20
}

fn default_http_workers() -> usize {
    2
}

/// `[llm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Name of the secret holding the API key.
    pub api_key_secret: Option<String>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let mut config = Self::parse(&text).map_err(|reason| Error::BadConfig {
            what: path.display().to_string(),
            reason,
        })?;
        config.base = path.parent().map(Path::to_path_buf);
        if let Some(base) = path.parent() {
            for relative in [&mut config.node.data_dir, &mut config.node.audit_key]
                .into_iter()
                .flatten()
                .filter(|p| p.is_relative())
            {
                *relative = base.join(&*relative);
            }
        }
        Ok(config)
    }

    /// Parses the text of a `node.toml`: an unknown section or field is refused, naming it.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let known = || {
            OWN_SECTIONS
                .iter()
                .chain(crate::backends::Sections::NAMES)
                .chain(crate::sources::Sections::NAMES)
        };
        if let Some(unknown) = table.keys().find(|k| !known().any(|n| n == k)) {
            let names: Vec<&str> = known().copied().collect();
            return Err(format!(
                "unknown section `{unknown}`, expected one of: {}",
                names.join(", ")
            ));
        }
        table.try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    /// The node assembly this file describes; `data_dir` (from the command line) wins over
    /// the file's.
    pub fn node_config(&self, data_dir: Option<PathBuf>) -> Result<NodeConfig> {
        let dir = data_dir
            .or_else(|| self.node.data_dir.clone())
            .ok_or_else(|| Error::BadConfig {
                what: "[node] data_dir".to_owned(),
                reason: "no data directory: set [node] data_dir or pass --data-dir".to_owned(),
            })?;
        let mut config = NodeConfig::embedded(dir);
        config.node_id = self.node.id.clone();
        if let Some(workers) = self.node.workers {
            config.workers = workers.max(1);
        }
        config.durability = self.node.durability.into();
        let defaults = crate::store::StoreSizes::default();
        let mib =
            |value: Option<u64>, default: u64| value.map_or(default, |m| m.saturating_mul(1 << 20));
        config.store = crate::store::StoreSizes {
            journal_bytes: mib(self.node.store_journal_mib, defaults.journal_bytes),
            memtable_bytes: mib(self.node.store_memtable_mib, defaults.memtable_bytes),
        }
        .checked()
        .map_err(|reason| Error::BadConfig {
            what: "[node] store_journal_mib / store_memtable_mib".to_owned(),
            reason,
        })?;
        if let Some(backlog) = self.node.max_backlog {
            config.max_backlog = backlog.max(1);
        }
        config.max_running_per_program = self.node.max_running_per_program;
        config.restart = RestartPolicy {
            max_restarts: self.node.max_restarts,
            within: std::time::Duration::from_millis(self.node.restart_window_ms),
        };
        config.http_allow = self.node.http_allow.clone();
        config.retention = self.retention.policy()?;
        config.backends = self.backends.clone();
        config.llm = self.llm.as_ref().map(|llm| LlmEndpoint {
            base_url: llm.base_url.clone(),
            api_key_secret: llm.api_key_secret.clone(),
        });
        let mut ids = std::collections::BTreeSet::new();
        for device in &self.devices {
            if !ids.insert(device.id.as_str()) {
                return Err(Error::BadConfig {
                    what: "[[devices]] id".to_owned(),
                    reason: format!("device `{}` appears twice", device.id),
                });
            }
            config.devices.push(device.resolve(self.base.as_deref())?);
        }
        Ok(config)
    }

    /// The HTTP listen address.
    pub fn listen(&self) -> SocketAddr {
        self.api.listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7070)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_embedded_defaults() {
        let config = FileConfig::parse("").unwrap();
        assert_eq!(config.listen().to_string(), DEFAULT_LISTEN);
        let node = config.node_config(Some("/tmp/x".into())).unwrap();
        assert_eq!(node.durability, Durability::GroupCommit);
        assert!(node.llm.is_none());
    }

    #[test]
    fn store_sizes_are_read_in_mib_and_checked() {
        let config = FileConfig::parse("[node]\nstore_journal_mib = 64\nstore_memtable_mib = 8\n")
            .unwrap()
            .node_config(Some("/tmp/x".into()))
            .unwrap();
        assert_eq!(config.store.journal_bytes, 64 << 20);
        assert_eq!(config.store.memtable_bytes, 8 << 20);
        let err = FileConfig::parse("[node]\nstore_journal_mib = 16\n")
            .unwrap()
            .node_config(Some("/tmp/x".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store_journal_mib") && err.contains("at least 64 MiB"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = FileConfig::parse("[node]\nid = 'a'\nwrokers = 3\n").unwrap_err();
        assert!(err.contains("wrokers"), "{err}");
        let err = FileConfig::parse("[reddis]\nurl = 'redis://127.0.0.1/'\n").unwrap_err();
        assert!(err.contains("unknown section `reddis`"), "{err}");
        assert!(err.contains("redis") && err.contains("mqtt"), "{err}");
        let err = FileConfig::parse("[redis]\nurl = 'redis://x/'\npasword = 'x'\n").unwrap_err();
        assert!(err.contains("pasword"), "{err}");
        let err = FileConfig::parse("[retention]\nexecution_secs = 5\n").unwrap_err();
        assert!(err.contains("execution_secs"), "{err}");
    }

    #[test]
    fn the_example_configs_parse() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
        let embedded = FileConfig::load(&examples.join("embedded.toml")).unwrap();
        assert!(embedded.backends.redis.is_none() && embedded.backends.vault.is_none());
        assert!(embedded.node.data_dir.unwrap().ends_with("eyeflow-data"));
        let full = FileConfig::load(&examples.join("full.toml")).unwrap();
        assert_eq!(full.node.id, "plant-a-1");
        assert_eq!(
            full.backends.redis.as_ref().unwrap().prefix,
            "eyeflow:plant-a-1:"
        );
        assert!(full.backends.vault.is_some() && full.sources.mqtt.is_some());
        assert!(full.llm.is_some());
        assert_eq!(full.devices[0].id, "pump-1");
        assert_eq!(
            full.backends.kafka.as_ref().unwrap().source_topics,
            ["plant-a.alarms"]
        );
        assert_eq!(full.listen().port(), 7070);
        let retention = full
            .node_config(None)
            .unwrap()
            .retention
            .expect("a retention policy");
        assert_eq!(retention.executions.as_secs(), 604_800);
        assert_eq!(retention.dedupe.as_secs(), 2_592_000);
        assert_eq!(retention.audit.map(|a| a.as_secs()), Some(31_536_000));
        assert!(embedded.retention.policy().unwrap().is_none());
    }

    #[test]
    fn devices_are_checked_at_start() {
        let config = |entry: &str| {
            FileConfig::parse(&format!("[[devices]]\n{entry}\n")).and_then(|c| {
                c.node_config(Some("/tmp/x".into()))
                    .map_err(|e| e.to_string())
            })
        };
        let node =
            config("id = 'pump-1'\nlink = 'tcp:127.0.0.1:4000'\nheartbeat_ms = 500").unwrap();
        assert_eq!(
            node.devices[0].link,
            crate::devices::Link::Tcp("127.0.0.1:4000".into())
        );
        assert_eq!(node.devices[0].heartbeat.as_millis(), 500);
        let tty = config("id = 'p2'\nlink = '/dev/ttyUSB0'\nbaud = 9600").unwrap();
        assert!(matches!(
            tty.devices[0].link,
            crate::devices::Link::Tty { baud: 9600, .. }
        ));
        for (entry, says) in [
            ("id = 'Pump 1'\nlink = 'tcp:h:1'", "not a device id"),
            ("id = 'p'\nlink = 'tcp:h'", "not tcp:HOST:PORT"),
            ("id = 'p'\nlink = 'COM3'", "neither tcp:HOST:PORT nor"),
            (
                "id = 'p'\nlink = 'tcp:h:1'\nbaud = 9600",
                "baud rate is for a tty",
            ),
            (
                "id = 'p'\nlink = 'tcp:h:1'\nprograms = ['/nonexistent.ir']",
                "nonexistent.ir",
            ),
            ("id = 'p'\nlink = 'tcp:h:1'\nspeed = 3", "speed"),
        ] {
            let err = config(entry).unwrap_err();
            assert!(err.contains(says), "{entry}: {err}");
        }
        let twice = FileConfig::parse(
            "[[devices]]\nid = 'p'\nlink = 'tcp:h:1'\n[[devices]]\nid = 'p'\nlink = 'tcp:h:2'\n",
        )
        .unwrap();
        let err = twice.node_config(Some("/tmp/x".into())).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn data_dir_is_required_somewhere() {
        let config = FileConfig::parse("").unwrap();
        let err = config.node_config(None).unwrap_err();
        assert!(err.to_string().contains("data directory"), "{err}");
    }
}
