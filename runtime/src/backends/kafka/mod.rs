//! Kafka: EMIT_EVENT, the audit topic, the cluster memory scope and an event source, over
//! librdkafka (the `rdkafka` crate with its bundled library).
//!
//! [`Kafka::connect`] opens the outbox in the embedded store and starts one publisher thread
//! that owns one idempotent producer (`acks=all`). Everything published goes through the
//! store first: EMIT_EVENT records and cluster-memory updates are appended to the outbox
//! ([`Kafka`] implements [`EventSink`]); the audit chain is tailed from a stored cursor.
//! Records leave the store only when the broker confirmed them, so a broker outage (even one
//! at start: the node then runs in *buffered mode*) or a restart of the node loses nothing,
//! and order is kept per lane. [`Kafka::flush`] drains what the broker accepts at shutdown.
//! [`KafkaSource`] consumes topics in a consumer group and commits an offset only after its
//! handler journaled the event; [`KafkaClusterMemory`] shares the `cluster` scope.
//!
//! ## Messages
//!
//! | what | topic | key | headers | payload |
//! |---|---|---|---|---|
//! | EMIT_EVENT | `events_topic_prefix` + topic | the event key | `event-id` = idempotency key | JSON |
//! | audit entry | `audit_topic` | node id | `eyeflow-kind: audit-entry`, `audit-index`, `audit-hash` (hex) | one entry record of the audit file format (`eyeflow_actors::chain::records`: index, previous hash, hash, canonical entry) |
//! | checkpoint | `audit_topic` | node id | `eyeflow-kind: audit-checkpoint`, `audit-index`, `audit-hash` | one checkpoint record of that format |
//! | cluster memory | `memory_topic` | memory key | `eyeflow-node` | JSON `{node, key, value}` |
//!
//! A consumer checks the chain with the same verifier as an audit file (`audit-hash =
//! SHA-256(previous hash ‖ canonical entry)`), and dedupes by `audit-index` or `event-id`:
//! delivery is at least once (a record confirmed after a failed one is sent again when the
//! publisher resends from the failed one).

mod memory;
mod outbox;
mod publisher;
pub(crate) use publisher::audit_entries_confirmed;
mod source;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use eyeflow_actors::ports::{CallError, CallErrorKind, EventSink};
use rdkafka::ClientConfig;
use serde::Deserialize;
use serde_json::Value;
use tracing::{info, warn};

pub use memory::KafkaClusterMemory;
pub use source::{KafkaSource, SourceEvent};

use crate::audit::FjallAudit;
use crate::store::{Durability, EmbeddedStore};
use crate::{Error, Result};
use outbox::{Outbox, OutboxRecord};
use publisher::{Publisher, Shared};

/// Header carrying an event's id (EMIT_EVENT: its idempotency key); [`KafkaSource`] takes the
/// event id from it.
pub const HEADER_EVENT_ID: &str = "event-id";
/// Header naming what an audit-topic message is: `audit-entry` or `audit-checkpoint`.
pub const HEADER_KIND: &str = "eyeflow-kind";
/// Header carrying the chain index of an audit entry (or of the entry a checkpoint covers).
pub const HEADER_INDEX: &str = "audit-index";
/// Header carrying that entry's hash, lowercase hex.
pub const HEADER_HASH: &str = "audit-hash";
/// Header naming the node that published a cluster-memory update.
pub const HEADER_NODE: &str = "eyeflow-node";

/// Origin named in [`CallError`]s.
const ORIGIN: &str = "kafka";

/// The Kafka backend's configuration (`[kafka]` in the node configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub bootstrap: String,
    /// Client id sent to the brokers.
    #[serde(default = "defaults::client_id")]
    pub client_id: String,
    /// Prefix added to the topic of every EMIT_EVENT (empty: topics are used as given).
    #[serde(default)]
    pub events_topic_prefix: String,
    /// Topic of the audit chain's entries and signed checkpoints.
    #[serde(default = "defaults::audit_topic")]
    pub audit_topic: String,
    /// Topic of the cluster memory scope's updates.
    #[serde(default = "defaults::memory_topic")]
    pub memory_topic: String,
    /// Consumer group of the event source; the cluster memory consumer uses
    /// `<consumer_group>.memory.<node id>`.
    #[serde(default = "defaults::consumer_group")]
    pub consumer_group: String,
    /// Topics consumed as event sources.
    #[serde(default)]
    pub source_topics: Vec<String>,
    /// How long the start waits for the broker before going on in buffered mode, in ms.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// librdkafka's `message.timeout.ms`: how long the producer retries one message before
    /// reporting it failed; the publisher then resends it from the outbox with a new
    /// producer. 0 = never give up (a broker that lost the producer's state, e.g. after
    /// losing its log, then blocks publication until the node restarts).
    #[serde(default = "defaults::message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// Longest wait between two attempts while the broker is unreachable, in ms.
    #[serde(default = "defaults::retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// How often the source commits the offsets of the events handled, in ms.
    #[serde(default = "defaults::commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Consumer group session timeout, in ms: how long a dead consumer keeps its partitions.
    #[serde(default = "defaults::session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Largest EMIT_EVENT payload accepted, in bytes of JSON (the broker's limit is usually
    /// 1 MiB).
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// Whether the cluster memory scope (L3) goes over `memory_topic` (default); `false`
    /// keeps it in the node's embedded store.
    #[serde(default = "defaults::cluster_memory")]
    pub cluster_memory: bool,
}

mod defaults {
    pub(super) fn client_id() -> String {
        "eyeflow".into()
    }
    pub(super) fn audit_topic() -> String {
        "eyeflow.audit".into()
    }
    pub(super) fn memory_topic() -> String {
        "eyeflow.memory".into()
    }
    pub(super) fn consumer_group() -> String {
        "eyeflow".into()
    }
    pub(super) fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub(super) fn message_timeout_ms() -> u64 {
        60_000
    }
    pub(super) fn retry_backoff_max_ms() -> u64 {
        5_000
    }
    pub(super) fn commit_interval_ms() -> u64 {
        1_000
    }
    pub(super) fn session_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn max_message_bytes() -> usize {
        1_000_000
    }
    pub(super) fn cluster_memory() -> bool {
        true
    }
}

impl KafkaConfig {
    /// The defaults, with brokers at `bootstrap`.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            client_id: defaults::client_id(),
            events_topic_prefix: String::new(),
            audit_topic: defaults::audit_topic(),
            memory_topic: defaults::memory_topic(),
            consumer_group: defaults::consumer_group(),
            source_topics: Vec::new(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            message_timeout_ms: defaults::message_timeout_ms(),
            retry_backoff_max_ms: defaults::retry_backoff_max_ms(),
            commit_interval_ms: defaults::commit_interval_ms(),
            session_timeout_ms: defaults::session_timeout_ms(),
            max_message_bytes: defaults::max_message_bytes(),
            cluster_memory: defaults::cluster_memory(),
        }
    }

    /// Checks the topic names and the bootstrap list.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| Error::BadConfig {
            what: format!("kafka.{field}"),
            reason,
        };
        if self.bootstrap.trim().is_empty() {
            return Err(bad("bootstrap", "no broker given".into()));
        }
        for (field, topic) in [
            ("audit_topic", &self.audit_topic),
            ("memory_topic", &self.memory_topic),
        ]
        .into_iter()
        .chain(self.source_topics.iter().map(|t| ("source_topics", t)))
        {
            check_topic(topic).map_err(|reason| bad(field, reason))?;
        }
        if !self.events_topic_prefix.is_empty() {
            check_topic(&self.events_topic_prefix)
                .map_err(|reason| bad("events_topic_prefix", reason))?;
        }
        Ok(())
    }

    /// Settings shared by producers and consumers.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", &self.client_id)
            .set(
                "reconnect.backoff.max.ms",
                self.retry_backoff_max_ms.max(1).to_string(),
            );
        config
    }

    fn retry_backoff_max(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_max_ms.max(1))
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`.
fn check_topic(topic: &str) -> std::result::Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!(
            "a topic name has 1 to 249 characters, not {}",
            topic.len()
        ));
    }
    match topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "topic `{topic}`: {c:?} is not allowed (letters, digits, `.`, `_`, `-`)"
        )),
        None => Ok(()),
    }
}

/// The connected backend: the outbox, its publisher thread, and the sinks over them.
pub struct Kafka {
    config: KafkaConfig,
    node_id: String,
    outbox: Arc<Outbox>,
    audit: Option<Arc<FjallAudit>>,
    shared: Arc<Shared>,
    publisher: Option<JoinHandle<()>>,
}

impl Kafka {
    /// Opens the outbox in `store` (appends durable as `durability` says) and starts
    /// publishing it, and the `audit` chain when given, as node `node_id`. A broker that
    /// does not answer within `connect_timeout_ms` is not an error: the node starts in
    /// buffered mode (logged) and publishes once the broker answers.
    pub fn connect(
        config: &KafkaConfig,
        store: EmbeddedStore,
        durability: Durability,
        audit: Option<Arc<FjallAudit>>,
        node_id: &str,
    ) -> Result<Self> {
        config.validate()?;
        let outbox = Arc::new(Outbox::open(store.clone(), durability)?);
        let shared = Arc::new(Shared::default());
        let producer = publisher::producer(config, &shared)?;
        probe(config, &producer, &shared, outbox.len());
        let publisher = Publisher::new(
            config.clone(),
            store,
            Arc::clone(&outbox),
            audit.clone(),
            node_id.to_owned(),
            Arc::clone(&shared),
            producer,
        )?;
        let publisher = std::thread::Builder::new()
            .name("eyeflow-kafka-publisher".into())
            .spawn(move || publisher.run())
            .map_err(Error::io("spawn the kafka publisher thread"))?;
        Ok(Self {
            config: config.clone(),
            node_id: node_id.to_owned(),
            outbox,
            audit,
            shared,
            publisher: Some(publisher),
        })
    }

    /// Whether the broker answered the last request (for readiness and metrics).
    pub fn connected(&self) -> bool {
        self.shared.connected()
    }

    /// Messages stored and not yet confirmed by the broker: outbox records plus audit
    /// entries behind the cursor.
    pub fn backlog(&self) -> u64 {
        let entries = self.audit.as_ref().map_or(0, |audit| {
            audit.head().0.saturating_sub(self.shared.entries_cursor())
        });
        self.outbox.len() + entries
    }

    /// Publishes what is stored, for shutdown: waits until the broker confirmed everything
    /// appended before this call (outbox, audit entries and checkpoints) or until `timeout`,
    /// and returns the backlog left. Nothing is dropped: what is left stays stored and is
    /// published after the next start.
    pub fn flush(&self, timeout: Duration) -> u64 {
        if self.shared.wait_idle(timeout) {
            return 0;
        }
        let left = self.backlog();
        warn!(
            "kafka: {left} messages not confirmed by {} within {timeout:?}; they stay in the \
             outbox for the next start",
            self.config.bootstrap
        );
        left
    }

    /// Appends one record to the outbox (not durable yet: [`Self::published`] makes it so
    /// and wakes the publisher); false when its idempotency key was seen before.
    fn publish(
        &self,
        topic: String,
        key: &str,
        payload: &Value,
        headers: Vec<(String, String)>,
        idempotency_key: Option<&str>,
    ) -> Result<bool> {
        let record = OutboxRecord {
            topic,
            key: (!key.is_empty()).then(|| key.to_owned()),
            headers,
            payload: payload.clone(),
        };
        self.outbox.append(&record, idempotency_key)
    }

    /// Waits (as a task) until what was appended is durable, then wakes the publisher: a
    /// record reaches the broker only once a crash can no longer lose it here.
    async fn published(&self) -> Result<()> {
        self.outbox.durable().await?;
        self.shared.wake();
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventSink for Kafka {
    async fn emit(
        &self,
        topic: &str,
        key: &str,
        payload: &Value,
        idempotency_key: &str,
    ) -> Result<(), CallError> {
        let topic = format!("{}{topic}", self.config.events_topic_prefix);
        let invalid = |reason: String| CallError::new(CallErrorKind::InvalidInput, ORIGIN, reason);
        check_topic(&topic).map_err(invalid)?;
        let size = serde_json::to_vec(payload).map_or(0, |bytes| bytes.len());
        if size > self.config.max_message_bytes {
            return Err(invalid(format!(
                "event payload of {size} bytes exceeds the {} bytes allowed (kafka.max_message_bytes)",
                self.config.max_message_bytes
            )));
        }
        let unavailable =
            |e: crate::Error| CallError::new(CallErrorKind::Unavailable, ORIGIN, e.to_string());
        let headers = vec![(HEADER_EVENT_ID.to_owned(), idempotency_key.to_owned())];
        self.publish(topic, key, payload, headers, Some(idempotency_key))
            .map_err(unavailable)?;
        self.published().await.map_err(unavailable)
    }
}

/// Builds the `[kafka]` backend: EMIT_EVENT and the audit chain are published to Kafka,
/// and the `cluster` scope is shared through it when `cluster_memory` is on.
pub fn build(config: &KafkaConfig, cx: &mut super::Context<'_>) -> Result<()> {
    let kafka = Arc::new(Kafka::connect(
        config,
        cx.store.clone(),
        cx.durability,
        Some(cx.audit.clone()),
        cx.node_id,
    )?);
    cx.backends.push(kafka.clone());
    if config.cluster_memory {
        cx.cluster_memory = Some(Arc::new(KafkaClusterMemory::start(
            kafka.clone(),
            cx.store.clone(),
            cx.durability,
        )?));
    }
    cx.events = Some(kafka);
    Ok(())
}

impl eyeflow_actors::ports::Backend for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn healthy(&self) -> bool {
        self.connected()
    }

    fn required(&self) -> bool {
        false
    }

    fn backlog(&self) -> Option<u64> {
        Some(Kafka::backlog(self))
    }

    fn flush(&self, deadline: Duration) {
        let left = Kafka::flush(self, deadline);
        if left > 0 {
            tracing::warn!(
                "kafka: {left} record(s) not yet published stay in the outbox for the next start"
            );
        }
    }
}

impl Drop for Kafka {
    /// Stops the publisher without waiting for the broker (call [`Kafka::flush`] first).
    fn drop(&mut self) {
        self.shared.stop();
        if let Some(publisher) = self.publisher.take()
            && publisher.join().is_err()
        {
            warn!("kafka: the publisher thread panicked");
        }
    }
}

/// Asks the broker for metadata once at start and says how the backend starts.
fn probe(config: &KafkaConfig, producer: &publisher::KafkaProducer, shared: &Shared, backlog: u64) {
    use rdkafka::producer::Producer;
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    match producer.client().fetch_metadata(None, timeout) {
        Ok(metadata) => {
            shared.set_connected(true);
            info!(
                "kafka: connected to {} ({} messages waiting in the outbox)",
                config.bootstrap, backlog
            );
            for topic in [&config.audit_topic, &config.memory_topic] {
                if !metadata.topics().iter().any(|t| t.name() == topic) {
                    warn!(
                        "kafka: topic {topic} does not exist on {}",
                        config.bootstrap
                    );
                }
            }
        }
        Err(e) => warn!(
            "kafka: broker {} unreachable ({e}); starting in buffered mode: records wait in \
             the outbox until it answers",
            config.bootstrap
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_has_documented_defaults_and_refuses_unknown_fields() {
        let parsed: KafkaConfig =
            serde_json::from_value(serde_json::json!({ "bootstrap": "10.0.0.5:9092" }))
                .expect("a config with only the brokers parses");
        assert_eq!(parsed, KafkaConfig::new("10.0.0.5:9092"));
        assert_eq!(parsed.audit_topic, "eyeflow.audit");
        assert_eq!(parsed.memory_topic, "eyeflow.memory");
        assert!(
            serde_json::from_value::<KafkaConfig>(
                serde_json::json!({ "bootstrap": "b:9092", "acks": "1" })
            )
            .is_err()
        );
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic("eyeflow.audit").is_ok());
        assert!(check_topic("plant_3-events").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a/b").is_err());
        assert!(check_topic(&"x".repeat(250)).is_err());
        let mut config = KafkaConfig::new("b:9092");
        config.source_topics = vec!["bad topic".into()];
        let error = config
            .validate()
            .expect_err("a bad source topic is refused");
        assert!(error.to_string().contains("kafka.source_topics"), "{error}");
    }
}
