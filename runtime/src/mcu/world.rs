//! The world an MCU program meets when the server runs a conformance vector: the
//! hardware and the LLM answer from the vector's script ([`ScriptedHardware`], delays as
//! timers of the actor runtime so per-instruction timeouts apply), an emitted event goes
//! nowhere (as the QEMU board's scripted mode, which only reports it), and every other
//! port refuses (an MCU program reaches none of them).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eyeflow_actors::exec::{Effects, SystemClock};
use eyeflow_actors::gates::{Boundary, Decided, Fallbacks, ResourceGate, ResourceHold};
use eyeflow_actors::ports::{
    CallError, CallErrorKind, CapabilityRef, ClusterMemory, EventSink, HttpPort, HttpRequest,
    HttpResponse, Journal, LlmPort, LlmRequest, MemoryError, NodeMemory, OnResume, PluginPort,
    Secret, SecretError, SecretSource,
};
use eyeflow_mcu::script::{LLM, Script};
use eyeflow_mcu::trace::ErrorClass;
use serde_json::Value;

/// Who answers in errors of the simulated hardware.
const ORIGIN: &str = "hardware";

/// The action name a LOAD_RESOURCE's answer carries in a script (the instruction itself
/// names no action).
pub(crate) const READ: &str = "read";

/// One answer of the simulated hardware, owned.
#[derive(Debug, Clone)]
struct Answer {
    capability: String,
    action: String,
    delay: Duration,
    result: Result<Value, CallErrorKind>,
}

/// The vector's hardware: each CALL_ACTION / LOAD_RESOURCE takes the next answer, which
/// must name its capability and action (`read` for a LOAD_RESOURCE); a mismatch or
/// no answer left fails `unavailable`. An answer slower than the call's deadline fails
/// `timeout` at the deadline.
#[derive(Debug)]
pub(crate) struct ScriptedHardware {
    answers: Mutex<VecDeque<Answer>>,
}

impl ScriptedHardware {
    /// The answers of `script` (`None` if one is a number JSON cannot hold).
    pub(crate) fn new(script: &Script<'_>) -> Option<Self> {
        let answers = script
            .answers()
            .map(|a| {
                let result = match a.result {
                    Ok(value) => Ok(super::json_of(&value)?),
                    Err(class) => Err(call_error_kind(class)),
                };
                Some(Answer {
                    capability: a.capability.to_owned(),
                    action: a.action.to_owned(),
                    delay: Duration::from_millis(u64::from(a.delay_ms)),
                    result,
                })
            })
            .collect::<Option<_>>()?;
        Some(Self {
            answers: Mutex::new(answers),
        })
    }

    async fn answer(
        &self,
        capability: &str,
        action: &str,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        let next = {
            let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            match answers.front() {
                Some(a) if a.capability == capability && a.action == action => answers.pop_front(),
                _ => None,
            }
        };
        let Some(answer) = next else {
            return Err(CallError::new(
                CallErrorKind::Unavailable,
                ORIGIN,
                format!("no answer for `{capability}` `{action}` is next in the script"),
            ));
        };
        if answer.delay > deadline {
            tokio::time::sleep(deadline).await;
            return Err(CallError::new(
                CallErrorKind::Timeout,
                ORIGIN,
                format!("no answer within {} ms", deadline.as_millis()),
            ));
        }
        tokio::time::sleep(answer.delay).await;
        answer
            .result
            .map_err(|kind| CallError::new(kind, ORIGIN, "the script answers a failure"))
    }
}

/// The port error kind the executor maps back to `class` (`internal` for the classes no
/// port reports: the vector generator refuses those in scripts).
pub(crate) fn call_error_kind(class: ErrorClass) -> CallErrorKind {
    match class {
        ErrorClass::Timeout => CallErrorKind::Timeout,
        ErrorClass::Unavailable => CallErrorKind::Unavailable,
        ErrorClass::RateLimit => CallErrorKind::RateLimited,
        ErrorClass::ModelUnavailable => CallErrorKind::ModelUnavailable,
        ErrorClass::InvalidInput => CallErrorKind::InvalidInput,
        ErrorClass::InvalidOutput => CallErrorKind::InvalidOutput,
        ErrorClass::Denied => CallErrorKind::Denied,
        ErrorClass::ResourceExhausted => CallErrorKind::ResourceExhausted,
        ErrorClass::ResourceTimeout
        | ErrorClass::PostconditionFailed
        | ErrorClass::OutsideTimeWindow
        | ErrorClass::Internal => CallErrorKind::Internal,
    }
}

#[async_trait::async_trait]
impl PluginPort for ScriptedHardware {
    async fn read(
        &self,
        connector: &CapabilityRef,
        _key: &str,
        _params: &Value,
        _call: &str,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        self.answer(&connector.id, READ, deadline).await
    }

    async fn invoke(
        &self,
        capability: &CapabilityRef,
        action: &str,
        _input: &Value,
        _idempotency_key: &str,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        self.answer(&capability.id, action, deadline).await
    }

    fn on_resume(&self, _capability: &CapabilityRef, _action: &str) -> OnResume {
        OnResume::Ambiguous
    }
}

/// An LLM_CALL takes the next answer of capability [`LLM`] and the call's model: the
/// value the node would send back, as the text the executor parses (JSON when the call
/// asks for JSON, else the string itself).
#[async_trait::async_trait]
impl LlmPort for ScriptedHardware {
    async fn complete(&self, request: &LlmRequest) -> Result<String, CallError> {
        let value = self.answer(LLM, &request.model, request.timeout).await?;
        Ok(match value {
            Value::String(text) if !request.json_output => text,
            other => other.to_string(),
        })
    }
}

/// An MCU program's events go nowhere in a vector: its trace shows the EMIT_EVENT ran.
#[async_trait::async_trait]
impl EventSink for ScriptedHardware {
    async fn emit(&self, _: &str, _: &str, _: &Value, _: &str) -> Result<(), CallError> {
        Ok(())
    }
}

/// Every port a device does not have: each call fails `denied`.
#[derive(Debug, Clone, Copy, Default)]
struct NotOnDevice;

const NOT_ON_DEVICE: &str = "a device has no such port";

#[async_trait::async_trait]
impl HttpPort for NotOnDevice {
    fn admit(&self, _request: &HttpRequest) -> Result<(), CallError> {
        Err(CallError::new(CallErrorKind::Denied, "http", NOT_ON_DEVICE))
    }

    async fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, CallError> {
        Err(CallError::new(CallErrorKind::Denied, "http", NOT_ON_DEVICE))
    }
}

fn memory_error(operation: &'static str, key: &str) -> MemoryError {
    MemoryError::new(
        "device",
        operation,
        key,
        CallErrorKind::Denied,
        NOT_ON_DEVICE,
    )
}

#[async_trait::async_trait]
impl NodeMemory for NotOnDevice {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        Err(memory_error("read", key))
    }

    async fn set(&self, key: &str, _: &Value, _: Duration) -> Result<(), MemoryError> {
        Err(memory_error("write", key))
    }
}

#[async_trait::async_trait]
impl ClusterMemory for NotOnDevice {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        Err(memory_error("read", key))
    }

    async fn put(&self, key: &str, _: &Value) -> Result<(), MemoryError> {
        Err(memory_error("write", key))
    }
}

#[async_trait::async_trait]
impl SecretSource for NotOnDevice {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Err(SecretError::new(name, CallErrorKind::Denied, NOT_ON_DEVICE))
    }
}

/// A device runs one execution: no other holder, no preemption.
#[derive(Debug, Clone, Copy, Default)]
struct Alone;

#[async_trait::async_trait]
impl ResourceGate for Alone {
    async fn acquire(
        &self,
        _key: &str,
        _holder: &str,
        _priority: u32,
        _max_wait: Duration,
    ) -> Result<ResourceHold, CallError> {
        Ok(ResourceHold::new(|| {}))
    }
}

#[async_trait::async_trait]
impl Boundary for Alone {
    async fn checkpoint(&self, _execution_id: &str, _priority: u32, _preemptible: bool) {}
}

/// Retry backoffs on the actor runtime's timers.
#[async_trait::async_trait]
impl Fallbacks for Alone {
    async fn decided(&self, decision: Decided) -> Result<(), CallError> {
        if let Some(delay) = decision.delay {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }
}

/// The effects of one vector's execution: `hardware` (also the LLM and the event sink)
/// and `journal` (the node's own, on a data directory of its own), every other port
/// refusing.
pub(crate) fn effects(hardware: Arc<ScriptedHardware>, journal: Arc<dyn Journal>) -> Effects {
    Effects {
        node_id: "mcu".into(),
        plugins: hardware.clone(),
        http: Arc::new(NotOnDevice),
        llm: hardware.clone(),
        events: hardware,
        node_memory: Arc::new(NotOnDevice),
        cluster_memory: Arc::new(NotOnDevice),
        secrets: Arc::new(NotOnDevice),
        journal,
        arbiter: Arc::new(Alone),
        fallbacks: Arc::new(Alone),
        boundary: Arc::new(Alone),
        clock: Arc::new(SystemClock),
    }
}
