//! The supervision tree (ractor): a node supervisor over the node's service actors (arbiter
//! shards, fallback engine, memory tiers: [`crate::services`]) and the program registry,
//! which supervises one actor per deployed program version, which supervises one actor per
//! instruction of that program. A child that panics is restarted from its spec,
//! one-for-one, within a bounded restart intensity (ractor has none built in: its default
//! stops the supervisor); past the budget the supervisor fails itself and its own
//! supervisor decides, up to the node supervisor, which then stops: the process restarts it
//! from the journal.
//!
//! Executions are tasks of the same runtime (the scheduler's jobs). At every instruction an
//! execution enters through that instruction's actor ([`Stations::enter`]: one message into
//! its mailbox, refused at once by a dead actor); the execution's state stays in its own
//! task, so an instruction actor that crashes loses no execution: the executions that were
//! inside the instruction carry on, the next ones wait for the restarted actor. Panics
//! inside an attempt are contained at the attempt (the fallback engine handles them) and per
//! job.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::deployed::{Deployed, version_of};
use crate::exec::Program;
use crate::gates::Stations;
use crate::ports::{CallError, CallErrorKind};
use crate::services::ServiceSpec;
use crate::sync::RwLocked;

/// Restart intensity: at most `max_restarts` within `within`, then escalate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed in the window.
    pub max_restarts: usize,
    /// The sliding window.
    pub within: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            within: Duration::from_secs(10),
        }
    }
}

/// Restart timestamps of one supervisor.
#[derive(Debug, Default)]
pub struct RestartBudget {
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// Records a failure at `now`; true when a restart is still allowed by `policy`.
    pub fn allow(&mut self, policy: RestartPolicy, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.within)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= policy.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// Messages of an instruction actor.
pub enum InstructionMsg {
    /// An execution reaches the instruction (sent as it goes in: the execution does not
    /// wait for it).
    Enter,
    /// Test hook and operator tool: panic inside the actor (a bug), so that its program
    /// actor restarts it.
    Crash,
}

/// One instruction of a deployed program version: it holds the instruction's prepared form
/// (compiled CEL, schema validators, plugin binding, prompt template — shared with the
/// program's other holders) and admits every execution that reaches the instruction.
pub struct InstructionActor;

/// An instruction actor's state.
pub struct InstructionState {
    program: Arc<Program>,
    index: usize,
    /// Executions admitted since this actor (re)started.
    admitted: u64,
}

impl Actor for InstructionActor {
    type Msg = InstructionMsg;
    type State = InstructionState;
    type Arguments = (Arc<Program>, usize);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (program, index): (Arc<Program>, usize),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(InstructionState {
            program,
            index,
            admitted: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InstructionMsg::Enter => state.admitted += 1,
            InstructionMsg::Crash => panic!(
                "instruction actor {}/{} crashed on request (after {} admissions)",
                state.program.id(),
                instruction_id(&state.program, state.index),
                state.admitted
            ),
        }
        Ok(())
    }
}

fn instruction_id(program: &Program, index: usize) -> &str {
    program
        .ir()
        .instructions
        .get(index)
        .map_or("?", |i| i.instruction_id.as_str())
}

/// The instruction actors of one program version, as executions reach them: the program
/// actor replaces an entry when it restarts that actor.
pub struct ProgramStations {
    actors: std::sync::RwLock<Vec<ActorRef<InstructionMsg>>>,
}

impl ProgramStations {
    fn actor(&self, index: usize) -> Option<ActorRef<InstructionMsg>> {
        self.actors.reading().get(index).cloned()
    }

    fn replace(&self, index: usize, actor: ActorRef<InstructionMsg>) {
        if let Some(slot) = self.actors.writing().get_mut(index) {
            *slot = actor;
        }
    }
}

#[async_trait::async_trait]
impl Stations for ProgramStations {
    async fn enter(&self, index: usize) -> Result<(), CallError> {
        let actor = self.actor(index).ok_or_else(|| {
            CallError::new(
                CallErrorKind::Internal,
                "instruction actor",
                format!("no actor for instruction #{index}"),
            )
        })?;
        // A live actor takes the message into its mailbox; a dead one refuses it at once.
        // The execution does not wait for the actor to handle it: a round trip per
        // instruction would cost two wake-ups across the runtime's threads.
        actor.cast(InstructionMsg::Enter).map_err(|e| {
            CallError::new(
                CallErrorKind::Unavailable,
                "instruction actor",
                format!("instruction #{index}: {e}"),
            )
        })
    }
}

/// Messages of a program actor.
pub enum ProgramMsg {
    /// The prepared program.
    Get(RpcReplyPort<Arc<Program>>),
    /// Its instruction actors, as [`ActorInfo`]s under `path`.
    Tree(String, RpcReplyPort<Vec<ActorInfo>>),
    /// Crash the instruction actor `instruction_id` (this actor restarts it); replies
    /// whether it exists.
    CrashInstruction(String, RpcReplyPort<bool>),
    /// Test hook: panic inside the actor (a bug), to exercise supervision.
    Crash,
}

/// One deployed program version: supervises one actor per instruction (one-for-one,
/// within `policy`; past it, it fails and its registry decides).
pub struct ProgramActor {
    /// Restart intensity of its instruction actors.
    pub policy: RestartPolicy,
}

/// A program actor's state.
pub struct ProgramState {
    program: Arc<Program>,
    stations: Arc<ProgramStations>,
    budget: RestartBudget,
    /// Restarts of each instruction actor.
    restarted: Vec<u64>,
}

impl Actor for ProgramActor {
    type Msg = ProgramMsg;
    type State = ProgramState;
    type Arguments = Arc<Program>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        program: Arc<Program>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let count = program.ir().instructions.len();
        let mut actors = Vec::with_capacity(count);
        for index in 0..count {
            let (actor, _) = Actor::spawn_linked(
                None,
                InstructionActor,
                (program.clone(), index),
                myself.get_cell(),
            )
            .await?;
            actors.push(actor);
        }
        let stations = Arc::new(ProgramStations {
            actors: std::sync::RwLock::new(actors),
        });
        program.attach(stations.clone());
        Ok(ProgramState {
            program,
            stations,
            budget: RestartBudget::default(),
            restarted: vec![0; count],
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProgramMsg::Get(reply) => {
                let _ = reply.send(state.program.clone());
            }
            ProgramMsg::Tree(path, reply) => {
                let program = &state.program;
                let tree = program
                    .ir()
                    .instructions
                    .iter()
                    .enumerate()
                    .map(|(index, ins)| ActorInfo {
                        path: format!("{path}/{}", ins.instruction_id),
                        kind: "instruction",
                        restarts: state.restarted.get(index).copied().unwrap_or(0),
                        program: Some(program.id().to_owned()),
                        version: Some(program.version().to_owned()),
                        index: Some(index),
                        opcode: Some(ins.opcode().as_str_name()),
                        state: None,
                    })
                    .collect();
                let _ = reply.send(tree);
            }
            ProgramMsg::CrashInstruction(id, reply) => {
                let index = state
                    .program
                    .ir()
                    .instructions
                    .iter()
                    .position(|i| i.instruction_id == id);
                let actor = index.and_then(|index| state.stations.actor(index));
                if let Some(actor) = &actor {
                    let _ = actor.cast(InstructionMsg::Crash);
                }
                let _ = reply.send(actor.is_some());
            }
            ProgramMsg::Crash => panic!("program actor {} crashed on request", state.program.id()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Undeployed or replaced: its instruction actors go with it.
        myself.stop_children(Some("program actor stopped".to_owned()));
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let count = state.restarted.len();
        let Some(index) = (0..count).find(|&i| {
            state
                .stations
                .actor(i)
                .is_some_and(|a| a.get_id() == cell.get_id())
        }) else {
            return Ok(());
        };
        let program = &state.program;
        tracing::error!(
            program = %format!("{}@{}", program.id(), program.version()),
            instruction = instruction_id(program, index),
            "instruction actor failed: {error}"
        );
        if !state.budget.allow(self.policy, Instant::now()) {
            // Fail, so that the registry restarts the whole program version (or escalates).
            return Err(From::from(format!(
                "instruction actors of {} restart too often",
                program.id()
            )));
        }
        let (actor, _) = Actor::spawn_linked(
            None,
            InstructionActor,
            (program.clone(), index),
            myself.get_cell(),
        )
        .await?;
        state.stations.replace(index, actor);
        if let Some(n) = state.restarted.get_mut(index) {
            *n += 1;
        }
        Ok(())
    }
}

/// Messages of the program registry.
pub enum RegistryMsg {
    /// Registers (or replaces) a program version; replies once its actor runs.
    Deploy(Arc<Program>, RpcReplyPort<Result<(), String>>),
    /// The program actor of `id@version` (highest version when `None`).
    Find(
        String,
        Option<String>,
        RpcReplyPort<Option<ActorRef<ProgramMsg>>>,
    ),
    /// How many times program actors were restarted.
    Restarts(RpcReplyPort<u64>),
    /// Stops and forgets program `id` (one version, or all when `None`); replies with how
    /// many versions were removed.
    Undeploy(String, Option<String>, RpcReplyPort<Result<usize, String>>),
    /// The registry and its program actors, as [`ActorInfo`]s under `node/registry`.
    Tree(RpcReplyPort<Vec<ActorInfo>>),
    /// Crash the program actor `id@version` (its registry restarts it), or the instruction
    /// actor `id@version/instruction` (its program actor restarts it); replies whether it
    /// exists.
    CrashProgram(String, RpcReplyPort<bool>),
    /// Crash the registry itself (the node supervisor restarts it).
    Crash,
}

/// Why an actor was not restarted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartRefused {
    /// No live actor has that path.
    #[error("no actor at `{0}`")]
    NoSuchActor(String),
    /// The root: restarting it means restarting the process.
    #[error("`node` is the root of the tree: restarting it means restarting the process")]
    Root,
    /// The registry did not answer.
    #[error("program registry: {0}")]
    Unavailable(String),
}

/// One live actor of the tree, as `GET /api/actors` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActorInfo {
    /// Slash-separated from `node`: `node`, `node/registry`, `node/registry/<id>@<version>`,
    /// `node/registry/<id>@<version>/<instruction id>`.
    pub path: String,
    /// `node`, `registry`, `program`, `instruction`, `arbiter`, `fallback` or `memory`.
    pub kind: &'static str,
    /// How many times its supervisor restarted it.
    pub restarts: u64,
    /// A program or instruction actor's program id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// A program or instruction actor's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// An instruction actor's position in its program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// An instruction actor's opcode (`CALL_ACTION`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcode: Option<&'static str>,
    /// A service actor's own line about its state (`2 keys held, 0 waiting, ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl ActorInfo {
    /// An actor that is neither a program nor an instruction actor.
    fn plain(path: impl Into<String>, kind: &'static str, restarts: u64) -> Self {
        Self {
            path: path.into(),
            kind,
            restarts,
            program: None,
            version: None,
            index: None,
            opcode: None,
            state: None,
        }
    }
}

/// The registry: one supervised actor per deployed program version, and the only writer
/// of the table of deployed versions.
pub struct ProgramRegistry {
    /// Restart intensity for program actors.
    pub policy: RestartPolicy,
    /// The deployed versions: a restarted registry starts an actor for each.
    pub deployed: Arc<Deployed>,
}

/// The registry's state.
pub struct RegistryState {
    actors: BTreeMap<(String, semver::Version), ActorRef<ProgramMsg>>,
    budget: RestartBudget,
    restarts: u64,
    /// Restarts of each program actor.
    restarted: BTreeMap<(String, semver::Version), u64>,
}

impl ProgramRegistry {
    async fn spawn(
        &self,
        myself: &ActorRef<RegistryMsg>,
        program: Arc<Program>,
    ) -> Result<ActorRef<ProgramMsg>, ActorProcessingErr> {
        let actor = ProgramActor {
            policy: self.policy,
        };
        let (actor, _) = Actor::spawn_linked(None, actor, program, myself.get_cell()).await?;
        Ok(actor)
    }
}

impl Actor for ProgramRegistry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (): (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = RegistryState {
            actors: BTreeMap::new(),
            budget: RestartBudget::default(),
            restarts: 0,
            restarted: BTreeMap::new(),
        };
        // Restarted: every deployed version gets its actor again.
        for program in self.deployed.all() {
            let key = (program.id().to_owned(), version_of(&program));
            let actor = self.spawn(&myself, program).await?;
            state.actors.insert(key, actor);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMsg::Deploy(program, reply) => {
                let key = (program.id().to_owned(), version_of(&program));
                // A failed spawn is the caller's answer, never the registry's end.
                let answer = match self.spawn(&myself, program.clone()).await {
                    Ok(actor) => {
                        self.deployed.insert(program);
                        if let Some(old) = state.actors.insert(key, actor) {
                            old.stop(None);
                        }
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot start the program actor: {e}")),
                };
                let _ = reply.send(answer);
            }
            RegistryMsg::Find(id, version, reply) => {
                let found = state
                    .actors
                    .iter()
                    .rfind(|((pid, v), _)| {
                        *pid == id && version.as_ref().is_none_or(|want| v.to_string() == *want)
                    })
                    .map(|(_, actor)| actor.clone());
                let _ = reply.send(found);
            }
            RegistryMsg::Restarts(reply) => {
                let _ = reply.send(state.restarts);
            }
            RegistryMsg::Undeploy(id, version, reply) => {
                let matches = |(pid, v): &(String, semver::Version)| {
                    *pid == id && version.as_ref().is_none_or(|want| v.to_string() == *want)
                };
                self.deployed.remove(&id, version.as_deref());
                let removed: Vec<_> = state
                    .actors
                    .keys()
                    .filter(|k| matches(k))
                    .cloned()
                    .collect();
                for key in &removed {
                    if let Some(actor) = state.actors.remove(key) {
                        actor.stop(Some("undeployed".to_owned()));
                    }
                }
                let _ = reply.send(Ok(removed.len()));
            }
            RegistryMsg::Tree(reply) => {
                let mut tree = vec![ActorInfo::plain("node/registry", "registry", 0)];
                for (key, actor) in &state.actors {
                    let path = format!("node/registry/{}@{}", key.0, key.1);
                    tree.push(ActorInfo {
                        path: path.clone(),
                        kind: "program",
                        restarts: state.restarted.get(key).copied().unwrap_or(0),
                        program: Some(key.0.clone()),
                        version: Some(key.1.to_string()),
                        index: None,
                        opcode: None,
                        state: None,
                    });
                    // A program actor that does not answer (restarting) shows no children.
                    if let Ok(below) =
                        ractor::call_t!(actor, ProgramMsg::Tree, CALL_TIMEOUT_MS, path)
                    {
                        tree.extend(below);
                    }
                }
                let _ = reply.send(tree);
            }
            RegistryMsg::CrashProgram(name, reply) => {
                // `<id>@<version>`, or `<id>@<version>/<instruction id>` for one of its
                // instruction actors.
                let (program, instruction) = match name.split_once('/') {
                    Some((program, instruction)) => (program, Some(instruction)),
                    None => (name.as_str(), None),
                };
                let found = state
                    .actors
                    .iter()
                    .find(|((id, version), _)| format!("{id}@{version}") == program)
                    .map(|(_, actor)| actor.clone());
                let crashed = match (found, instruction) {
                    (None, _) => false,
                    (Some(actor), None) => actor.cast(ProgramMsg::Crash).is_ok(),
                    (Some(actor), Some(instruction)) => ractor::call_t!(
                        actor,
                        ProgramMsg::CrashInstruction,
                        CALL_TIMEOUT_MS,
                        instruction.to_owned()
                    )
                    .unwrap_or(false),
                };
                let _ = reply.send(crashed);
            }
            RegistryMsg::Crash => panic!("the program registry crashed on request"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let Some(key) = find_key(&state.actors, &cell) else {
            return Ok(());
        };
        tracing::error!(program = %format!("{}@{}", key.0, key.1), "program actor failed: {error}");
        // A failed program actor's instruction actors are not stopped with it: the new one
        // starts its own.
        cell.stop_children(Some("program actor failed".to_owned()));
        if !state.budget.allow(self.policy, Instant::now()) {
            tracing::error!("program actors restart too often; the registry escalates");
            myself.stop(Some("restart intensity exceeded".to_owned()));
            return Ok(());
        }
        if let Some(program) = self.deployed.get(&key.0, Some(&key.1.to_string())) {
            match self.spawn(&myself, program).await {
                Ok(actor) => {
                    *state.restarted.entry(key.clone()).or_insert(0) += 1;
                    state.actors.insert(key, actor);
                    state.restarts += 1;
                }
                Err(e) => {
                    // Cannot restart it: escalate, as past the restart budget.
                    tracing::error!("cannot restart a program actor ({e}); the registry escalates");
                    myself.stop(Some(format!("restart failed: {e}")));
                }
            }
        }
        Ok(())
    }
}

fn find_key(
    actors: &BTreeMap<(String, semver::Version), ActorRef<ProgramMsg>>,
    cell: &ActorCell,
) -> Option<(String, semver::Version)> {
    actors
        .iter()
        .find(|(_, actor)| actor.get_id() == cell.get_id())
        .map(|(key, _)| key.clone())
}

/// How long any call into the supervision tree waits for its answer (milliseconds): an
/// actor that does not answer fails the call instead of hanging its caller.
pub const CALL_TIMEOUT_MS: u64 = 5_000;

/// Messages of the node supervisor.
pub enum NodeMsg {
    /// The current program registry.
    Registry(RpcReplyPort<ActorRef<RegistryMsg>>),
    /// Deploys a program through the registry (which adds it to the deployed table).
    Deploy(Arc<Program>, RpcReplyPort<Result<(), String>>),
    /// How many times the registry was restarted.
    RegistryRestarts(RpcReplyPort<u64>),
    /// Undeploys program `id` (one version, or every version when `None`); replies with
    /// how many versions were removed.
    Undeploy(String, Option<String>, RpcReplyPort<Result<usize, String>>),
    /// Every live actor of the tree.
    Tree(RpcReplyPort<Result<Vec<ActorInfo>, String>>),
    /// Crashes the actor at `path` as a bug would, so that its supervisor restarts it
    /// (a service actor's path, `node/registry`, `node/registry/<id>@<version>` or
    /// `node/registry/<id>@<version>/<instruction id>`); why not, otherwise.
    Restart(String, RpcReplyPort<Result<(), RestartRefused>>),
}

/// The node supervisor: supervises the node's service actors (arbiter shards, fallback
/// engine, memory tiers: each restarted one-for-one within its own intensity) and the
/// program registry (restarted with every deployed program within the supervisor's
/// intensity); past an intensity, it stops, and the node with it.
pub struct NodeSupervisor {
    /// Restart intensity of the registry.
    pub policy: RestartPolicy,
    /// Restart intensity the registry applies to program actors.
    pub program_policy: RestartPolicy,
    /// The deployed program versions (written by the registry).
    pub deployed: Arc<Deployed>,
}

/// A service actor under the node supervisor.
struct RunningService {
    spec: ServiceSpec,
    cell: ActorCell,
    budget: RestartBudget,
    restarts: u64,
}

/// The node supervisor's state.
pub struct NodeState {
    services: Vec<RunningService>,
    registry: ActorRef<RegistryMsg>,
    budget: RestartBudget,
    restarts: u64,
}

impl NodeSupervisor {
    async fn spawn_registry(
        &self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<ActorRef<RegistryMsg>, ActorProcessingErr> {
        let registry = ProgramRegistry {
            policy: self.program_policy,
            deployed: self.deployed.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, registry, (), myself.get_cell()).await?;
        Ok(actor)
    }
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    /// The service actors to start (before the registry: executions need them).
    type Arguments = Vec<ServiceSpec>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        specs: Vec<ServiceSpec>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut services = Vec::with_capacity(specs.len());
        for spec in specs {
            let cell = spec.start(myself.get_cell()).await?;
            services.push(RunningService {
                spec,
                cell,
                budget: RestartBudget::default(),
                restarts: 0,
            });
        }
        Ok(NodeState {
            services,
            registry: self.spawn_registry(&myself).await?,
            budget: RestartBudget::default(),
            restarts: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::Registry(reply) => {
                let _ = reply.send(state.registry.clone());
            }
            NodeMsg::Deploy(program, reply) => {
                let answer = ractor::call_t!(
                    state.registry,
                    RegistryMsg::Deploy,
                    CALL_TIMEOUT_MS,
                    program
                )
                .map_err(|e| format!("program registry: {e}"))
                .and_then(|deployed| deployed);
                let _ = reply.send(answer);
            }
            NodeMsg::RegistryRestarts(reply) => {
                let _ = reply.send(state.restarts);
            }
            NodeMsg::Undeploy(id, version, reply) => {
                let removed = ractor::call_t!(
                    state.registry,
                    RegistryMsg::Undeploy,
                    CALL_TIMEOUT_MS,
                    id,
                    version
                )
                .map_err(|e| format!("program registry: {e}"))
                .and_then(|removed| removed);
                let _ = reply.send(removed);
            }
            NodeMsg::Tree(reply) => {
                let mut tree = vec![ActorInfo::plain("node", "node", 0)];
                for service in &state.services {
                    let mut info = ActorInfo::plain(
                        service.spec.path.clone(),
                        service.spec.kind,
                        service.restarts,
                    );
                    info.state = service.spec.describe().await;
                    tree.push(info);
                }
                let answer = ractor::call_t!(state.registry, RegistryMsg::Tree, CALL_TIMEOUT_MS)
                    .map(|mut below| {
                        if let Some(registry) = below.first_mut() {
                            registry.restarts = state.restarts;
                        }
                        tree.append(&mut below);
                        tree
                    })
                    .map_err(|e| format!("program registry: {e}"));
                let _ = reply.send(answer);
            }
            NodeMsg::Restart(path, reply) => {
                let unavailable =
                    |e: &dyn std::fmt::Display| RestartRefused::Unavailable(e.to_string());
                let service = state.services.iter().find(|s| s.spec.path == path);
                let answer = match path.as_str() {
                    "node" => Err(RestartRefused::Root),
                    _ if service.is_some() => service
                        .filter(|s| s.spec.crash())
                        .map(|_| ())
                        .ok_or_else(|| RestartRefused::Unavailable(format!("{path} is down"))),
                    "node/registry" => state
                        .registry
                        .cast(RegistryMsg::Crash)
                        .map_err(|e| unavailable(&e)),
                    other => match other.strip_prefix("node/registry/") {
                        Some(name) => ractor::call_t!(
                            state.registry,
                            RegistryMsg::CrashProgram,
                            CALL_TIMEOUT_MS,
                            name.to_owned()
                        )
                        .map_err(|e| unavailable(&e))
                        .and_then(|found| {
                            found
                                .then_some(())
                                .ok_or_else(|| RestartRefused::NoSuchActor(other.to_owned()))
                        }),
                        None => Err(RestartRefused::NoSuchActor(other.to_owned())),
                    },
                };
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let cell = match &event {
            SupervisionEvent::ActorFailed(cell, _)
            | SupervisionEvent::ActorTerminated(cell, _, _) => cell,
            _ => return Ok(()),
        };
        if let Some(service) = state
            .services
            .iter_mut()
            .find(|s| s.cell.get_id() == cell.get_id())
        {
            tracing::error!(actor = %service.spec.path, "service actor stopped: {event:?}");
            if !service.budget.allow(service.spec.policy, Instant::now()) {
                tracing::error!(actor = %service.spec.path, "restarts too often; the node supervisor stops");
                myself.stop(Some(format!(
                    "{} restart intensity exceeded",
                    service.spec.path
                )));
                return Ok(());
            }
            match service.spec.start(myself.get_cell()).await {
                Ok(cell) => {
                    service.cell = cell;
                    service.restarts += 1;
                }
                Err(e) => {
                    tracing::error!(actor = %service.spec.path, "cannot restart ({e}); the node supervisor stops");
                    myself.stop(Some(format!("{} restart failed: {e}", service.spec.path)));
                }
            }
            return Ok(());
        }
        if cell.get_id() != state.registry.get_id() {
            return Ok(());
        }
        if !state.budget.allow(self.policy, Instant::now()) {
            tracing::error!("the program registry restarts too often; the node supervisor stops");
            myself.stop(Some("registry restart intensity exceeded".to_owned()));
            return Ok(());
        }
        tracing::warn!("restarting the program registry");
        state.registry = self.spawn_registry(&myself).await?;
        state.restarts += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_n_restarts_per_window() {
        let policy = RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(10),
        };
        let mut budget = RestartBudget::default();
        let t0 = Instant::now();
        assert!(budget.allow(policy, t0));
        assert!(budget.allow(policy, t0 + Duration::from_secs(1)));
        assert!(
            !budget.allow(policy, t0 + Duration::from_secs(2)),
            "third within the window"
        );
        assert!(
            budget.allow(policy, t0 + Duration::from_secs(12)),
            "the window slid"
        );
    }
}
