//! The `cluster` memory scope (L3) shared over Kafka: [`KafkaClusterMemory`] keeps the local
//! view in the embedded store ([`FjallClusterMemory`]: latest value and history per key),
//! publishes each `put` through the outbox on `memory_topic` (keyed by the memory key, so
//! one key's updates keep one order), and applies the topic — every node's updates, its own
//! included — to the local view in that order, so the nodes converge on the last update the
//! log holds.
//!
//! A node reads its own puts at once. While a put of this node is on its way through the
//! log, earlier updates of the same key from the log are not applied (they would undo it
//! for a moment); its own put, when it comes back, is applied only if another value landed
//! in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eyeflow_actors::ports::{CallErrorKind, ClusterMemory, MemoryError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use super::source::{KafkaSource, SourceEvent};
use super::{HEADER_NODE, Kafka, ORIGIN};
use crate::Result;
use crate::memory::FjallClusterMemory;
use crate::store::{Durability, EmbeddedStore};
use eyeflow_actors::sync::Locked;

/// One update on the memory topic.
#[derive(Debug, Serialize, Deserialize)]
struct Update {
    node: String,
    key: String,
    value: Value,
}

/// The local view and this node's puts still on their way through the log.
struct View {
    local: FjallClusterMemory,
    node_id: String,
    /// Per key: puts of this node published and not yet consumed back.
    pending: Mutex<HashMap<String, u64>>,
}

impl View {
    fn apply(&self, event: &SourceEvent) -> Result<()> {
        let update: Update = match serde_json::from_value(event.payload.clone()) {
            Ok(update) => update,
            Err(e) => {
                // Not an eyeflow update: retrying would not help.
                warn!(
                    "kafka cluster memory: ignoring {} ({}): {e}",
                    event.event_id, event.topic
                );
                return Ok(());
            }
        };
        let mut pending = self.pending.locked();
        let own = update.node == self.node_id;
        if own && let Some(count) = pending.get_mut(&update.key) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&update.key);
            }
        }
        if pending.contains_key(&update.key) {
            return Ok(());
        }
        let current = self
            .local
            .value(&update.key)
            .map_err(|e| crate::Error::Node {
                reason: e.to_string(),
            })?;
        if own && current.as_ref() == Some(&update.value) {
            return Ok(());
        }
        self.local
            .record(&update.key, &update.value)
            .map_err(|e| crate::Error::Node {
                reason: e.to_string(),
            })
    }
}

/// The `cluster` scope over the local store and the memory topic.
pub struct KafkaClusterMemory {
    view: Arc<View>,
    kafka: Arc<Kafka>,
    source: Option<KafkaSource>,
}

impl KafkaClusterMemory {
    /// The scope in `store` (puts durable as `durability` says), published through `kafka`,
    /// consuming the memory topic in group `<consumer_group>.memory.<node id>`.
    pub fn start(kafka: Arc<Kafka>, store: EmbeddedStore, durability: Durability) -> Result<Self> {
        let view = Arc::new(View {
            local: FjallClusterMemory::new(store, durability),
            node_id: kafka.node_id.clone(),
            pending: Mutex::default(),
        });
        let mut config = kafka.config.clone();
        config.consumer_group = format!("{}.memory.{}", config.consumer_group, kafka.node_id);
        config.source_topics = vec![config.memory_topic.clone()];
        let applier = Arc::clone(&view);
        let source = KafkaSource::start(&config, move |event| applier.apply(event))?;
        Ok(Self {
            view,
            kafka,
            source: Some(source),
        })
    }

    /// Stops consuming the memory topic (committing what was applied).
    pub fn stop(mut self) {
        if let Some(source) = self.source.take() {
            source.stop();
        }
    }
}

#[async_trait::async_trait]
impl ClusterMemory for KafkaClusterMemory {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        self.view.local.value(key)
    }

    async fn put(&self, key: &str, value: &Value) -> Result<(), MemoryError> {
        self.record(key, value)?;
        // Both writes share one store: one fsync makes them durable; then the publisher
        // sends the update.
        self.kafka
            .published()
            .await
            .map_err(|e| put_error(key, CallErrorKind::Unavailable, e.to_string()))
    }
}

/// A failed put of `key` in the Kafka-shared cluster scope.
fn put_error(key: &str, kind: CallErrorKind, reason: String) -> MemoryError {
    MemoryError::new("cluster", "put", key, kind, format!("{ORIGIN}: {reason}"))
}

impl KafkaClusterMemory {
    /// Writes `value` locally and in the outbox of the memory topic (not durable yet).
    fn record(&self, key: &str, value: &Value) -> Result<(), MemoryError> {
        let unavailable =
            |e: crate::Error| put_error(key, CallErrorKind::Unavailable, e.to_string());
        let update = Update {
            node: self.view.node_id.clone(),
            key: key.to_owned(),
            value: value.clone(),
        };
        let payload = serde_json::to_value(&update)
            .map_err(|e| put_error(key, CallErrorKind::InvalidInput, e.to_string()))?;
        let mut pending = self.view.pending.locked();
        self.view.local.record(key, value)?;
        let headers = vec![(HEADER_NODE.to_owned(), self.view.node_id.clone())];
        self.kafka
            .publish(
                self.kafka.config.memory_topic.clone(),
                key,
                &payload,
                headers,
                None,
            )
            .map_err(unavailable)?;
        *pending.entry(key.to_owned()).or_default() += 1;
        Ok(())
    }
}
