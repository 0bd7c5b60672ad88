//! The device actor (`node/devices/<id>`, kind `device`): owns its device's link (a task
//! it starts, and that stops with it), answers heartbeats, deploys programs one at a
//! time (on HELLO and for operators), sends RUNs, and records what the device reports.
//! A restarted actor starts a new link; the device then says HELLO again.
//!
//! The device takes one thing at a time: while it runs an execution it reads no other
//! frame than that execution's (an LLM_ANSWER), and a RUN or DEPLOY sent meanwhile would
//! hold its reader until the execution ends — its LLM_CALL's answer then unread. So the
//! actor sends the next RUN or DEPLOY only once the device's last execution sent its
//! `end` trace line (or [`EXECUTION_WAIT`] passed without it); RUNs accepted meanwhile
//! wait here, in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eyeflow_actors::exec::now_ms;
use eyeflow_actors::services::Service;
use eyeflow_actors::sync::Locked;
use eyeflow_mcu::frame::{Fields, MAX_FRAME, Message};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};

use super::record::{Incoming, Origin, OwnedFields, audit_entry, fields_json};
use super::{DEPLOY_TIMEOUT, Deployment, Device, DeviceContext, Hello, Signed, link};

/// Frames waiting for the link.
const OUTGOING: usize = 32;
/// RUNs accepted and waiting for the device.
const MAX_WAITING_RUNS: usize = 64;
/// How long an execution on the device holds the next RUN or DEPLOY back without its
/// `end` trace line (which a corrupt frame can lose).
const EXECUTION_WAIT: Duration = Duration::from_secs(20);

/// Messages of a device actor.
pub enum DeviceMsg {
    /// A message the device sent.
    Frame(Incoming),
    /// The link connected.
    Connected,
    /// The link was lost.
    Disconnected,
    /// An operator's program to deploy; the answer once the device answers.
    Deploy(Signed, oneshot::Sender<Result<Deployment, String>>),
    /// An event to run on the device; answered once it is accepted (sent, or waiting
    /// for the device's current execution to end).
    Run(OwnedFields, oneshot::Sender<Result<(), String>>),
    /// One line about the device.
    Describe(oneshot::Sender<String>),
    /// Test hook and operator tool: panic, so that the node supervisor restarts it.
    Crash,
}

/// A device's actor.
pub struct DeviceActor {
    device: Arc<Device>,
    context: Arc<DeviceContext>,
}

impl DeviceActor {
    /// The actor of `device`.
    pub fn new(device: Arc<Device>, context: Arc<DeviceContext>) -> Self {
        Self { device, context }
    }
}

/// A deploy waiting for its turn or for the device's answer; `reply` is an operator's.
struct Pending {
    program: Signed,
    reply: Option<oneshot::Sender<Result<Deployment, String>>>,
}

/// A device actor's state.
pub struct DeviceState {
    outgoing: mpsc::Sender<Vec<u8>>,
    _link: link::Owned,
    connected: bool,
    /// Whether the device said HELLO on this connection (PINGs are answered after it).
    greeted: bool,
    /// When the device's start was heard (its HELLO saying it started; for a device
    /// already running, this actor's start), ms: device executions are numbered from 1 at
    /// each start, so their ids in the node's records carry it.
    session_ms: u64,
    seq: u8,
    /// The deploy the device is answering, and since when.
    deploying: Option<(Pending, Instant)>,
    queue: VecDeque<Pending>,
    /// RUNs accepted, waiting for the device.
    runs: VecDeque<OwnedFields>,
    /// Since when the device runs an execution of a RUN the node sent (until its `end`).
    busy: Option<Instant>,
    /// EVENTs received in this session (their idempotency keys).
    events: u64,
}

impl Actor for DeviceActor {
    type Msg = DeviceMsg;
    type State = DeviceState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (): (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let (outgoing, frames) = mpsc::channel(OUTGOING);
        Ok(DeviceState {
            outgoing,
            _link: link::spawn(self.device.clone(), myself, frames),
            connected: false,
            greeted: false,
            session_ms: now_ms(),
            seq: 0,
            deploying: None,
            queue: VecDeque::new(),
            runs: VecDeque::new(),
            busy: None,
            events: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DeviceMsg::Frame(incoming) => self.incoming(incoming, state).await,
            DeviceMsg::Connected => {
                state.connected = true;
                state.greeted = false;
            }
            DeviceMsg::Disconnected => {
                state.connected = false;
                state.greeted = false;
                fail_all(state, "the link to the device was lost");
            }
            DeviceMsg::Deploy(program, reply) => {
                if !state.connected {
                    let _ = reply.send(Err("the device is not connected".to_owned()));
                } else {
                    state.queue.push_back(Pending {
                        program,
                        reply: Some(reply),
                    });
                    self.pump(state);
                }
            }
            DeviceMsg::Run(fields, reply) => {
                let accepted = if !state.connected {
                    Err("the device is not connected".to_owned())
                } else if state.runs.len() >= MAX_WAITING_RUNS {
                    Err(format!(
                        "{MAX_WAITING_RUNS} events are already waiting for the device"
                    ))
                } else {
                    state.runs.push_back(fields);
                    Ok(())
                };
                let _ = reply.send(accepted);
                self.pump(state);
            }
            DeviceMsg::Describe(reply) => {
                let running = self.device.state.locked().running.clone();
                let _ = reply.send(format!(
                    "{} via {}, running {}",
                    if state.connected {
                        "connected"
                    } else {
                        "not connected"
                    },
                    self.device.config.link,
                    running.map_or("nothing known".to_owned(), |(id, v)| format!("{id}@{v}")),
                ));
            }
            DeviceMsg::Crash => panic!("device actor crashed on request"),
        }
        self.device.state.locked().waiting = state.runs.len() + state.queue.len();
        Ok(())
    }
}

impl Service for DeviceActor {
    fn crash() -> DeviceMsg {
        DeviceMsg::Crash
    }

    fn describe(reply: oneshot::Sender<String>) -> DeviceMsg {
        DeviceMsg::Describe(reply)
    }
}

impl DeviceActor {
    fn id(&self) -> &str {
        self.device.id()
    }

    /// Encodes `message` and hands it to the link.
    fn send(&self, state: &mut DeviceState, message: &Message<'_>) -> Result<(), String> {
        let mut frame = vec![0u8; MAX_FRAME];
        let len = message
            .encode(state.seq, &mut frame)
            .map_err(|e| e.to_string())?;
        frame.truncate(len);
        state.seq = state.seq.wrapping_add(1);
        state
            .outgoing
            .try_send(frame)
            .map_err(|_| "the link is not taking frames (disconnected or stalled)".to_owned())
    }

    async fn incoming(&self, incoming: Incoming, state: &mut DeviceState) {
        // A deploy the device never answered (it rebooted mid-way) gives way.
        if let Some((_, since)) = &state.deploying
            && since.elapsed() > DEPLOY_TIMEOUT
        {
            self.answer(
                state,
                Err("the device did not answer the DEPLOY".to_owned()),
            );
        }
        match incoming {
            Incoming::Hello {
                device,
                firmware,
                capabilities,
                program,
                started,
            } => {
                if device != self.id() {
                    self.device.count_bad_frames(1);
                    tracing::warn!(device = %self.id(), said = %device, "a device with another id answers on this link; ignored");
                    return;
                }
                self.heard();
                state.greeted = true;
                if started {
                    state.session_ms = now_ms();
                    state.events = 0;
                    fail_all(state, "the device restarted before it answered");
                    // Its execution, if any, ended with the restart.
                    state.busy = None;
                }
                let desired = {
                    let mut known = self.device.state.locked();
                    known.hello = Some(Hello {
                        firmware,
                        capabilities: capabilities.into_iter().collect(),
                    });
                    known.running.clone_from(&program);
                    known.desired.clone()
                };
                let _ = self.send(state, &Message::Pong);
                let runs_last = desired
                    .last()
                    .is_some_and(|s| program.as_ref() == Some(&(s.id.clone(), s.version.clone())));
                // A device greeting again (not started) still answers the deploys asked.
                let asked = state.deploying.is_some() || !state.queue.is_empty();
                if !runs_last && !asked {
                    state
                        .queue
                        .extend(desired.into_iter().map(|program| Pending {
                            program,
                            reply: None,
                        }));
                }
                self.pump(state);
            }
            Incoming::Ping => {
                self.heard();
                // Unanswered, a PING makes the device say HELLO again: a new link (a node
                // restart) learns what it runs.
                if state.greeted {
                    let _ = self.send(state, &Message::Pong);
                }
                // An execution whose `end` was lost holds nothing back past its wait.
                self.pump(state);
            }
            Incoming::Loaded(id, version) => {
                self.device.state.locked().running = Some((id.clone(), version.clone()));
                // The device restarted on it: it greets before anything else is sent.
                state.greeted = false;
                state.busy = None;
                self.answer(state, Ok(Deployment::Loaded { id, version }));
            }
            Incoming::Refused(reason) => self.answer(state, Ok(Deployment::Refused { reason })),
            Incoming::Trace { execution, line } => {
                self.trace(state, execution, &line).await;
                if line.starts_with("end ") {
                    state.busy = None;
                    self.pump(state);
                }
            }
            Incoming::Event { topic, key, fields } => {
                state.events += 1;
                let idempotency = format!(
                    "device/{}/{}/event/{}",
                    self.id(),
                    state.session_ms,
                    state.events
                );
                let sink = self.context.sink.clone();
                let device = self.id().to_owned();
                let payload = fields_json(&fields);
                tokio::spawn(async move {
                    if let Err(e) = sink.emit(&topic, &key, &payload, &idempotency).await {
                        tracing::warn!(%device, %topic, "a device's event was not published: {e}");
                    }
                });
            }
            Incoming::LlmRequest {
                request,
                program,
                instruction,
                context,
            } => {
                let signed = self.device.sent(&program.0, &program.1);
                let llm = self.context.llm.clone();
                let outgoing = state.outgoing.clone();
                let device = self.id().to_owned();
                tokio::spawn(async move {
                    let result =
                        super::llm::serve(llm.as_ref(), signed.as_ref(), &instruction, &context)
                            .await;
                    if let Err(e) = &result {
                        tracing::warn!(%device, %instruction, "a device's LLM_CALL failed: {e}");
                    }
                    let answer = Message::LlmAnswer {
                        request,
                        result: result.as_ref().map(|v| v.value()).map_err(|e| e.class),
                    };
                    let mut frame = vec![0u8; MAX_FRAME];
                    if let Ok(len) = answer.encode(0, &mut frame) {
                        frame.truncate(len);
                        let _ = outgoing.send(frame).await;
                    }
                });
            }
        }
    }

    fn heard(&self) {
        self.device.state.locked().heard = Some(Instant::now());
    }

    /// Sends what waits for the device, when it takes it: nothing before its HELLO, while
    /// a DEPLOY is being answered or while an execution runs; else the next DEPLOY, or
    /// else the next RUN.
    fn pump(&self, state: &mut DeviceState) {
        let running = state
            .busy
            .is_some_and(|since| since.elapsed() < EXECUTION_WAIT);
        if !state.greeted || running || state.deploying.is_some() {
            return;
        }
        if !state.queue.is_empty() {
            self.next_deploy(state);
            return;
        }
        let Some(fields) = state.runs.pop_front() else {
            return;
        };
        let list: Vec<(&str, eyeflow_mcu::Value<'_>)> = fields
            .iter()
            .map(|(p, v)| (p.as_str(), v.value()))
            .collect();
        let run = Message::Run {
            fields: Fields::List(&list),
        };
        match self.send(state, &run) {
            Ok(()) => state.busy = Some(Instant::now()),
            Err(e) => {
                tracing::warn!(device = %self.id(), "an event waits for the link: {e}");
                state.runs.push_front(fields);
            }
        }
    }

    /// Sends the next queued DEPLOY (a refused send answers its operator).
    fn next_deploy(&self, state: &mut DeviceState) {
        while state.deploying.is_none() {
            let Some(pending) = state.queue.pop_front() else {
                return;
            };
            let sent = self.send(
                state,
                &Message::Deploy {
                    program: &pending.program.bytes,
                },
            );
            match sent {
                Ok(()) => {
                    self.device
                        .state
                        .locked()
                        .sent
                        .push(pending.program.clone());
                    state.deploying = Some((pending, Instant::now()));
                }
                Err(e) => {
                    if let Some(reply) = pending.reply {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// The device answered the DEPLOY in flight (or gave up on it).
    fn answer(&self, state: &mut DeviceState, answer: Result<Deployment, String>) {
        let Some((pending, _)) = state.deploying.take() else {
            self.device.count_bad_frames(1);
            return;
        };
        match &answer {
            Ok(Deployment::Loaded { id, version }) => {
                tracing::info!(device = %self.id(), program = %id, %version, "device loaded the program");
                if pending.reply.is_some() {
                    // An operator's program is what the device should run from now on.
                    self.device.state.locked().desired = vec![pending.program.clone()];
                }
            }
            Ok(Deployment::Refused { reason }) => {
                tracing::warn!(device = %self.id(), program = %pending.program.id, %reason, "device refused the program; it keeps its current one");
            }
            Err(e) => tracing::warn!(device = %self.id(), "deploy: {e}"),
        }
        if let Some(reply) = pending.reply {
            let _ = reply.send(answer);
        }
        self.pump(state);
    }

    /// Appends a trace line's audit entry (a step) to the node's chain.
    async fn trace(&self, state: &DeviceState, execution: u32, line: &str) {
        let program = self.device.state.locked().running.clone();
        let origin = Origin {
            device: self.id(),
            execution_id: format!("device/{}/{}/{execution}", self.id(), state.session_ms),
            program: program.as_ref(),
            program_sha256: program
                .as_ref()
                .and_then(|(id, version)| self.device.sent(id, version))
                .map(|s| s.sha256),
        };
        let entry = match audit_entry(&origin, line, now_ms()) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                if line.starts_with("end ") {
                    self.device.state.locked().executions += 1;
                }
                return;
            }
            Err(e) => {
                self.device.count_bad_frames(1);
                tracing::warn!(device = %self.id(), "{e}");
                return;
            }
        };
        let (audit, store, durability) = (
            self.context.audit.clone(),
            self.context.store.clone(),
            self.context.durability,
        );
        let written = tokio::task::spawn_blocking(move || {
            audit.append_all(std::slice::from_ref(&entry))?;
            store.persist(durability)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(device = %self.id(), "a device step was not audited: {e}")
            }
            Err(e) => tracing::error!(device = %self.id(), "a device step was not audited: {e}"),
        }
    }
}

fn fail_all(state: &mut DeviceState, why: &str) {
    let pending = state
        .deploying
        .take()
        .map(|(p, _)| p)
        .into_iter()
        .chain(state.queue.drain(..));
    for p in pending {
        if let Some(reply) = p.reply {
            let _ = reply.send(Err(why.to_owned()));
        }
    }
}
