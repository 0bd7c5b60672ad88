//! A Kafka event source: [`KafkaSource`] consumes topics in a consumer group and hands each
//! message to a handler that journals it; the message's offset is stored for commit only
//! after the handler returned `Ok`, and stored offsets are committed every
//! `commit_interval_ms`, before a rebalance takes partitions away, and at [`KafkaSource::stop`].
//! A handler error retries the same message (nothing is skipped). So a crash redelivers at
//! most the events handled since the last commit: the handler dedupes them by event id.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde_json::Value;
use tracing::{error, warn};

use super::{HEADER_EVENT_ID, KafkaConfig};
use crate::{Error, Result};

/// How long one poll waits for a message.
const POLL: Duration = Duration::from_millis(100);
/// First retry delay after a handler error.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What [`KafkaSource::stop`] and dropping ask of the consumer thread.
const RUN: u8 = 0;
const STOP: u8 = 1;
const ABANDON: u8 = 2;

/// One consumed message, as handed to the handler.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceEvent {
    /// Topic it was consumed from.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// The `event-id` header when present, else `partition/offset` (unique in the topic).
    pub event_id: String,
    /// The message key (lossy UTF-8), if any.
    pub key: Option<String>,
    /// The payload as JSON: `null` when empty, a JSON string of the (lossy UTF-8) text when
    /// it is not JSON.
    pub payload: Value,
}

impl SourceEvent {
    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let event_id = message
            .headers()
            .and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == HEADER_EVENT_ID)
                    .and_then(|h| h.value)
            })
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .unwrap_or_else(|| format!("{partition}/{offset}"));
        let payload = match message.payload() {
            None | Some([]) => Value::Null,
            Some(bytes) => serde_json::from_slice(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
        };
        Self {
            topic: topic.to_owned(),
            partition,
            offset,
            event_id,
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            payload,
        }
    }
}

/// Commits the stored offsets before a rebalance takes partitions away.
struct SourceContext;

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            commit(consumer, CommitMode::Sync);
        }
    }
}

/// A running source: a consumer thread in the configured group.
pub struct KafkaSource {
    state: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaSource {
    /// Joins group `consumer_group`, subscribes to `source_topics`, and calls `handler` for
    /// each message on a thread of its own (see the module documentation). A group without
    /// committed offsets starts at the earliest message.
    pub fn start<F, E>(config: &KafkaConfig, handler: F) -> Result<Self>
    where
        F: FnMut(&SourceEvent) -> Result<(), E> + Send + 'static,
        E: Display,
    {
        config.validate()?;
        let consumer: BaseConsumer<SourceContext> = config
            .client_config()
            .set("group.id", &config.consumer_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .create_with_context(SourceContext)
            .map_err(Error::kafka("create the source consumer"))?;
        let topics: Vec<&str> = config.source_topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(Error::kafka(format!("subscribe to {topics:?}")))?;
        let state = Arc::new(AtomicU8::new(RUN));
        let worker = Worker {
            consumer,
            state: Arc::clone(&state),
            commit_interval: Duration::from_millis(config.commit_interval_ms),
            retry_max: config.retry_backoff_max(),
            uncommitted: false,
            last_commit: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("eyeflow-kafka-source".into())
            .spawn(move || worker.run(handler))
            .map_err(Error::io("spawn the kafka source thread"))?;
        Ok(Self {
            state,
            thread: Some(thread),
        })
    }

    /// Stops consuming: commits the offsets of the events handled, leaves the group (its
    /// partitions move to the other members at once) and returns when the thread ended.
    pub fn stop(mut self) {
        self.end(STOP);
    }

    fn end(&mut self, how: u8) {
        let _ = self
            .state
            .compare_exchange(RUN, how, Ordering::SeqCst, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            error!("kafka source: the consumer thread panicked");
        }
    }
}

impl Drop for KafkaSource {
    /// Abandons the source as a crash would: nothing more is committed (events handled since
    /// the last commit are delivered again to the group); the consumer leaves the group.
    fn drop(&mut self) {
        self.end(ABANDON);
    }
}

struct Worker {
    consumer: BaseConsumer<SourceContext>,
    state: Arc<AtomicU8>,
    commit_interval: Duration,
    retry_max: Duration,
    /// Offsets were stored since the last commit.
    uncommitted: bool,
    last_commit: Instant,
}

impl Worker {
    fn run<F, E>(mut self, mut handler: F)
    where
        F: FnMut(&SourceEvent) -> Result<(), E>,
        E: Display,
    {
        while self.running() {
            let event = match self.consumer.poll(POLL) {
                None => None,
                Some(Ok(message)) => Some(SourceEvent::from_message(&message)),
                Some(Err(e)) => {
                    warn!("kafka source: {e}");
                    None
                }
            };
            if let Some(event) = event {
                self.handle(&event, &mut handler);
            }
            self.commit_if_due();
        }
        if self.state.load(Ordering::SeqCst) == STOP {
            commit(&self.consumer, CommitMode::Sync);
        }
        // Dropping the consumer leaves the group (auto-commit is off: nothing more is
        // committed).
    }

    fn running(&self) -> bool {
        self.state.load(Ordering::SeqCst) == RUN
    }

    /// Calls the handler until it accepts `event` (or the source stops), then stores the
    /// offset for the next commit.
    fn handle<F, E>(&mut self, event: &SourceEvent, handler: &mut F)
    where
        F: FnMut(&SourceEvent) -> Result<(), E>,
        E: Display,
    {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match handler(event) {
                Ok(()) => break,
                Err(e) => {
                    warn!(
                        "kafka source: event {} ({}/{}/{}) not accepted, retrying in {backoff:?}: {e}",
                        event.event_id, event.topic, event.partition, event.offset
                    );
                    self.commit_if_due();
                    let until = Instant::now() + backoff;
                    while Instant::now() < until {
                        if !self.running() {
                            return;
                        }
                        std::thread::sleep(
                            POLL.min(until.saturating_duration_since(Instant::now())),
                        );
                    }
                    backoff = (backoff * 2).min(self.retry_max);
                }
            }
        }
        // librdkafka stores `offset + 1`: the next one to consume.
        match self
            .consumer
            .store_offset(&event.topic, event.partition, event.offset)
        {
            Ok(()) => self.uncommitted = true,
            // The partition moved to another member during a rebalance: it redelivers.
            Err(e) => warn!(
                "kafka source: cannot store the offset of {}/{}/{}: {e}",
                event.topic, event.partition, event.offset
            ),
        }
    }

    fn commit_if_due(&mut self) {
        if self.uncommitted && self.last_commit.elapsed() >= self.commit_interval {
            commit(&self.consumer, CommitMode::Async);
            self.uncommitted = false;
            self.last_commit = Instant::now();
        }
    }
}

/// Commits the stored offsets (nothing stored is not an error).
fn commit(consumer: &BaseConsumer<SourceContext>, mode: CommitMode) {
    match consumer.commit_consumer_state(mode) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => warn!("kafka source: commit failed: {e}"),
    }
}
