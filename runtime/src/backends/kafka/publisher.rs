//! The publisher thread: one idempotent producer (`acks=all`) fed from three lanes — the
//! outbox, the audit chain's entries and its signed checkpoints — each sent strictly in
//! order and forgotten only once the broker confirmed it.
//!
//! Each audit message's value is one record of the audit file format
//! ([`eyeflow_actors::chain::Record`]: an entry with its index and hashes, or a signed
//! checkpoint), so a consumer verifies what it read as `eyeflow audit verify --file` does.
//!
//! A lane's *cursor* is its first unconfirmed id (outbox sequence number, chain index,
//! checkpoint index). Audit cursors are kept in the `kafka-cursors` keyspace, so the chain
//! is published by tailing it rather than by copying its entries into the outbox. When a
//! delivery fails (a message timed out, a fatal error), the publisher stops sending, lets
//! what is in flight settle, drops the producer, and resends every lane from its cursor
//! with a new producer after a backoff: a new producer id also gets past a broker that lost
//! the old one's state (`UNKNOWN_PRODUCER_ID`, which librdkafka otherwise retries until the
//! message timeout). Records confirmed after a failed one in the same lane can thus be sent
//! twice: consumers dedupe by the `event-id` / `audit-index` headers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tracing::{debug, error, info, warn};

use super::outbox::Outbox;
use super::{HEADER_HASH, HEADER_INDEX, HEADER_KIND, KafkaConfig};
use crate::audit::{Checkpoint, EntryRecord, FjallAudit, Release};
use crate::store::{EmbeddedStore, Space, Write};
use crate::{Error, Result};
use eyeflow_actors::chain::{CheckpointRecord, Record};
use eyeflow_actors::sync::{Locked, Waits};

/// Most messages handed to the producer and not yet confirmed.
const MAX_IN_FLIGHT: usize = 10_000;
/// Most records read from the store at once.
const READ_BATCH: usize = 512;
/// How long a poll waits for delivery reports while messages are in flight.
const POLL: Duration = Duration::from_millis(20);
/// How often an idle publisher looks for new audit entries.
const TAIL_INTERVAL: Duration = Duration::from_millis(20);
/// First retry delay after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How often an idle publisher asks the broker for metadata, when it answered last time
/// and when it did not.
const PROBE_CONNECTED: Duration = Duration::from_secs(10);
const PROBE_DISCONNECTED: Duration = Duration::from_secs(2);
/// How long such a probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Cursor keys in `kafka-cursors`.
const ENTRIES_CURSOR: &[u8] = b"audit-entries";
const CHECKPOINTS_CURSOR: &[u8] = b"audit-checkpoints";

/// The producer the publisher drives.
pub(crate) type KafkaProducer = BaseProducer<PublishContext>;

/// State shared by the [`Kafka`](super::Kafka) handle and its publisher thread.
#[derive(Default)]
pub(crate) struct Shared {
    signal: Mutex<Signal>,
    /// Wakes the publisher (new record, flush request, stop).
    wake: Condvar,
    /// Signalled when the publisher reports itself idle.
    progress: Condvar,
    /// Whether the broker answered the last request.
    connected: AtomicBool,
    /// First audit entry not yet confirmed by the broker.
    entries_cursor: AtomicU64,
}

#[derive(Default)]
struct Signal {
    woken: bool,
    stop: bool,
    /// Flush requests made, and the last one the publisher saw fully served.
    flush_requested: u64,
    idle_through: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Signal> {
        self.signal.locked()
    }

    /// Wakes the publisher: something new is waiting.
    pub(crate) fn wake(&self) {
        self.lock().woken = true;
        self.wake.notify_all();
    }

    /// Asks the publisher to end.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
        self.progress.notify_all();
    }

    fn stopping(&self) -> bool {
        self.lock().stop
    }

    /// Waits until the publisher was idle — nothing in flight, nothing left to send — after
    /// this call began, or until `timeout`; returns whether it was.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut signal = self.lock();
        signal.flush_requested += 1;
        let request = signal.flush_requested;
        signal.woken = true;
        self.wake.notify_all();
        loop {
            if signal.idle_through >= request {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || signal.stop {
                return false;
            }
            signal = self.progress.waiting_for(signal, left);
        }
    }

    fn flush_requested(&self) -> u64 {
        self.lock().flush_requested
    }

    fn report_idle(&self, request: u64) {
        let mut signal = self.lock();
        if request > signal.idle_through {
            signal.idle_through = request;
            self.progress.notify_all();
        }
    }

    /// Sleeps up to `timeout`, or until woken or stopped.
    fn sleep(&self, timeout: Duration) {
        let mut signal = self.lock();
        if !signal.woken && !signal.stop {
            signal = self.wake.waiting_for(signal, timeout);
        }
        signal.woken = false;
    }

    /// Sleeps `timeout` unless stopped (a new record does not cut a backoff short).
    fn pause(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut signal = self.lock();
        while !signal.stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            signal = self.wake.waiting_for(signal, left);
        }
    }

    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub(crate) fn entries_cursor(&self) -> u64 {
        self.entries_cursor.load(Ordering::Relaxed)
    }
}

/// Where a message came from: returned with its delivery report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Outbox(u64),
    Entry(u64),
    Checkpoint(u64),
}

type Report = (Origin, Result<(), KafkaError>);

/// Collects delivery reports (served on the publisher thread by `poll`) and tracks the
/// broker's reachability from librdkafka's global errors.
pub(crate) struct PublishContext {
    shared: Arc<Shared>,
    reports: Mutex<Vec<Report>>,
}

impl PublishContext {
    fn take_reports(&self) -> Vec<Report> {
        std::mem::take(&mut *self.reports.locked())
    }
}

impl ClientContext for PublishContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let unreachable = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        );
        // librdkafka repeats these at every reconnection attempt: say it once per outage.
        if !unreachable || self.shared.connected.swap(false, Ordering::Relaxed) {
            warn!("kafka producer: {error}: {reason}");
        } else {
            debug!("kafka producer: {error}: {reason}");
        }
    }
}

impl ProducerContext for PublishContext {
    type DeliveryOpaque = Box<Origin>;

    fn delivery(&self, result: &DeliveryResult<'_>, origin: Box<Origin>) {
        let result = result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone());
        self.reports.locked().push((*origin, result));
    }
}

/// Creates the idempotent producer (it connects lazily).
pub(crate) fn producer(config: &KafkaConfig, shared: &Arc<Shared>) -> Result<KafkaProducer> {
    let context = PublishContext {
        shared: Arc::clone(shared),
        reports: Mutex::default(),
    };
    config
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", config.message_timeout_ms.to_string())
        .set(
            "queue.buffering.max.messages",
            (2 * MAX_IN_FLIGHT).to_string(),
        )
        .set("linger.ms", "5")
        .create_with_context(context)
        .map_err(Error::kafka("create the producer"))
}

/// One ordered stream of ids (see the module documentation).
#[derive(Debug, Default)]
struct Lane {
    /// Next id to read.
    next: u64,
    in_flight: BTreeSet<u64>,
    lowest_failed: Option<u64>,
    /// The cursor as last persisted.
    saved: u64,
}

impl Lane {
    fn starting_at(cursor: u64) -> Self {
        Self {
            next: cursor,
            saved: cursor,
            ..Self::default()
        }
    }

    fn cursor(&self) -> u64 {
        let mut cursor = self.next;
        if let Some(first) = self.in_flight.first() {
            cursor = cursor.min(*first);
        }
        self.lowest_failed
            .map_or(cursor, |failed| cursor.min(failed))
    }

    fn sent(&mut self, id: u64) {
        self.in_flight.insert(id);
        self.next = id + 1;
    }

    fn settled(&mut self, id: u64, ok: bool) {
        self.in_flight.remove(&id);
        if !ok {
            self.lowest_failed = Some(self.lowest_failed.map_or(id, |f| f.min(id)));
        }
    }

    fn rewind(&mut self) {
        self.next = self.cursor();
        self.in_flight.clear();
        self.lowest_failed = None;
    }
}

/// Outcome of handing one message to the producer.
enum Sent {
    Yes,
    /// The producer's queue is full: poll, then go on.
    Full,
    /// Refused: recover, then resend.
    Failed,
}

/// The publisher thread's state.
pub(crate) struct Publisher {
    config: KafkaConfig,
    store: EmbeddedStore,
    outbox: Arc<Outbox>,
    audit: Option<Arc<FjallAudit>>,
    node_id: String,
    shared: Arc<Shared>,
    producer: Option<KafkaProducer>,
    records: Lane,
    entries: Lane,
    checkpoints: Lane,
    /// The newest checkpoint the broker confirmed, until it is recorded as released (once
    /// every entry and checkpoint up to it is confirmed too).
    confirmed: Option<u64>,
    /// A delivery failed: send nothing until what is in flight settled, then rewind.
    recovering: bool,
    backoff: Duration,
    last_probe: Instant,
}

impl Publisher {
    /// A publisher of `outbox` and `audit` through `producer`, resuming from the cursors
    /// stored in `store`.
    pub(crate) fn new(
        config: KafkaConfig,
        store: EmbeddedStore,
        outbox: Arc<Outbox>,
        audit: Option<Arc<FjallAudit>>,
        node_id: String,
        shared: Arc<Shared>,
        producer: KafkaProducer,
    ) -> Result<Self> {
        let entries = Lane::starting_at(read_cursor(&store, ENTRIES_CURSOR)?);
        let checkpoints = Lane::starting_at(read_cursor(&store, CHECKPOINTS_CURSOR)?);
        shared
            .entries_cursor
            .store(entries.saved, Ordering::Relaxed);
        Ok(Self {
            config,
            store,
            outbox,
            audit,
            node_id,
            shared,
            producer: Some(producer),
            records: Lane::default(),
            entries,
            checkpoints,
            confirmed: None,
            recovering: false,
            backoff: FIRST_BACKOFF,
            last_probe: Instant::now(),
        })
    }

    /// Publishes until asked to stop; then drops the producer (what it had not confirmed
    /// stays in the outbox, or behind the audit cursors, for the next start).
    pub(crate) fn run(mut self) {
        while !self.shared.stopping() {
            let request = self.shared.flush_requested();
            if self.producer.is_none() {
                match producer(&self.config, &self.shared) {
                    Ok(producer) => self.producer = Some(producer),
                    Err(e) => {
                        error!("{e}");
                        self.back_off();
                        continue;
                    }
                }
            }
            let sent = if self.recovering {
                0
            } else {
                match self.fill() {
                    Ok(sent) => sent,
                    Err(e) => {
                        error!("kafka publisher: {e}");
                        self.back_off();
                        continue;
                    }
                }
            };
            let wait = if sent == 0 && self.in_flight() > 0 {
                POLL
            } else {
                Duration::ZERO
            };
            if let Some(producer) = &self.producer {
                producer.poll(wait);
            }
            self.settle();
            if self.recovering && self.in_flight() == 0 {
                self.restart_producer();
            } else if sent == 0 && self.in_flight() == 0 && self.producer.is_some() {
                self.shared.report_idle(request);
                self.probe();
                self.shared.sleep(TAIL_INTERVAL);
            }
        }
        self.drop_producer();
        self.save_cursors();
    }

    fn in_flight(&self) -> usize {
        self.records.in_flight.len()
            + self.entries.in_flight.len()
            + self.checkpoints.in_flight.len()
    }

    fn budget(&self) -> usize {
        MAX_IN_FLIGHT
            .saturating_sub(self.in_flight())
            .min(READ_BATCH)
    }

    /// Hands the producer what waits, lane by lane, in order; returns how many messages.
    fn fill(&mut self) -> Result<usize> {
        let mut sent = 0;
        loop {
            let budget = self.budget();
            let records = if budget == 0 {
                Vec::new()
            } else {
                self.outbox.read(self.records.next, budget)?
            };
            if records.is_empty() {
                break;
            }
            for (seq, record) in records {
                let payload =
                    serde_json::to_vec(&record.payload).map_err(|e| Error::CorruptRecord {
                        key: format!("kafka-outbox/{seq}"),
                        reason: e.to_string(),
                    })?;
                let headers: Vec<(&str, &str)> = record
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                let key = record.key.as_deref().map(str::as_bytes);
                match self.send(Origin::Outbox(seq), &record.topic, key, &headers, &payload) {
                    Sent::Yes => self.records.sent(seq),
                    Sent::Full | Sent::Failed => return Ok(sent),
                }
                sent += 1;
            }
        }
        let Some(audit) = self.audit.clone() else {
            return Ok(sent);
        };
        loop {
            let budget = self.budget();
            let entries = if budget == 0 {
                Vec::new()
            } else {
                audit.records(self.entries.next, budget)?
            };
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                let index = entry.index;
                match self.send_entry(entry) {
                    Sent::Yes => self.entries.sent(index),
                    Sent::Full | Sent::Failed => return Ok(sent),
                }
                sent += 1;
            }
        }
        // A checkpoint follows the entry it covers (same topic and key: same partition).
        let budget = self.budget();
        if budget > 0 {
            for checkpoint in audit.checkpoints_from(self.checkpoints.next, budget)? {
                if checkpoint.index >= self.entries.next {
                    break;
                }
                match self.send_checkpoint(&checkpoint) {
                    Sent::Yes => self.checkpoints.sent(checkpoint.index),
                    Sent::Full | Sent::Failed => return Ok(sent),
                }
                sent += 1;
            }
        }
        Ok(sent)
    }

    fn send_entry(&mut self, entry: EntryRecord) -> Sent {
        let (index, hash) = (entry.index, entry.hash);
        let payload = Record::Entry(entry).encode();
        self.send_audit(
            (Origin::Entry(index), index),
            "audit-entry",
            &hash,
            &payload,
        )
    }

    fn send_checkpoint(&mut self, checkpoint: &Checkpoint) -> Sent {
        let payload = Record::Checkpoint(CheckpointRecord {
            node_id: self.node_id.clone(),
            checkpoint: checkpoint.clone(),
        })
        .encode();
        self.send_audit(
            (Origin::Checkpoint(checkpoint.index), checkpoint.index),
            "audit-checkpoint",
            &checkpoint.hash,
            &payload,
        )
    }

    /// Sends one record of the audit chain (`kind`: entry or checkpoint) to the audit topic,
    /// keyed by node, with its index and hash as headers.
    fn send_audit(
        &mut self,
        (origin, index): (Origin, u64),
        kind: &str,
        hash: &[u8; 32],
        payload: &[u8],
    ) -> Sent {
        let index = index.to_string();
        let hash = hex::encode(hash);
        let headers = [
            (HEADER_KIND, kind),
            (HEADER_INDEX, index.as_str()),
            (HEADER_HASH, hash.as_str()),
        ];
        let topic = self.config.audit_topic.clone();
        let key = self.node_id.clone();
        self.send(origin, &topic, Some(key.as_bytes()), &headers, payload)
    }

    fn send(
        &mut self,
        origin: Origin,
        topic: &str,
        key: Option<&[u8]>,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Sent {
        let Some(producer) = &self.producer else {
            return Sent::Full;
        };
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (name, value)| {
                headers.insert(Header {
                    key: name,
                    value: Some(*value),
                })
            });
        let mut record =
            BaseRecord::<[u8], [u8], Box<Origin>>::with_opaque_to(topic, Box::new(origin))
                .payload(payload)
                .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        match producer.send(record) {
            Ok(()) => Sent::Yes,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Sent::Full,
            Err((e, _)) => {
                warn!("kafka publisher: the producer refused a message for {topic}: {e}");
                self.recovering = true;
                Sent::Failed
            }
        }
    }

    /// Applies the delivery reports served by the last poll.
    fn settle(&mut self) {
        let Some(reports) = self.producer.as_ref().map(|p| p.context().take_reports()) else {
            return;
        };
        let Some(failure) = self.apply(reports) else {
            return;
        };
        let fatal = self
            .producer
            .as_ref()
            .and_then(|p| p.client().fatal_error());
        if let Some((code, reason)) = fatal {
            error!(
                "kafka publisher: the idempotent producer failed fatally ({code:?}: {reason}); \
                 rebuilding it and resending from the first unconfirmed record"
            );
            self.restart_producer();
        } else if !self.recovering {
            warn!(
                "kafka publisher: delivery failed ({failure}); resending from the first \
                 unconfirmed record with a new producer once the {} in flight settle",
                self.in_flight()
            );
            self.recovering = true;
        }
    }

    /// Settles `reports` in their lanes, removes published records and advances the
    /// cursors; returns the first failure.
    fn apply(&mut self, reports: Vec<Report>) -> Option<KafkaError> {
        if reports.is_empty() {
            return None;
        }
        let mut published = Vec::new();
        let mut failure = None;
        for (origin, result) in reports {
            let ok = result.is_ok();
            match origin {
                Origin::Outbox(seq) => {
                    self.records.settled(seq, ok);
                    if ok {
                        published.push(seq);
                    }
                }
                Origin::Entry(index) => self.entries.settled(index, ok),
                Origin::Checkpoint(index) => {
                    self.checkpoints.settled(index, ok);
                    if ok {
                        self.confirmed = Some(self.confirmed.map_or(index, |c| c.max(index)));
                    }
                }
            }
            if let Err(e) = result {
                failure.get_or_insert(e);
            }
        }
        if !published.is_empty() || failure.is_none() {
            self.shared.set_connected(true);
            self.backoff = FIRST_BACKOFF;
        }
        if let Err(e) = self.outbox.remove(&published) {
            error!("kafka publisher: {e}");
        }
        self.save_cursors();
        self.release_confirmed();
        failure
    }

    /// Records the newest confirmed checkpoint as released ([`Release::Kafka`]) once the
    /// broker confirmed everything up to it: audit compaction may then delete what it covers.
    fn release_confirmed(&mut self) {
        let (Some(index), Some(audit)) = (self.confirmed, &self.audit) else {
            return;
        };
        if index >= self.entries.cursor() || index >= self.checkpoints.cursor() {
            return;
        }
        match audit.release(index, Release::Kafka) {
            Ok(()) => self.confirmed = None,
            Err(e) => error!("kafka publisher: recording checkpoint {index} as released: {e}"),
        }
    }

    fn save_cursors(&mut self) {
        let mut writes = Vec::new();
        for (lane, key) in [
            (&mut self.entries, ENTRIES_CURSOR),
            (&mut self.checkpoints, CHECKPOINTS_CURSOR),
        ] {
            let cursor = lane.cursor();
            if cursor != lane.saved {
                writes.push(Write::Put(
                    Space::KafkaCursors,
                    key.to_vec(),
                    cursor.to_be_bytes().to_vec(),
                ));
                lane.saved = cursor;
            }
        }
        self.shared
            .entries_cursor
            .store(self.entries.saved, Ordering::Relaxed);
        if writes.is_empty() {
            return;
        }
        // Not fsynced: a cursor lost in a crash republishes a few entries (deduped by index).
        if let Err(e) = self
            .store
            .commit(writes, crate::store::Durability::Buffered)
        {
            error!("kafka publisher: saving the audit cursors: {e}");
        }
    }

    /// Drops the producer, rewinds every lane to its cursor and backs off; the next round
    /// creates a new producer. A new producer gets a new producer id: librdkafka alone keeps
    /// bumping the epoch of an id that a broker forgot (`UNKNOWN_PRODUCER_ID`) until the
    /// messages time out.
    fn restart_producer(&mut self) {
        self.drop_producer();
        self.rewind();
        self.back_off();
    }

    fn rewind(&mut self) {
        self.records.rewind();
        self.entries.rewind();
        self.checkpoints.rewind();
        self.recovering = false;
    }

    /// Drops the producer (librdkafka purges what it holds) and settles the last reports.
    fn drop_producer(&mut self) {
        if let Some(producer) = self.producer.take() {
            let context = Arc::clone(producer.context());
            drop(producer);
            self.apply(context.take_reports());
        }
    }

    fn back_off(&mut self) {
        self.shared.pause(self.backoff);
        self.backoff = (self.backoff * 2).min(self.config.retry_backoff_max());
    }

    /// Asks an idle broker for metadata now and then, to keep `connected` current.
    fn probe(&mut self) {
        let every = if self.shared.connected() {
            PROBE_CONNECTED
        } else {
            PROBE_DISCONNECTED
        };
        let Some(producer) = &self.producer else {
            return;
        };
        if self.last_probe.elapsed() < every {
            return;
        }
        let connected = producer
            .client()
            .fetch_metadata(None, PROBE_TIMEOUT)
            .is_ok();
        if connected != self.shared.connected() {
            info!(
                "kafka publisher: broker {} {}",
                self.config.bootstrap,
                if connected {
                    "reachable"
                } else {
                    "unreachable"
                }
            );
        }
        self.shared.set_connected(connected);
        self.last_probe = Instant::now();
    }
}

/// The first audit entry the broker has not confirmed on the audit topic (0 before any).
pub(crate) fn audit_entries_confirmed(store: &EmbeddedStore) -> Result<u64> {
    read_cursor(store, ENTRIES_CURSOR)
}

fn read_cursor(store: &EmbeddedStore, key: &[u8]) -> Result<u64> {
    match store.get(Space::KafkaCursors, key)? {
        None => Ok(0),
        Some(value) => <[u8; 8]>::try_from(value.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| Error::CorruptRecord {
                key: format!("kafka-cursors/{}", String::from_utf8_lossy(key)),
                reason: "cursor is not 8 bytes".into(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_resends_from_its_first_unconfirmed_id() {
        let mut lane = Lane::starting_at(5);
        for id in 5..10 {
            lane.sent(id);
        }
        lane.settled(5, true);
        lane.settled(6, true);
        assert_eq!(lane.cursor(), 7);
        lane.settled(8, true);
        lane.settled(7, false);
        lane.settled(9, true);
        assert_eq!(lane.cursor(), 7, "a failure holds the cursor");
        lane.rewind();
        assert_eq!((lane.next, lane.cursor()), (7, 7));
        assert!(lane.in_flight.is_empty());
    }
}
