//! A node: the assembly of the adapters (plugin host, journal, audit chain, memory tiers,
//! event log, HTTP, LLM, backends) with the core of `eyeflow-actors` (the executions'
//! lifecycle, the scheduler, the arbiter, the supervision tree). Programs are deployed
//! (verified against the node's keyring and the plugin catalog) into the supervision tree
//! (node supervisor → program registry → program actor → instruction actors), events are
//! journaled before they are acknowledged and handed to
//! [`Executions`], and at start the executions a
//! crash interrupted resume from their journal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eyeflow_actors::arbiter::Arbiter;
use eyeflow_actors::bulkhead::Bulkheads;
use eyeflow_actors::deployed::Deployed;
use eyeflow_actors::exec::{self, Effects, Program, Report};
use eyeflow_actors::fallbacks::FallbackDesk;
use eyeflow_actors::lifecycle::{Executions, Overloaded};
use eyeflow_actors::ports::{
    Accepted, Backend, CapabilityRef, ClusterMemory, EventRecord, ExecutionOutcome, Journal,
    NodeMemory, PendingExecution,
};
use eyeflow_actors::routing::{self, Verdict, event_key, route};
use eyeflow_actors::scheduler::{Scheduler, SchedulerConfig};
use eyeflow_actors::supervision::{CALL_TIMEOUT_MS, NodeMsg, NodeSupervisor, RestartPolicy};
use eyeflow_actors::tiers::Tier;
use eyeflow_ir::pb::TriggerKind;
use eyeflow_ir::{Limits, keys};
use ractor::{Actor, ActorRef};
use serde_json::Value;

use crate::audit::{AuditConfig, FjallAudit};
use crate::events::FjallEventLog;
use crate::journal::FjallJournal;
use crate::llm::{NoLlm, OpenAiChat};
use crate::memory::{FjallClusterMemory, InProcessNodeMemory};
use crate::plugins::{HostConfig, PluginHost};
use crate::retention::Retention;
use crate::secrets::{LocalSecrets, SecretSource};
use crate::store::{Durability, EmbeddedStore};
use crate::{Error, Result};
use eyeflow_actors::sync::{Locked, RwLocked};

/// An OpenAI-compatible LLM endpoint.
#[derive(Debug, Clone)]
pub struct LlmEndpoint {
    /// Base URL, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Name of the secret holding the API key, if the endpoint needs one.
    pub api_key_secret: Option<String>,
}

/// Default [`NodeConfig::max_backlog`].
pub const DEFAULT_MAX_BACKLOG: usize = 4096;

/// How to assemble a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Data directory (store, packages, programs, secrets file).
    pub data_dir: PathBuf,
    /// Node id written into audit entries.
    pub node_id: String,
    /// Scheduler worker slots.
    pub workers: usize,
    /// Journal and audit durability.
    pub durability: Durability,
    /// How much the store keeps in memory and in journal files before writing tables.
    pub store: crate::store::StoreSizes,
    /// LLM endpoint; none = every LLM_CALL fails as `model-unavailable` into its fallback.
    pub llm: Option<LlmEndpoint>,
    /// Plugin host limits.
    pub host: HostConfig,
    /// Hosts (`host` or `host:port`) CALL_API / CALL_SERVICE may reach; `None` = any.
    pub http_allow: Option<Vec<String>>,
    /// The production backends replacing embedded defaults (Redis for the node memory
    /// scope, Vault/OpenBao for secrets, Kafka for EMIT_EVENT, the cluster scope and the
    /// audit topic); none = embedded defaults.
    pub backends: crate::backends::Sections,
    /// Most executions queued or running at once: past it, new events are refused
    /// ([`Error::Overloaded`]; the API answers 503 with `Retry-After`) instead of being
    /// accepted to wait past their `max_wait`.
    pub max_backlog: usize,
    /// Most executions of one program running at once (a bulkhead: a program whose
    /// executions hold their slots long cannot take every slot); `None` = one less than
    /// `workers` (at least 1).
    pub max_running_per_program: Option<usize>,
    /// Restart intensity of every supervisor of the node's actors.
    pub restart: RestartPolicy,
    /// The key that signs the audit chain's checkpoints (every
    /// [`AuditConfig::checkpoint_every`] entries, on demand, and at shutdown); `None` = no
    /// checkpoints. See [`audit_key`].
    pub audit_key: Option<ed25519_dalek::SigningKey>,
    /// What retention deletes and when (`[retention]`); `None` = everything is kept.
    pub retention: Option<crate::retention::RetentionPolicy>,
    /// The field devices served over the serial gateway (`[[devices]]`).
    pub devices: Vec<crate::devices::DeviceConfig>,
}

impl NodeConfig {
    /// Embedded defaults under `data_dir`.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            node_id: "node-1".to_owned(),
            workers: SchedulerConfig::default().workers,
            durability: Durability::GroupCommit,
            store: crate::store::StoreSizes::default(),
            llm: None,
            host: HostConfig::default(),
            http_allow: None,
            backends: crate::backends::Sections::default(),
            max_backlog: DEFAULT_MAX_BACKLOG,
            max_running_per_program: None,
            restart: RestartPolicy::default(),
            audit_key: None,
            retention: None,
            devices: Vec::new(),
        }
    }
}

/// The node's egress policy in front of the HTTP adapter: requests to hosts outside the
/// allow-list fail as `denied` without leaving the node.
struct Egress {
    inner: crate::http::ReqwestHttp,
    allow: Option<Vec<String>>,
}

#[async_trait::async_trait]
impl eyeflow_actors::ports::HttpPort for Egress {
    fn admit(
        &self,
        request: &eyeflow_actors::ports::HttpRequest,
    ) -> std::result::Result<(), eyeflow_actors::ports::CallError> {
        if let Some(allow) = &self.allow {
            let url = url::Url::parse(&request.url).ok();
            let host = url
                .as_ref()
                .and_then(|u| u.host_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            let allowed = url.as_ref().is_some_and(|url| {
                crate::plugins::grants::url_host_listed(url, |entry| {
                    allow.iter().any(|a| a.eq_ignore_ascii_case(entry))
                })
            });
            if !allowed {
                return Err(eyeflow_actors::ports::CallError::new(
                    eyeflow_actors::ports::CallErrorKind::Denied,
                    host.clone(),
                    format!(
                        "outbound HTTP to `{host}` is not allowed by this node's configuration"
                    ),
                ));
            }
        }
        self.inner.admit(request)
    }

    async fn send(
        &self,
        request: &eyeflow_actors::ports::HttpRequest,
    ) -> std::result::Result<eyeflow_actors::ports::HttpResponse, eyeflow_actors::ports::CallError>
    {
        self.admit(request)?;
        self.inner.send(request).await
    }
}

/// A deployed program version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInfo {
    /// Program id.
    pub id: String,
    /// Version.
    pub version: String,
    /// Signing key id.
    pub key_id: String,
    /// SHA-256 of the signed program bytes, lowercase hex: what was deployed, and the name
    /// of its file under `DATA_DIR/programs`.
    pub sha256: String,
    /// Number of instructions.
    pub instructions: usize,
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so a crash
/// leaves either no file or the whole one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("bin.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
    file.write_all(bytes).map_err(Error::io(&tmp))?;
    file.sync_all().map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// A deployed version's file in `DATA_DIR/programs`, named `<sha256>.bin` after the signed
/// bytes: nothing the program says about itself becomes a path.
#[derive(Debug, Clone)]
struct Stored {
    sha256: String,
    key_id: String,
    /// The file deploy wrote (or, for a data directory of the earlier layout that could
    /// not be renamed, the file it was loaded from): what undeploy removes.
    file: PathBuf,
}

/// A program that passed every deploy check, not yet served.
struct Prepared {
    info: ProgramInfo,
    program: Program,
}

/// What the deploy checks concluded.
enum Checked {
    /// A version the node does not serve yet.
    New(Prepared),
    /// These exact bytes are deployed already.
    Deployed(ProgramInfo),
}

/// SHA-256 of `bytes`, lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// How many of a program's latest execution latencies [`ProgramStats`] keeps at least.
pub const KEPT_LATENCIES: usize = 10_000;

/// Outcome counters and latencies of one program.
#[derive(Debug, Clone, Default)]
pub struct ProgramStats {
    /// Executions by outcome (`completed`, `failed:<class>`, `rejected`, `paused`).
    pub outcomes: BTreeMap<String, u64>,
    /// Latencies of the latest finished executions, microseconds, from acceptance to end,
    /// oldest first: at least the last [`KEPT_LATENCIES`] (older ones go in blocks of that
    /// many, so that a node's memory stays bounded however long it runs).
    pub latencies_us: Vec<u64>,
    /// The message of the first failed execution, if any.
    pub first_failure: Option<String>,
}

struct Inner {
    config: NodeConfig,
    store: EmbeddedStore,
    host: PluginHost,
    journal: Arc<FjallJournal>,
    audit: Arc<FjallAudit>,
    events: Arc<FjallEventLog>,
    /// The field devices of `[[devices]]`.
    devices: crate::devices::Devices,
    /// Admission, lanes, scheduling and the runs of executions.
    executions: Executions,
    /// Runs the supervision tree (node supervisor → program registry → program actors).
    actors: tokio::runtime::Runtime,
    supervisor: ActorRef<NodeMsg>,
    /// Turns true once the supervision tree has stopped.
    tree_stopped: tokio::sync::watch::Receiver<bool>,
    /// The deployed program versions (written by the program registry actor).
    deployed: Arc<Deployed>,
    stats: Arc<Mutex<BTreeMap<String, ProgramStats>>>,
    /// Deployed versions' files, by id and version. Held across a whole deploy or undeploy,
    /// so two uploads of one version cannot both pass the conflict check.
    stored: Mutex<BTreeMap<(String, String), Stored>>,
    /// Ids of the revoked publisher keys: their deployed programs take no new event.
    revoked: std::sync::RwLock<std::collections::BTreeSet<String>>,
    /// External backends in use (empty on embedded defaults).
    backends: std::sync::RwLock<Vec<Arc<dyn Backend>>>,
}

impl Drop for Inner {
    /// Before the actor runtime (a field) stops: what has not started is dropped, not
    /// handed to a runtime that drops each task it gets (executions stay pending in the
    /// journal and resume at the next start).
    fn drop(&mut self) {
        self.executions.abandon();
    }
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn http_client_error(e: reqwest::Error) -> Error {
    Error::Node {
        reason: format!("cannot build the HTTP client: {e}"),
    }
}

fn actor_error(e: impl std::fmt::Display) -> Error {
    Error::Node {
        reason: format!("supervision tree: {e}"),
    }
}

fn overloaded(e: Overloaded) -> Error {
    Error::Overloaded { reason: e.0 }
}

fn journal_error(e: eyeflow_actors::ports::JournalError) -> Error {
    Error::Node {
        reason: e.to_string(),
    }
}

impl Node {
    /// Opens the data directory, assembles the adapters, reloads deployed programs and
    /// resumes the executions a crash interrupted.
    pub fn start(config: NodeConfig) -> Result<Self> {
        // Metrics recorded before the recorder exists would be lost.
        crate::metrics::handle();
        let store = EmbeddedStore::open_sized(&config.data_dir, config.store)?;
        // Executions' audit entries travel in the journal's step writes (one atomic batch,
        // made durable by the journal): no fsync of their own.
        let audit = Arc::new(FjallAudit::open(
            store.clone(),
            AuditConfig {
                durability: Durability::Buffered,
                signing_key: config.audit_key.clone(),
                ..AuditConfig::default()
            },
        )?);
        let journal = Arc::new(
            FjallJournal::open(store.clone(), config.durability)?.with_audit(audit.clone()),
        );
        let events = Arc::new(FjallEventLog::new(store.clone(), config.durability));
        // The configured backends take over their ports; the rest keep embedded defaults.
        let mut built = crate::backends::Context {
            node_id: &config.node_id,
            store: &store,
            durability: config.durability,
            audit: &audit,
            secrets: None,
            node_memory: None,
            cluster_memory: None,
            events: None,
            backends: Vec::new(),
        };
        config.backends.build(&mut built)?;
        let secrets: Arc<dyn SecretSource> = match built.secrets {
            Some(secrets) => secrets,
            None => Arc::new(LocalSecrets::load(&config.data_dir.join("secrets.json"))?),
        };
        let node_memory = built
            .node_memory
            .unwrap_or_else(|| Arc::new(InProcessNodeMemory::default()));
        let cluster_memory = built
            .cluster_memory
            .unwrap_or_else(|| Arc::new(FjallClusterMemory::new(store.clone(), config.durability)));
        let sink = built.events.unwrap_or_else(|| events.clone());
        let backends = built.backends;
        // One plugin's calls never take every worker: one is always left to the others.
        let host_config = HostConfig {
            kv_durability: config.durability,
            max_calls_per_plugin: config
                .host
                .max_calls_per_plugin
                .min(config.workers.saturating_sub(1))
                .max(1),
            ..config.host.clone()
        };
        let host = PluginHost::open(store.clone(), secrets.clone(), host_config)?;
        // The actor runtime: the supervision tree and every execution run as its tasks, on
        // one thread per core.
        let actors = tokio::runtime::Builder::new_multi_thread()
            .thread_name("eyeflow-actors")
            .enable_all()
            .build()
            .map_err(Error::io("(actor runtime)"))?;
        // The node's service actors (started under the node supervisor below): the
        // arbiter's shards, the fallback engine, the two memory tiers.
        let policy = config.restart;
        let arbiter = Arbiter::new(config.workers);
        let (fallbacks, fallback_actor) = FallbackDesk::new(policy);
        let (node_memory, node_memory_actor) = Tier::<Arc<dyn NodeMemory>>::new(
            "node memory",
            "node/memory/node",
            Arc::new(move || Ok(node_memory.clone())),
            policy,
        );
        let (cluster_memory, cluster_memory_actor) = Tier::<Arc<dyn ClusterMemory>>::new(
            "cluster memory",
            "node/memory/cluster",
            Arc::new(move || Ok(cluster_memory.clone())),
            policy,
        );
        let mut services = arbiter.services(policy);
        services.extend([fallback_actor, node_memory_actor, cluster_memory_actor]);
        let scheduler = Scheduler::new(
            SchedulerConfig {
                workers: config.workers,
                ..SchedulerConfig::default()
            },
            arbiter.clone(),
            actors.handle().clone(),
        );
        let per_program = config
            .max_running_per_program
            .unwrap_or(config.workers.saturating_sub(1))
            .max(1);
        let bulkheads = Bulkheads::new(per_program, scheduler.clone());
        let llm: Arc<dyn eyeflow_actors::ports::LlmPort> = match &config.llm {
            None => Arc::new(NoLlm),
            Some(endpoint) => Arc::new(
                OpenAiChat::new(
                    &endpoint.base_url,
                    endpoint
                        .api_key_secret
                        .as_deref()
                        .map(|name| crate::blocking::wait(secrets.get(name)))
                        .transpose()
                        .map_err(|e| Error::Node {
                            reason: format!("the LLM api key: {e}"),
                        })?
                        .flatten(),
                )
                .map_err(http_client_error)?,
            ),
        };
        // One supervised actor per field device, beside the node's service actors.
        let (devices, device_actors) = crate::devices::Devices::new(
            config.devices.clone(),
            crate::devices::DeviceContext {
                audit: audit.clone(),
                store: store.clone(),
                durability: config.durability,
                sink: sink.clone(),
                llm: llm.clone(),
            },
            policy,
        );
        services.extend(device_actors);
        let effects = Effects {
            node_id: config.node_id.clone(),
            plugins: Arc::new(crate::metrics::MeteredPlugins::new(host.clone())),
            http: Arc::new(Egress {
                inner: crate::http::ReqwestHttp::new().map_err(http_client_error)?,
                allow: config.http_allow.clone(),
            }),
            llm,
            events: sink,
            node_memory: Arc::new(node_memory),
            cluster_memory: Arc::new(cluster_memory),
            secrets,
            journal: Arc::new(crate::metrics::MeteredJournal::new(journal.clone())),
            arbiter: Arc::new(crate::metrics::MeteredGate::new(arbiter)),
            fallbacks: Arc::new(fallbacks),
            // Under group commit an execution gives its slot up while it waits for the fsync
            // (others then share it); an fsync of its own per write ("sync", for
            // measurement) or none leaves nothing to share.
            boundary: if config.durability == Durability::GroupCommit {
                Arc::new(bulkheads.clone())
            } else {
                Arc::new(scheduler.clone())
            },
            clock: Arc::new(exec::SystemClock),
        };
        let stats = Arc::new(Mutex::new(BTreeMap::new()));
        let counted = stats.clone();
        let executions = Executions::new(
            scheduler,
            bulkheads,
            effects,
            config.max_backlog,
            Box::new(move |program, report, took| record(&counted, program, report, took)),
        );
        let deployed = Deployed::new();
        let (supervisor, tree) = actors
            .block_on(Actor::spawn(
                // Unnamed: names are process-global and several nodes may share a process.
                None,
                NodeSupervisor {
                    policy,
                    program_policy: policy,
                    deployed: deployed.clone(),
                },
                services,
            ))
            .map_err(|e| Error::Node {
                reason: format!("cannot start the supervision tree: {e}"),
            })?;
        // Escalation: the node supervisor stops past its restart intensity (or when the
        // node shuts down); whoever serves the node watches this and stops the process.
        let (stopped, tree_stopped) = tokio::sync::watch::channel(false);
        actors.spawn(async move {
            let _ = tree.await;
            let _ = stopped.send(true);
        });
        let revoked = revoked_ids(&store)?;
        if let Some(policy) = config.retention {
            // A periodic task beside serving; it stops with the supervision tree.
            let retention = Retention::new(store.clone(), journal.clone(), events.clone(), policy)
                .with_audit(crate::retention::AuditCompaction {
                    audit: audit.clone(),
                    key: config.audit_key.clone(),
                    kafka: config.backends.kafka.is_some(),
                })
                .with_forget({
                    let host = host.clone();
                    Arc::new(move |ids: &[&str]| host.forget_executions(ids))
                });
            actors.spawn(retention.run(tree_stopped.clone()));
        }
        let node = Self {
            inner: Arc::new(Inner {
                config,
                store,
                host,
                journal,
                audit,
                events,
                devices,
                executions,
                actors,
                supervisor,
                tree_stopped,
                deployed,
                stats,
                stored: Mutex::new(BTreeMap::new()),
                revoked: std::sync::RwLock::new(revoked),
                backends: std::sync::RwLock::new(backends),
            }),
        };
        node.reload_programs()?;
        node.resume()?;
        Ok(node)
    }

    /// The plugin host.
    pub fn plugins(&self) -> &PluginHost {
        &self.inner.host
    }

    /// The field devices of `[[devices]]`.
    pub fn devices(&self) -> &crate::devices::Devices {
        &self.inner.devices
    }

    /// Sends the signed program `bytes` to device `id`; waits for its LOADED or REFUSED.
    pub fn deploy_to_device(&self, id: &str, bytes: &[u8]) -> Result<crate::devices::Deployment> {
        self.inner
            .actors
            .block_on(self.inner.devices.deploy(id, bytes))
    }

    /// Sends the event `body` to device `id` as a RUN.
    pub fn run_on_device(&self, id: &str, body: &serde_json::Value) -> Result<()> {
        self.inner.actors.block_on(self.inner.devices.run(id, body))
    }

    /// The embedded store.
    pub fn store(&self) -> &EmbeddedStore {
        &self.inner.store
    }

    /// The journal.
    pub fn journal(&self) -> &FjallJournal {
        &self.inner.journal
    }

    /// The audit chain.
    pub fn audit(&self) -> &FjallAudit {
        &self.inner.audit
    }

    /// The local event log (EMIT_EVENT).
    pub fn event_log(&self) -> &FjallEventLog {
        &self.inner.events
    }

    fn programs_dir(&self) -> PathBuf {
        self.inner.config.data_dir.join("programs")
    }

    /// Serves every program file of `DATA_DIR/programs` again. Files are named
    /// `<sha256>.bin`; a file of the earlier layout (`<id>@<version>.bin`) is renamed to its
    /// digest once it loads, and kept under its old name when the rename fails.
    fn reload_programs(&self) -> Result<()> {
        let dir = self.programs_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        let mut stored = self.inner.stored.locked();
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "bin"))
        {
            let bytes = std::fs::read(file).map_err(Error::io(file))?;
            let prepared = match self.prepare(&bytes, &stored) {
                Ok(Checked::New(prepared)) => prepared,
                // The same bytes under two names (a rename cut short): the other is served.
                Ok(Checked::Deployed(_)) => {
                    self.drop_duplicate(file, &bytes);
                    continue;
                }
                Err(e) => {
                    tracing::error!(program = %file.display(), "deployed program no longer loads: {e}");
                    continue;
                }
            };
            let info = prepared.info.clone();
            if let Err(e) = self.serve(prepared) {
                tracing::error!(program = %file.display(), "deployed program no longer loads: {e}");
                continue;
            }
            let file = self.migrate(&dir, file, &bytes, &info.sha256);
            stored.insert(
                (info.id.clone(), info.version.clone()),
                Stored {
                    sha256: info.sha256,
                    key_id: info.key_id,
                    file,
                },
            );
        }
        Ok(())
    }

    /// Where a loaded program file should live: `<sha256>.bin`. A file under another name
    /// (the earlier layout) is written under its digest and removed; on failure it stays
    /// where it is, and that path is returned.
    fn migrate(&self, dir: &Path, file: &Path, bytes: &[u8], sha256: &str) -> PathBuf {
        let target = dir.join(format!("{sha256}.bin"));
        if file == target {
            return target;
        }
        let moved = if target.exists() {
            Ok(())
        } else {
            write_atomically(&target, bytes)
        }
        .and_then(|()| std::fs::remove_file(file).map_err(Error::io(file)));
        match moved {
            Ok(()) => {
                tracing::info!(from = %file.display(), to = %target.display(), "program file renamed to its digest");
                target
            }
            Err(e) => {
                tracing::warn!(program = %file.display(), "cannot rename the program file to its digest: {e}");
                file.to_owned()
            }
        }
    }

    /// Removes a second file holding bytes already served from their digest-named file.
    fn drop_duplicate(&self, file: &Path, bytes: &[u8]) {
        let target = self
            .programs_dir()
            .join(format!("{}.bin", sha256_hex(bytes)));
        if file != target
            && target.exists()
            && let Err(e) = std::fs::remove_file(file)
        {
            tracing::warn!(program = %file.display(), "cannot remove a duplicate program file: {e}");
        }
    }

    /// Deploys a signed program: decode, signature against the node keyring, IR version,
    /// structure (program id and version grammar included), and every required capability
    /// resolvable in the plugin catalog. The program is kept in the data directory as
    /// `programs/<sha256>.bin` and becomes the active version of its id. The same bytes
    /// again change nothing; other bytes under a deployed id and version are refused
    /// ([`Error::Conflict`]): a version names one content.
    pub fn deploy(&self, bytes: &[u8]) -> Result<ProgramInfo> {
        let mut stored = self.inner.stored.locked();
        let prepared = match self.prepare(bytes, &stored)? {
            Checked::New(prepared) => prepared,
            Checked::Deployed(info) => return Ok(info),
        };
        let info = prepared.info.clone();
        let dir = self.programs_dir();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let path = dir.join(format!("{}.bin", info.sha256));
        write_atomically(&path, bytes)?;
        if let Err(e) = self.serve(prepared) {
            if let Err(removed) = std::fs::remove_file(&path) {
                tracing::warn!(program = %path.display(), "cannot remove the file of a program that failed to start: {removed}");
            }
            return Err(e);
        }
        stored.insert(
            (info.id.clone(), info.version.clone()),
            Stored {
                sha256: info.sha256.clone(),
                key_id: info.key_id.clone(),
                file: path,
            },
        );
        Ok(info)
    }

    /// Every deploy check, without serving: [`Checked::Deployed`] when these exact bytes
    /// are deployed already, [`Error::Conflict`] when other bytes are under the same id and
    /// version.
    fn prepare(
        &self,
        bytes: &[u8],
        stored: &BTreeMap<(String, String), Stored>,
    ) -> Result<Checked> {
        let keyring = self.inner.store.keyring()?;
        let loaded = eyeflow_ir::load(bytes, &keyring, &Limits::default())?;
        let ir = loaded.program;
        // `load` validated both; checked again here because they key the node's state.
        eyeflow_ir::validate::check_program_id(&ir.program_id).map_err(|reason| {
            Error::Ir(eyeflow_ir::Error::InvalidProgramField {
                field: "program_id",
                reason,
            })
        })?;
        let version =
            eyeflow_ir::validate::check_program_version(&ir.version).map_err(|reason| {
                Error::Ir(eyeflow_ir::Error::InvalidProgramField {
                    field: "version",
                    reason,
                })
            })?;
        let sha256 = sha256_hex(bytes);
        if let Some(deployed) = stored.get(&(ir.program_id.clone(), version.to_string())) {
            if deployed.sha256 == sha256 {
                return Ok(Checked::Deployed(ProgramInfo {
                    id: ir.program_id,
                    version: version.to_string(),
                    key_id: loaded.key_id,
                    sha256,
                    instructions: ir.instructions.len(),
                }));
            }
            return Err(Error::Conflict {
                what: format!("program {}@{version}", ir.program_id),
                reason: format!(
                    "already deployed with sha256 {} (signed by key {}); this upload has sha256 {sha256}; \
                     deploy it under a new version, or undeploy {}@{version} first",
                    deployed.sha256, deployed.key_id, ir.program_id
                ),
            });
        }
        for required in &ir.required_capabilities {
            let version =
                semver::VersionReq::parse(&required.version_req).map_err(|e| Error::Refused {
                    program: ir.program_id.clone(),
                    reason: format!(
                        "capability {} has a bad version requirement: {e}",
                        required.capability_id
                    ),
                })?;
            let wanted = CapabilityRef::new(&required.capability_id, version);
            if self.inner.host.provider(&wanted).is_none() {
                return Err(Error::Refused {
                    program: ir.program_id.clone(),
                    reason: format!(
                        "needs capability {wanted}, which no installed plugin provides"
                    ),
                });
            }
        }
        let ir = Arc::new(ir);
        let program = Program::prepare(ir.clone())
            .map_err(|e| Error::Refused {
                program: ir.program_id.clone(),
                reason: e.to_string(),
            })?
            .with_signed_sha256(sha256.clone());
        let info = ProgramInfo {
            id: ir.program_id.clone(),
            version: version.to_string(),
            key_id: loaded.key_id,
            sha256,
            instructions: ir.instructions.len(),
        };
        Ok(Checked::New(Prepared { info, program }))
    }

    /// Hands a prepared program to the supervision tree: once the registry answers, its
    /// program actor runs and the version is in the deployed table.
    fn serve(&self, prepared: Prepared) -> Result<()> {
        let supervisor = self.inner.supervisor.clone();
        let deployed = Arc::new(prepared.program);
        self.inner
            .actors
            .block_on(async move {
                ractor::call_t!(supervisor, NodeMsg::Deploy, CALL_TIMEOUT_MS, deployed)
            })
            .map_err(actor_error)?
            .map_err(|reason| Error::Node { reason })
    }

    /// Deployed programs (every version; the highest is active).
    pub fn programs(&self) -> Vec<ProgramInfo> {
        let listed = self.inner.deployed.all();
        let stored = self.inner.stored.locked();
        listed
            .iter()
            .map(|p| ProgramInfo {
                id: p.id().to_owned(),
                version: p.version().to_owned(),
                key_id: p.ir().signing_key_id.clone(),
                sha256: stored
                    .get(&(p.id().to_owned(), p.version().to_owned()))
                    .map(|s| s.sha256.clone())
                    .unwrap_or_default(),
                instructions: p.ir().instructions.len(),
            })
            .collect()
    }

    /// The deployed program `id@version`, or its highest version.
    fn find(&self, id: &str, version: Option<&str>) -> Option<Arc<Program>> {
        self.inner.deployed.get(id, version)
    }

    /// Undeploys program `id` (one version, or every version): refused while one of its
    /// executions is unfinished (running, queued or awaiting approval), so accepted work is
    /// never orphaned. Returns how many versions were removed.
    pub fn undeploy(&self, id: &str, version: Option<&str>) -> Result<usize> {
        let mut stored = self.inner.stored.locked();
        let concerned =
            |program: &str, v: &str| program == id && version.is_none_or(|want| v == want);
        let busy = self
            .inner
            .journal
            .pending()
            .map_err(journal_error)?
            .iter()
            .filter(|p| concerned(&p.event.program_id, &p.event.program_version))
            .count();
        if busy > 0 {
            return Err(Error::Refused {
                program: id.to_owned(),
                reason: format!(
                    "{busy} execution(s) are unfinished (running, queued or awaiting approval); \
                     undeploy when they have ended"
                ),
            });
        }
        let supervisor = self.inner.supervisor.clone();
        let (pid, pversion) = (id.to_owned(), version.map(str::to_owned));
        let removed = self
            .inner
            .actors
            .block_on(async move {
                ractor::call_t!(
                    supervisor,
                    NodeMsg::Undeploy,
                    CALL_TIMEOUT_MS,
                    pid,
                    pversion
                )
            })
            .map_err(actor_error)?
            .map_err(|reason| Error::Node { reason })?;
        // Exactly the files deploy wrote (or reload found) for these versions.
        let gone: Vec<(String, String)> = stored
            .keys()
            .filter(|(pid, v)| concerned(pid, v))
            .cloned()
            .collect();
        for key in gone {
            if let Some(entry) = stored.remove(&key) {
                match std::fs::remove_file(&entry.file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&entry.file)(e)),
                }
            }
        }
        Ok(removed)
    }

    /// The active (highest) version of every deployed program whose signing key is not
    /// revoked: the programs that take new events.
    pub fn active_programs(&self) -> Vec<Arc<Program>> {
        self.inner
            .deployed
            .active()
            .into_iter()
            .filter(|program| !self.signer_revoked(&program.ir().signing_key_id))
            .collect()
    }

    /// What an install of `manifest` would not serve: for each capability it provides that
    /// deployed programs require, those whose version requirement does not select the
    /// version it provides (so they keep their current plugin, or none). Empty when every
    /// requirement selects it, or when no deployed program requires what it provides.
    pub fn unselected(&self, manifest: &crate::plugins::Manifest) -> Vec<String> {
        let programs = self.active_programs();
        let mut notes = Vec::new();
        for provided in &manifest.provides {
            for program in &programs {
                for required in program
                    .ir()
                    .required_capabilities
                    .iter()
                    .filter(|r| r.capability_id == provided.capability)
                {
                    let selects = semver::VersionReq::parse(&required.version_req)
                        .is_ok_and(|req| req.matches(&provided.version));
                    if !selects {
                        notes.push(format!(
                            "program {}@{} requires {} {}, which does not select {}",
                            program.id(),
                            program.version(),
                            provided.capability,
                            required.version_req,
                            provided.version
                        ));
                    }
                }
            }
        }
        notes
    }

    fn signer_revoked(&self, key_id: &str) -> bool {
        self.inner.revoked.reading().contains(key_id)
    }

    /// Routes an event from a source (webhook, MQTT, Kafka) to the active programs whose
    /// triggers match `kind` and `source` and whose filters accept the payload; each is
    /// journaled under [`event_key`] (so a redelivered event is not executed twice) and
    /// scheduled.
    pub fn ingest(
        &self,
        kind: TriggerKind,
        source: &str,
        event_id: &str,
        payload: &Value,
    ) -> Result<Vec<Routed>> {
        let mut routed = Vec::new();
        for (program, verdict) in route(&self.active_programs(), kind, source, payload) {
            let accepted = match verdict {
                Verdict::Accepted => Some(self.submit(
                    program.id(),
                    &event_key(kind, source, event_id, program.id()),
                    source,
                    payload.clone(),
                )?),
                _ => None,
            };
            routed.push(Routed {
                program_id: program.id().to_owned(),
                program_version: program.version().to_owned(),
                accepted,
                filter_error: match verdict {
                    Verdict::FilterError(e) => Some(e),
                    _ => None,
                },
            });
        }
        Ok(routed)
    }

    /// Hands an event to the trigger `index` of `program` (timers, cron, polled plugins:
    /// triggers that belong to one program): journaled under [`event_key`] with the
    /// trigger's source (its index for a timer or cron) and scheduled if the trigger's
    /// filter accepts it. `Ok(None)`: filtered out.
    pub fn fire(
        &self,
        program: &Program,
        index: usize,
        event_id: &str,
        payload: Value,
    ) -> Result<Option<Accepted>> {
        let trigger = program
            .triggers()
            .get(index)
            .ok_or_else(|| Error::BadEvent {
                event: event_id.to_owned(),
                reason: format!("program {} has no trigger {index}", program.id()),
            })?;
        // A timer or cron has no source name: its index in the program keys its events.
        let (source, shown) = match trigger.kind {
            TriggerKind::Timer | TriggerKind::Cron => {
                (index.to_string(), routing::kind_name(trigger.kind))
            }
            _ => (trigger.source.clone(), trigger.source.as_str()),
        };
        match routing::verdict(trigger, &payload) {
            Verdict::Accepted => {}
            Verdict::Filtered => return Ok(None),
            Verdict::FilterError(reason) => {
                return Err(Error::BadEvent {
                    event: event_id.to_owned(),
                    reason: format!("trigger {index}: filter: {reason}"),
                });
            }
        }
        let key = event_key(trigger.kind, &source, event_id, program.id());
        self.submit(program.id(), &key, shown, payload).map(Some)
    }

    /// Accepts an event for program `program_id` (its active version): journaled before this
    /// returns, then scheduled. A known event id is not executed again.
    pub fn submit(
        &self,
        program_id: &str,
        event_id: &str,
        source: &str,
        payload: Value,
    ) -> Result<Accepted> {
        // A payload the journal could not hold is refused before anything is written.
        if let Some(reason) = eyeflow_actors::exec::bounds::check(&payload, "the payload") {
            return Err(Error::BadEvent {
                event: event_id.to_owned(),
                reason,
            });
        }
        // Nor is work accepted that would only wait past its max_wait.
        self.inner.executions.room().map_err(overloaded)?;
        let program = self.find(program_id, None).ok_or_else(|| Error::Refused {
            program: program_id.to_owned(),
            reason: "not deployed".to_owned(),
        })?;
        let signer = &program.ir().signing_key_id;
        if self.signer_revoked(signer) {
            return Err(Error::Refused {
                program: format!("{}@{}", program.id(), program.version()),
                reason: format!(
                    "it is signed by key {signer}, which has been revoked: it takes no new event"
                ),
            });
        }
        self.inner.executions.admit(&program).map_err(overloaded)?;
        let event = EventRecord {
            event_id: event_id.to_owned(),
            source: source.to_owned(),
            program_id: program.id().to_owned(),
            program_version: program.version().to_owned(),
            payload,
            priority: program.default_priority().level,
            accepted_at_ms: crate::now_ms(),
        };
        let accepted = self.inner.journal.accept(&event).map_err(journal_error)?;
        if let Accepted::New { execution_id } = &accepted {
            self.schedule(program, execution_id.clone(), event, Vec::new());
        }
        Ok(accepted)
    }

    /// Records a human decision on a paused instruction and resumes its execution.
    /// Refused unless the execution is unfinished and waits on `instruction_id` without a
    /// decision yet (no approval in advance, no second decision).
    pub fn decide(&self, execution_id: &str, instruction_id: &str, approved: bool) -> Result<()> {
        let what = format!("decision on {execution_id}/{instruction_id}");
        let (_, steps, outcome) =
            self.inner
                .journal
                .execution(execution_id)?
                .ok_or_else(|| Error::NotFound {
                    what: format!("execution {execution_id}"),
                })?;
        // An approval is journaled under the instruction, the resolution of an ambiguous
        // effect under `instruction#attempt`.
        let waits_on = steps
            .iter()
            .rev()
            .find(|s| s.instruction_id == instruction_id)
            .and_then(|s| s.decision_id())
            .filter(|_| outcome.is_none());
        let Some(decision_id) = waits_on else {
            return Err(Error::Conflict {
                what,
                reason: "the instruction does not wait for a decision".to_owned(),
            });
        };
        if let Some(made) = self
            .inner
            .journal
            .decision(execution_id, &decision_id)
            .map_err(journal_error)?
        {
            return Err(Error::Conflict {
                what,
                reason: format!("already {}", if made { "approved" } else { "rejected" }),
            });
        }
        self.inner
            .journal
            .decide(execution_id, &decision_id, approved)
            .map_err(journal_error)?;
        let pending = self.inner.journal.pending().map_err(journal_error)?;
        if let Some(p) = pending.into_iter().find(|p| p.execution_id == execution_id) {
            self.schedule_pending(p)?;
        }
        Ok(())
    }

    fn resume(&self) -> Result<usize> {
        let pending = self.inner.journal.pending().map_err(journal_error)?;
        let n = pending.len();
        for p in pending {
            if let Err(e) = self.schedule_pending(p) {
                tracing::error!("cannot resume an execution: {e}");
            }
        }
        if n > 0 {
            tracing::info!("resumed {n} interrupted executions");
        }
        Ok(n)
    }

    fn schedule_pending(&self, pending: PendingExecution) -> Result<()> {
        let PendingExecution {
            execution_id,
            event,
            steps,
        } = pending;
        let program = self
            .find(&event.program_id, Some(&event.program_version))
            .ok_or_else(|| Error::Refused {
                program: format!("{}@{}", event.program_id, event.program_version),
                reason: format!("execution {execution_id} cannot resume: program not deployed"),
            })?;
        self.schedule(program, execution_id, event, steps);
        Ok(())
    }

    fn schedule(
        &self,
        program: Arc<Program>,
        execution_id: String,
        event: EventRecord,
        history: Vec<eyeflow_actors::ports::StepRecord>,
    ) {
        self.inner
            .executions
            .schedule(program, execution_id, event, history);
    }

    /// Per-program outcome counters and latencies since start.
    pub fn stats(&self) -> BTreeMap<String, ProgramStats> {
        self.inner.stats.locked().clone()
    }

    /// Queued executions by priority level.
    pub fn queue_depth(&self) -> BTreeMap<u32, usize> {
        self.inner.executions.queue_depth()
    }

    fn backends(&self) -> Vec<Arc<dyn Backend>> {
        self.inner.backends.reading().clone()
    }

    /// Adds a backend (an event source's connection, say) to readiness, metrics and
    /// shutdown flushing.
    pub fn add_backend(&self, backend: Arc<dyn Backend>) {
        self.inner.backends.writing().push(backend);
    }

    /// Whether each external backend answers (name, healthy).
    pub fn backend_health(&self) -> Vec<(&'static str, bool)> {
        self.backends()
            .iter()
            .map(|b| (b.name(), b.healthy()))
            .collect()
    }

    /// Required backends that do not answer (the node is not ready without them).
    pub fn backends_down(&self) -> Vec<&'static str> {
        self.backends()
            .iter()
            .filter(|b| b.required() && !b.healthy())
            .map(|b| b.name())
            .collect()
    }

    /// Records waiting in each backend's outbox (name, records).
    pub fn backlogs(&self) -> Vec<(&'static str, u64)> {
        self.backends()
            .iter()
            .filter_map(|b| b.backlog().map(|n| (b.name(), n)))
            .collect()
    }

    /// Executions accepted in this process and not yet finished or paused.
    pub fn in_flight(&self) -> usize {
        self.inner.executions.in_flight()
    }

    /// Waits until no execution is queued or running.
    pub fn wait_idle(&self) {
        self.inner.executions.wait_idle();
    }

    /// Resolves once the supervision tree has stopped: at shutdown, or when an actor
    /// restarted more often than its supervisors allow escalated to the node supervisor,
    /// which then stopped. The node cannot run executions after that: the process should
    /// stop, and its next start resumes them from the journal.
    pub async fn tree_stopped(&self) {
        let mut stopped = self.inner.tree_stopped.clone();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// Stops intake, lets running and queued executions finish, and signs the audit head
    /// (with [`NodeConfig::audit_key`]).
    pub fn shutdown(&self) -> Result<()> {
        self.inner.executions.drain();
        self.close(Duration::from_secs(10))
    }

    /// Like [`Node::shutdown`], but waits at most `timeout` for queued and running
    /// executions: what has not finished by then stays journaled as pending and resumes at
    /// the next start (side effects carry their idempotency keys). Returns whether every
    /// execution finished.
    pub fn shutdown_within(&self, timeout: Duration) -> Result<bool> {
        let executions = self.inner.executions.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            executions.drain();
            let _ = done_tx.send(());
        });
        let drained = done_rx.recv_timeout(timeout).is_ok();
        if !drained {
            self.inner.executions.abandon();
            tracing::warn!(
                "{} execution(s) still running after {} ms: they stay journaled and resume at the next start",
                self.in_flight(),
                timeout.as_millis()
            );
        }
        self.close(timeout)?;
        Ok(drained)
    }

    fn close(&self, flush_for: Duration) -> Result<()> {
        self.inner.supervisor.stop(Some("node shutdown".to_owned()));
        self.checkpoint()?;
        self.inner.store.persist(Durability::Sync)?;
        for backend in self.backends() {
            backend.flush(flush_for);
        }
        Ok(())
    }

    /// Every live actor of the supervision tree.
    pub fn actors(&self) -> Result<Vec<eyeflow_actors::supervision::ActorInfo>> {
        let supervisor = self.inner.supervisor.clone();
        self.inner
            .actors
            .block_on(async move { ractor::call_t!(supervisor, NodeMsg::Tree, CALL_TIMEOUT_MS) })
            .map_err(actor_error)?
            .map_err(|reason| Error::Node { reason })
    }

    /// Crashes the actor at `path` so that its supervisor restarts it (an operator's tool,
    /// and how tests inject faults).
    pub fn restart_actor(&self, path: &str) -> Result<()> {
        use eyeflow_actors::supervision::RestartRefused;
        let supervisor = self.inner.supervisor.clone();
        let asked = path.to_owned();
        self.inner
            .actors
            .block_on(async move {
                ractor::call_t!(supervisor, NodeMsg::Restart, CALL_TIMEOUT_MS, asked)
            })
            .map_err(actor_error)?
            .map_err(|refused| match refused {
                RestartRefused::NoSuchActor(_) => Error::NotFound {
                    what: format!("actor `{path}`"),
                },
                other => Error::Conflict {
                    what: format!("restart {path}"),
                    reason: other.to_string(),
                },
            })
    }

    /// The node id written into audit entries.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Signs and stores a checkpoint of the audit chain's head with
    /// [`NodeConfig::audit_key`]; `None` when the node has no key or the chain is empty.
    pub fn checkpoint(&self) -> Result<Option<crate::audit::Checkpoint>> {
        match &self.inner.config.audit_key {
            Some(key) => self.inner.audit.checkpoint(key),
            None => Ok(None),
        }
    }

    /// [`Node::checkpoint`] handed to an operator: recorded as released
    /// ([`crate::audit::Release::Operator`]), so audit compaction may delete what it covers.
    pub fn release_checkpoint(&self) -> Result<Option<crate::audit::Checkpoint>> {
        let checkpoint = self.checkpoint()?;
        if let Some(checkpoint) = &checkpoint {
            self.inner
                .audit
                .release(checkpoint.index, crate::audit::Release::Operator)?;
        }
        Ok(checkpoint)
    }

    /// Trusts `key` for programs and plugins (audited as `KEY_TRUST`; trusting a revoked
    /// key again does not lift its revocation).
    pub fn trust(&self, key: &ed25519_dalek::VerifyingKey) -> Result<String> {
        let id = self.inner.store.trust_key(key)?;
        self.audit_operator("KEY_TRUST", &id)?;
        Ok(id)
    }

    /// Revokes publisher key `id` at once: programs and plugins signed by it are refused
    /// from now on, and its deployed programs take no new event (executions already
    /// accepted finish, or wait for their decision, as before). Audited as `KEY_REVOKE`.
    /// Returns false when the keyring does not hold the key.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        if !self.inner.store.revoke_key(id)? {
            return Ok(false);
        }
        *self.inner.revoked.writing() = revoked_ids(&self.inner.store)?;
        self.audit_operator("KEY_REVOKE", id)?;
        Ok(true)
    }

    /// The keyring: `(key id, revoked)` of every key ever trusted.
    pub fn keys(&self) -> Result<Vec<(String, bool)>> {
        Ok(self
            .inner
            .store
            .keyring()?
            .ids()
            .map(|(id, revoked)| (id.to_owned(), revoked))
            .collect())
    }

    /// Appends the audit entry of an operator action on key `id`, durably.
    fn audit_operator(&self, opcode: &str, id: &str) -> Result<()> {
        let entry = crate::audit::operator_entry(
            opcode,
            id,
            &serde_json::json!({ "key_id": id }),
            &Value::Null,
            crate::now_ms(),
        );
        self.inner.audit.append(&entry)?;
        self.inner.store.persist(Durability::Sync)
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }
}

/// Counts how an execution's run ended in the node's metrics and per-program stats.
fn record(
    stats: &Mutex<BTreeMap<String, ProgramStats>>,
    program: &str,
    report: &Report,
    took: Duration,
) {
    let key = match report {
        Report::Finished(ExecutionOutcome::Completed { .. }) => "completed".to_owned(),
        Report::Finished(ExecutionOutcome::Failed { class, .. }) => format!("failed:{class}"),
        Report::Finished(ExecutionOutcome::Rejected { .. }) => "rejected".to_owned(),
        Report::Paused { .. } => "paused".to_owned(),
        Report::Interrupted { .. } => "interrupted".to_owned(),
    };
    crate::metrics::execution(program, &key, took);
    let mut stats = stats.locked();
    let entry = stats.entry(program.to_owned()).or_default();
    *entry.outcomes.entry(key).or_insert(0) += 1;
    if let Report::Finished(ExecutionOutcome::Failed { message, .. }) = report {
        entry.first_failure.get_or_insert_with(|| message.clone());
    }
    if matches!(report, Report::Finished(_)) {
        if entry.latencies_us.len() >= 2 * KEPT_LATENCIES {
            entry.latencies_us.drain(..KEPT_LATENCIES);
        }
        entry
            .latencies_us
            .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }
}

/// Ids of the revoked keys of `store`'s keyring.
fn revoked_ids(store: &EmbeddedStore) -> Result<std::collections::BTreeSet<String>> {
    Ok(store
        .keyring()?
        .ids()
        .filter(|(_, revoked)| *revoked)
        .map(|(id, _)| id.to_owned())
        .collect())
}

/// Where [`Node::ingest`] routed an event for one program with a matching trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Program id.
    pub program_id: String,
    /// Its active version.
    pub program_version: String,
    /// The journal's answer when a trigger's filter accepted the event; `None` when every
    /// filter said no.
    pub accepted: Option<Accepted>,
    /// A filter that could not be evaluated on this payload, if any.
    pub filter_error: Option<String>,
}

/// A development key for `demo`: generated once per data directory.
pub fn development_key(data_dir: &Path) -> Result<ed25519_dalek::SigningKey> {
    key_in(data_dir, "dev")
}

/// The key that signs the audit chain's checkpoints: the secret key file `configured`
/// (`[node] audit_key`, best kept outside the data directory, so that whoever can rewrite
/// the store cannot sign a checkpoint of the rewrite), else `node.key` in the data
/// directory, generated on first start.
pub fn audit_key(configured: Option<&Path>, data_dir: &Path) -> Result<ed25519_dalek::SigningKey> {
    match configured {
        Some(path) => Ok(keys::read_signing_key(path)?),
        None => key_in(data_dir, "node"),
    }
}

fn key_in(data_dir: &Path, name: &str) -> Result<ed25519_dalek::SigningKey> {
    let path = data_dir.join(format!("{name}.key"));
    if path.exists() {
        return Ok(keys::read_signing_key(&path)?);
    }
    std::fs::create_dir_all(data_dir).map_err(Error::io(data_dir))?;
    let key = keys::generate()?;
    keys::write_keypair(&data_dir.join(name), &key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_programs_latencies_stay_bounded_and_keep_the_latest() {
        let stats = Mutex::new(BTreeMap::new());
        let done = Report::Finished(ExecutionOutcome::Completed {
            value: serde_json::Value::Null,
        });
        let total = 5 * KEPT_LATENCIES + 7;
        for n in 0..total {
            record(&stats, "p", &done, Duration::from_micros(n as u64));
        }
        let stats = stats.locked();
        let kept = &stats["p"].latencies_us;
        assert!(kept.len() >= KEPT_LATENCIES && kept.len() <= 2 * KEPT_LATENCIES);
        // The latest, oldest first, ending with the last one recorded.
        let first = (total - kept.len()) as u64;
        assert!(kept.iter().copied().eq(first..total as u64));
        assert_eq!(stats["p"].outcomes["completed"], total as u64);
    }
}
