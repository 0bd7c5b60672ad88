//! The serial gateway's node side: the field devices of `[[devices]]`, each served by a
//! supervised device actor (`node/devices/<id>`, kind `device`) that owns its link (a TCP
//! serial bridge or a tty), deploys signed programs to the device, forwards events to it,
//! and turns what it sends back into the node's records: trace lines into the audit chain,
//! EMIT_EVENTs into the event sink, LLM_CALLs into LLM requests. The protocol is
//! `eyeflow_mcu::frame`; the device side is the firmware's gateway (`docs/firmware.md`).
//!
//! ```text
//! node supervisor ─ node/devices/<id> (DeviceActor) ─ its link task (connect, backoff, frames)
//! ```

mod actor;
mod config;
mod link;
mod llm;
mod record;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eyeflow_actors::ports::{EventSink, LlmPort};
use eyeflow_actors::services::{Mailbox, ServiceSpec};
use eyeflow_actors::supervision::RestartPolicy;
use eyeflow_actors::sync::Locked;
use serde::Serialize;
use tokio::sync::oneshot;

pub use actor::{DeviceActor, DeviceMsg};
pub use config::{DeviceConfig, DeviceSection, Link, Signed};
pub use record::{Incoming, OwnedFields, Scalar, event_fields};

use crate::audit::FjallAudit;
use crate::store::{Durability, EmbeddedStore};
use crate::{Error, Result};

/// Heartbeats a device may miss before it is `down`.
pub const MISSED_HEARTBEATS: u32 = 3;

/// How long an operator's deploy waits for the device's LOADED or REFUSED.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(20);

/// What the device actors write into and call: the node's audit chain and store, its event
/// sink and its LLM port.
#[derive(Clone)]
pub struct DeviceContext {
    /// The audit chain device executions are appended to.
    pub audit: Arc<FjallAudit>,
    /// The store the audit lives in (made durable after each append).
    pub store: EmbeddedStore,
    /// How durable an append is.
    pub durability: Durability,
    /// Where a device's EMIT_EVENTs are published.
    pub sink: Arc<dyn EventSink>,
    /// What serves a device's LLM_CALLs.
    pub llm: Arc<dyn LlmPort>,
}

/// What the node knows of one device, shared by its actor (any incarnation) and the API.
pub struct Device {
    config: DeviceConfig,
    mailbox: Arc<Mailbox<DeviceMsg>>,
    state: Mutex<Known>,
}

/// A device's state as the node last heard it.
#[derive(Default)]
struct Known {
    /// When the device last sent a HELLO or a PING.
    heard: Option<Instant>,
    /// Its last HELLO.
    hello: Option<Hello>,
    /// The program it runs (HELLO, then each LOADED).
    running: Option<(String, String)>,
    /// The programs it should run, deployed in order on HELLO when it runs another.
    desired: Vec<Signed>,
    /// Every program the node sent it, for the audit's sha256 and the LLM_CALLs' prompts.
    sent: Vec<Signed>,
    /// Frames dropped: corrupt, malformed, or not a device's message.
    bad_frames: u64,
    /// Executions whose trace arrived.
    executions: u64,
    /// Events and programs accepted for it and not yet sent (its actor's queues).
    waiting: usize,
}

/// A device's HELLO.
#[derive(Debug, Clone, Serialize)]
pub struct Hello {
    /// Its firmware version.
    pub firmware: String,
    /// Its capabilities, `id` → version.
    pub capabilities: BTreeMap<String, String>,
}

/// A device in `GET /api/health`.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceHealth {
    /// Its id.
    pub id: String,
    /// `up` while its heartbeats arrive, `down` after [`MISSED_HEARTBEATS`] missed.
    pub status: &'static str,
    /// Its firmware and capabilities, once it said HELLO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hello: Option<Hello>,
    /// `id@version` of the program it runs, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Frames from it that were dropped.
    pub bad_frames: u64,
    /// Executions whose trace it sent.
    pub executions: u64,
    /// Events and programs accepted for it, waiting for its current execution or deploy.
    pub waiting: usize,
}

impl Device {
    fn new(config: DeviceConfig) -> Arc<Self> {
        let desired = config.programs.clone();
        Arc::new(Self {
            config,
            mailbox: Mailbox::new("device"),
            state: Mutex::new(Known {
                desired,
                ..Known::default()
            }),
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    fn up(&self, now: Instant) -> bool {
        let window = self.config.heartbeat * MISSED_HEARTBEATS;
        self.state
            .locked()
            .heard
            .is_some_and(|heard| now.saturating_duration_since(heard) < window)
    }

    fn health(&self, now: Instant) -> DeviceHealth {
        let up = self.up(now);
        let known = self.state.locked();
        DeviceHealth {
            id: self.config.id.clone(),
            status: if up { "up" } else { "down" },
            hello: known.hello.clone(),
            program: known.running.as_ref().map(|(id, v)| format!("{id}@{v}")),
            bad_frames: known.bad_frames,
            executions: known.executions,
            waiting: known.waiting,
        }
    }

    /// The signed program `id@version` the node sent this device, if it did.
    fn sent(&self, id: &str, version: &str) -> Option<Signed> {
        self.state
            .locked()
            .sent
            .iter()
            .rev()
            .find(|s| s.id == id && s.version == version)
            .cloned()
    }

    fn count_bad_frames(&self, n: u64) {
        if n > 0 {
            self.state.locked().bad_frames += n;
            crate::metrics::device_bad_frames(&self.config.id, n);
        }
    }
}

/// How a DEPLOY ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Deployment {
    /// The device loaded it and runs it now.
    Loaded {
        /// Program id.
        id: String,
        /// Version.
        version: String,
    },
    /// The device refused it and keeps its current program.
    Refused {
        /// The device's reason (the trace's refusal name: `bad_signature`, ...).
        reason: String,
    },
}

/// The node's devices.
#[derive(Default)]
pub struct Devices {
    by_id: BTreeMap<String, Arc<Device>>,
}

impl Devices {
    /// The devices of `configs`, and the specs of their actors for the node supervisor.
    pub fn new(
        configs: Vec<DeviceConfig>,
        context: DeviceContext,
        policy: RestartPolicy,
    ) -> (Self, Vec<ServiceSpec>) {
        let context = Arc::new(context);
        let mut by_id = BTreeMap::new();
        let mut specs = Vec::with_capacity(configs.len());
        for config in configs {
            let device = Device::new(config);
            let (actor_device, actor_context) = (device.clone(), context.clone());
            specs.push(ServiceSpec::new(
                format!("node/devices/{}", device.id()),
                "device",
                policy,
                device.mailbox.clone(),
                move || {
                    let actor = DeviceActor::new(actor_device.clone(), actor_context.clone());
                    (actor, ())
                },
            ));
            by_id.insert(device.id().to_owned(), device);
        }
        (Self { by_id }, specs)
    }

    fn device(&self, id: &str) -> Result<&Arc<Device>> {
        self.by_id.get(id).ok_or_else(|| Error::NotFound {
            what: format!("device `{id}`"),
        })
    }

    /// Sends the signed program `bytes` to device `id` and waits for its answer.
    pub async fn deploy(&self, id: &str, bytes: &[u8]) -> Result<Deployment> {
        let device = self.device(id)?;
        let signed = Signed::new(bytes).map_err(|reason| Error::Refused {
            program: format!("for device `{id}`"),
            reason,
        })?;
        let answer = self
            .ask(device, |reply| DeviceMsg::Deploy(signed.clone(), reply))
            .await?;
        let answer = tokio::time::timeout(DEPLOY_TIMEOUT, answer)
            .await
            .map_err(|_| unavailable(id, "it did not answer the DEPLOY in time"))?
            .map_err(|_| unavailable(id, "its actor stopped before the device answered"))?;
        answer.map_err(|reason| unavailable(id, &reason))
    }

    /// Sends the event `body` (a JSON object of scalars) to device `id` as a RUN.
    pub async fn run(&self, id: &str, body: &serde_json::Value) -> Result<()> {
        let device = self.device(id)?;
        let fields = event_fields(body).map_err(|reason| Error::BadEvent {
            event: format!("for device `{id}`"),
            reason,
        })?;
        let sent = self
            .ask(device, |reply| DeviceMsg::Run(fields.clone(), reply))
            .await?
            .await
            .map_err(|_| unavailable(id, "its actor stopped"))?;
        sent.map_err(|reason| unavailable(id, &reason))
    }

    /// Asks the device's actor; the answer's receiver.
    async fn ask<T: Send + 'static>(
        &self,
        device: &Device,
        build: impl Fn(oneshot::Sender<T>) -> DeviceMsg,
    ) -> Result<oneshot::Receiver<T>> {
        device
            .mailbox
            .ask(|accepted: oneshot::Sender<oneshot::Receiver<T>>| {
                let (tx, rx) = oneshot::channel();
                // The receiver goes back at once; the answer comes when the device answers.
                let _ = accepted.send(rx);
                build(tx)
            })
            .await
            .map_err(|e| unavailable(device.id(), &e.to_string()))
    }

    /// Every device's health, by id.
    pub fn health(&self) -> Vec<DeviceHealth> {
        let now = Instant::now();
        self.by_id.values().map(|d| d.health(now)).collect()
    }
}

fn unavailable(id: &str, reason: &str) -> Error {
    Error::Device {
        device: id.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests;
