//! Ports for the effects an execution has besides plugins: outgoing HTTP (CALL_API,
//! CALL_SERVICE), the LLM provider (LLM_CALL), the event sink (EMIT_EVENT), node and
//! cluster memory (STORE/LOAD in the `node` and `cluster` scopes), and secrets.
//!
//! Calls that may wait on the world are asynchronous: executions are tasks of the actor
//! runtime, so an adapter never blocks one of its threads (an adapter whose client blocks
//! hands the call to `tokio::task::block_in_place`).

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::{CallError, CallErrorKind};

/// An outgoing HTTP request of CALL_API / CALL_SERVICE.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// Bound on the whole request.
    pub timeout: Duration,
    /// `execution/instruction/attempt`, sent as `Idempotency-Key` on side-effecting calls.
    pub idempotency_key: Option<String>,
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The body as JSON (a non-JSON body is returned as a JSON string).
    pub body: Value,
}

/// Outgoing HTTP. Non-2xx answers are returned as responses, not errors; transport failures
/// are errors (`Unavailable`, `Timeout`).
#[async_trait::async_trait]
pub trait HttpPort: Send + Sync {
    /// Whether `request` may leave at all (the node's egress policy, the URL's form),
    /// decided before anything is sent: a refusal here is certain to have had no effect, so
    /// the executor checks it before journaling the call's intent.
    fn admit(&self, request: &HttpRequest) -> Result<(), CallError>;
    /// Sends `request` (admitting it first).
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, CallError>;
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A chat-completion request, as bound by the compiler (frozen few-shot examples become
/// user/assistant message pairs; slots are already substituted).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// Model name.
    pub model: String,
    /// Sampling temperature.
    pub temperature: f32,
    /// Token budget of the answer.
    pub max_tokens: u32,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Ask the provider for a JSON object answer.
    pub json_output: bool,
    /// Bound on the whole request.
    pub timeout: Duration,
}

/// An LLM provider (OpenAI-compatible chat completions in the embedded adapter).
#[async_trait::async_trait]
pub trait LlmPort: Send + Sync {
    /// The assistant's answer text. `ModelUnavailable` when no provider or model is
    /// configured or the provider says the model does not exist; `RateLimited` on 429.
    async fn complete(&self, request: &LlmRequest) -> Result<String, CallError>;
}

/// Where EMIT_EVENT publishes.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes `payload` on `topic` with `key`. The sink drops a second publication with
    /// the same `idempotency_key`.
    async fn emit(
        &self,
        topic: &str,
        key: &str,
        payload: &Value,
        idempotency_key: &str,
    ) -> Result<(), CallError>;
}

/// A failure of a memory tier, in its own terms: which tier, what it was asked, for which
/// key, and why; `kind` classifies it for the fallback engine (`unavailable`, `timeout`,
/// `invalid-output` for a stored value that is not JSON, ...). Never holds a stored value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{tier} memory: cannot {operation} `{key}`: {reason}")]
pub struct MemoryError {
    /// `node` or `cluster`.
    pub tier: &'static str,
    /// `get`, `set`, `put`.
    pub operation: &'static str,
    /// The memory key.
    pub key: String,
    /// Its class for the fallback engine.
    pub kind: CallErrorKind,
    /// Why (for the operator).
    pub reason: String,
}

impl MemoryError {
    /// A failure of `operation` on `key` in `tier`.
    pub fn new(
        tier: &'static str,
        operation: &'static str,
        key: &str,
        kind: CallErrorKind,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            tier,
            operation,
            key: key.to_owned(),
            kind,
            reason: reason.into(),
        }
    }
}

/// The `node` memory scope (L2): shared by the executions of one node, entries expire.
#[async_trait::async_trait]
pub trait NodeMemory: Send + Sync {
    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError>;
    /// Stores `value` under `key` for `ttl`.
    async fn set(&self, key: &str, value: &Value, ttl: Duration) -> Result<(), MemoryError>;
}

/// The `cluster` memory scope (L3): persistent, shared by the nodes of a cluster.
#[async_trait::async_trait]
pub trait ClusterMemory: Send + Sync {
    /// The latest value under `key`.
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError>;
    /// Appends a new value for `key` (durable before returning).
    async fn put(&self, key: &str, value: &Value) -> Result<(), MemoryError>;
}

/// A secret value. Formatting it prints `***`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: hand it only to the party that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A failure to read a secret, in the secret source's terms: which secret and why (never
/// its value); `kind` is `denied`, `unavailable` or `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret `{name}`: {reason}")]
pub struct SecretError {
    /// The secret's name.
    pub name: String,
    /// Its class for the fallback engine and the plugin host.
    pub kind: CallErrorKind,
    /// Why (for the operator).
    pub reason: String,
}

impl SecretError {
    /// A failure to read `name`.
    pub fn new(name: &str, kind: CallErrorKind, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            reason: reason.into(),
        }
    }
}

/// Where named secrets come from (local file, Vault/OpenBao).
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret `name`: `Ok(None)` when the source does not hold it, `Denied` when the
    /// source refuses this node access to it, `Unavailable` or `Timeout` when the source
    /// cannot be reached. Error messages name the secret, never its value.
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError>;
}
