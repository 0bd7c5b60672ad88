//! Ports: the traits through which the SVM reaches the outside world. Each has an embedded
//! adapter in `eyeflow-runtime` and, where relevant, a production backend.

mod backend;
mod effects;
mod journal;
mod plugin;

pub use backend::Backend;
pub use effects::{
    ChatMessage, ClusterMemory, EventSink, HttpPort, HttpRequest, HttpResponse, LlmPort,
    LlmRequest, MemoryError, NodeMemory, Secret, SecretError, SecretSource,
};
pub use journal::{
    Accepted, AuditEntry, EventRecord, ExecutionOutcome, Fallback, Journal, JournalError,
    PendingExecution, StepOutcome, StepRecord, ambiguity_id,
};
pub use plugin::{CallError, CallErrorKind, CapabilityRef, OnResume, PluginPort};
