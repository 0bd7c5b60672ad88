//! The plugin port: reading resources through connectors and invoking actions on
//! capabilities, resolved by capability id and semver requirement.

use std::fmt;
use std::time::Duration;

use semver::VersionReq;
use serde_json::Value;

/// A capability (or connector) as a program names it: an id and a semver requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityRef {
    /// Capability id, e.g. `valve-sim`.
    pub id: String,
    /// Versions the program accepts, e.g. `^1.0`.
    pub version: VersionReq,
}

impl CapabilityRef {
    /// A reference to `id` at any version matching `version`.
    pub fn new(id: impl Into<String>, version: VersionReq) -> Self {
        Self {
            id: id.into(),
            version,
        }
    }
}

impl fmt::Display for CapabilityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

/// Why a call through a port failed; the fallback engine maps it to an error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallErrorKind {
    /// The plugin refused the input (also: input or output failed the manifest's schema).
    InvalidInput,
    /// A device or remote service is unavailable; a retry may succeed.
    Unavailable,
    /// The call exceeded its deadline (the plugin was interrupted or said so).
    Timeout,
    /// A grant, a credential or the host refused the operation.
    Denied,
    /// The plugin reported an internal error.
    Internal,
    /// The plugin trapped (panic, unreachable, out-of-bounds access).
    Trap,
    /// The plugin hit its memory or instance limit.
    ResourceExhausted,
    /// No installed, unrevoked plugin provides a compatible version (or no such key).
    NotFound,
    /// The service answered "too many requests".
    RateLimited,
    /// The LLM model is unavailable.
    ModelUnavailable,
    /// A response did not match its expected shape (JSON schema, JSON at all).
    InvalidOutput,
}

impl CallErrorKind {
    /// Stable lowercase name, used in logs, metrics and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid-input",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Denied => "denied",
            Self::Internal => "internal",
            Self::Trap => "trap",
            Self::ResourceExhausted => "resource-exhausted",
            Self::NotFound => "not-found",
            Self::RateLimited => "rate-limited",
            Self::ModelUnavailable => "model-unavailable",
            Self::InvalidOutput => "invalid-output",
        }
    }
}

/// A failed call through a port: what kind of failure, who failed, and a message for the
/// operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}: {message}", kind.as_str())]
pub struct CallError {
    /// Classification for the fallback engine.
    pub kind: CallErrorKind,
    /// Who failed: `id@version` of a plugin, the requested capability when none resolved,
    /// a URL's host, `journal`, `llm`...
    pub origin: String,
    /// What happened, for the operator (never contains secret values).
    pub message: String,
}

impl CallError {
    /// A new error.
    pub fn new(kind: CallErrorKind, origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            origin: origin.into(),
            message: message.into(),
        }
    }
}

/// What the executor does with an action whose intent was journaled but whose result was
/// not (the node stopped during it): the capability declares it per action in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnResume {
    /// Invoke it again under the same idempotency key: the capability applies a key once
    /// and answers a repeated key with the first result.
    Reissue,
    /// Invoke this read-only action of the same capability with the same input and take
    /// its answer as the result (the device is read back, not driven again).
    ReadBack(String),
    /// Nothing declared: the step is recorded as ambiguous and the execution waits for an
    /// operator's decision; it is never re-run silently.
    #[default]
    Ambiguous,
}

/// Connectors and capabilities as the SVM sees them. Each call runs in a fresh sandboxed
/// instance within `deadline`, as a future of the caller's task.
#[async_trait::async_trait]
pub trait PluginPort: Send + Sync {
    /// Read resource `key` with `params` through the connector resolved from `connector`,
    /// for the execution's call `call` (`execution/instruction/attempt`, and
    /// `/postcondition/N` after it for a postcondition's Nth read). A read has no effect
    /// and a connector's takes no idempotency key; a capability read through its `read`
    /// action gets one derived from `call` (the same after a restart, never the key of the
    /// call's own action).
    async fn read(
        &self,
        connector: &CapabilityRef,
        key: &str,
        params: &Value,
        call: &str,
        deadline: Duration,
    ) -> Result<Value, CallError>;

    /// Perform `action` with `input` on the capability resolved from `capability`;
    /// `idempotency_key` is `execution/instruction/attempt`.
    async fn invoke(
        &self,
        capability: &CapabilityRef,
        action: &str,
        input: &Value,
        idempotency_key: &str,
        deadline: Duration,
    ) -> Result<Value, CallError>;

    /// What `action` of the capability resolved from `capability` declares for a resume
    /// that finds its intent journaled without a result ([`OnResume::Ambiguous`] when the
    /// capability does not resolve).
    fn on_resume(&self, capability: &CapabilityRef, action: &str) -> OnResume;
}
