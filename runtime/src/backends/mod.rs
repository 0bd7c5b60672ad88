//! The production backends behind the same ports as the embedded defaults, each switched on
//! by its section in the node's configuration.
//!
//! A backend is one module plus one line in [`Sections`]: the line names its `node.toml`
//! section, the section's type, and the function that builds the backend from a
//! [`Context`] — taking over a port from its embedded default and registering its health
//! (the [`Backend`] port) for readiness, metrics and the shutdown flush.

pub mod kafka;
pub mod redis;
pub mod vault;

use std::sync::Arc;

use eyeflow_actors::ports::{Backend, ClusterMemory, EventSink, NodeMemory, SecretSource};

use crate::audit::FjallAudit;
use crate::registry::sections;
use crate::store::{Durability, EmbeddedStore};

sections! {
    /// The backends' sections of `node.toml`, built in this order (secrets first: a later
    /// backend may need one).
    pub struct Sections for Context<'_> {
        /// `[vault]`: Vault / OpenBao KV v2 for secrets instead of the local secrets file.
        vault: vault::VaultConfig => vault::build,
        /// `[redis]`: Redis for the node memory scope instead of the in-process cache.
        redis: redis::RedisConfig => redis::build,
        /// `[kafka]`: Kafka for EMIT_EVENT, cluster memory, the audit topic and source topics.
        kafka: kafka::KafkaConfig => kafka::build,
    }
}

/// What a backend is built from, and the ports it may take over: a port left `None` gets
/// its embedded default once every backend is built.
pub struct Context<'a> {
    /// The node's id (written into what it publishes).
    pub node_id: &'a str,
    /// The node's embedded store (outboxes, cursors).
    pub store: &'a EmbeddedStore,
    /// How durable the node's writes are.
    pub durability: Durability,
    /// The audit chain (published by backends that carry it).
    pub audit: &'a Arc<FjallAudit>,
    /// Named secrets (default: the local secrets file).
    pub secrets: Option<Arc<dyn SecretSource>>,
    /// The `node` memory scope (default: in-process).
    pub node_memory: Option<Arc<dyn NodeMemory>>,
    /// The `cluster` memory scope (default: the embedded store).
    pub cluster_memory: Option<Arc<dyn ClusterMemory>>,
    /// Where EMIT_EVENT publishes (default: the embedded event log).
    pub events: Option<Arc<dyn EventSink>>,
    /// The backends built so far, for readiness, metrics and the shutdown flush.
    pub backends: Vec<Arc<dyn Backend>>,
}
