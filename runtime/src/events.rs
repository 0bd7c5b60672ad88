//! The embedded event sink: [`FjallEventLog`] implements the [`EventSink`] port (EMIT_EVENT)
//! as a persistent local log per topic in the [`EmbeddedStore`] — the default when no Kafka
//! sink is configured.
//!
//! Each emitted event gets the next offset of its topic (from 0). A second emit with an
//! idempotency key already seen (in any topic, even before a restart) is dropped: it returns
//! `Ok` and writes nothing.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `events` | topic length (2 bytes big-endian) ‖ topic ‖ offset (8 bytes big-endian) | JSON [`EmittedEvent`] |
//! | `event-keys` | idempotency key | the `events` key it landed under |

use std::collections::HashMap;
use std::sync::Mutex;

use eyeflow_actors::ports::{CallError, CallErrorKind, EventSink};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Durability, EmbeddedStore, Space, Write};
use crate::{Error, Result};
use eyeflow_actors::sync::Locked;

/// Origin named in the sink's [`CallError`]s.
const ORIGIN: &str = "events";

/// One event in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmittedEvent {
    /// Topic.
    pub topic: String,
    /// Position in the topic, from 0.
    pub offset: u64,
    /// Partitioning key.
    pub key: String,
    /// The event.
    pub payload: Value,
    /// `execution/instruction/attempt` of the EMIT_EVENT that produced it.
    pub idempotency_key: String,
    /// When it was appended, Unix milliseconds.
    pub time_ms: u64,
}

/// The embedded event log.
pub struct FjallEventLog {
    store: EmbeddedStore,
    durability: Durability,
    /// Next offset per topic seen since opening; held while checking and appending.
    next: Mutex<HashMap<String, u64>>,
}

impl FjallEventLog {
    /// The log in `store`, committing with `durability`.
    pub fn new(store: EmbeddedStore, durability: Durability) -> Self {
        Self {
            store,
            durability,
            next: Mutex::default(),
        }
    }

    /// At most `max` events of `topic` from offset `from`, in order.
    pub fn read(&self, topic: &str, from: u64, max: usize) -> Result<Vec<EmittedEvent>> {
        let Some(prefix) = topic_prefix(topic) else {
            return Ok(Vec::new());
        };
        let mut start = prefix.clone();
        start.extend_from_slice(&from.to_be_bytes());
        self.store
            .scan_from(Space::Events, &prefix, &start, max)?
            .into_iter()
            .map(|(_, value)| {
                serde_json::from_slice(&value).map_err(|e| Error::CorruptRecord {
                    key: format!("events/{topic}"),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Deletes the events appended before `before_ms` (Unix ms), oldest first in each topic,
    /// at most `batch` keys per store write (each write atomic, not flushed: a crash may
    /// bring a suffix of them back, to be deleted again). The newest event of each topic is
    /// always kept, so that the topic's offsets go on from it after a restart. Returns how
    /// many were deleted.
    pub fn expire(&self, before_ms: u64, batch: usize) -> Result<u64> {
        let batch = batch.max(1);
        let mut deleted = 0u64;
        let mut from = Vec::new();
        while let Some((first, _)) = self.store.scan_from(Space::Events, b"", &from, 1)?.pop() {
            let prefix = first
                .get(..2)
                .map(|len| 2 + usize::from(u16::from_be_bytes([len[0], len[1]])))
                .and_then(|end| first.get(..end))
                .ok_or_else(|| Error::CorruptRecord {
                    key: format!("events/{}", hex::encode(&first)),
                    reason: "key does not start with a topic".into(),
                })?
                .to_vec();
            let newest = self.store.last(Space::Events, &prefix)?.map(|(key, _)| key);
            loop {
                let page = self
                    .store
                    .scan_from(Space::Events, &prefix, &prefix, batch)?;
                let mut done = page.len() < batch;
                let mut removes = Vec::with_capacity(page.len());
                for (key, value) in page {
                    let expired = newest.as_ref() != Some(&key)
                        && serde_json::from_slice::<EmittedEvent>(&value)
                            .is_ok_and(|event| event.time_ms < before_ms);
                    if !expired {
                        // Newer (or unreadable: kept for an operator to look at).
                        done = true;
                        break;
                    }
                    removes.push(Write::Remove(Space::Events, key));
                }
                deleted += u64::try_from(removes.len()).unwrap_or(u64::MAX);
                if !removes.is_empty() {
                    self.store.write(removes)?;
                }
                if done {
                    break;
                }
            }
            // The next topic's keys sort after every offset of this one.
            from = prefix;
            from.extend_from_slice(&[0xFF; 9]);
        }
        Ok(deleted)
    }

    /// Writes the event under the next offset of its topic, once per idempotency key; not
    /// durable yet: the caller waits for the fsync that covers it.
    fn append(
        &self,
        prefix: Vec<u8>,
        topic: &str,
        key: &str,
        payload: &Value,
        idempotency_key: &str,
    ) -> Result<()> {
        let mut next = self.next.locked();
        if self
            .store
            .get(Space::EventKeys, idempotency_key.as_bytes())?
            .is_some()
        {
            // A duplicate: nothing to write (the caller waits until the first emission is
            // durable).
            return Ok(());
        }
        let offset = match next.get(topic) {
            Some(offset) => *offset,
            None => match self.store.last(Space::Events, &prefix)? {
                Some((last, _)) => decode_offset(&last, prefix.len())? + 1,
                None => 0,
            },
        };
        let event = EmittedEvent {
            topic: topic.to_owned(),
            offset,
            key: key.to_owned(),
            payload: payload.clone(),
            idempotency_key: idempotency_key.to_owned(),
            time_ms: crate::now_ms(),
        };
        let value = serde_json::to_vec(&event).map_err(|e| Error::CorruptRecord {
            key: format!("events/{topic}/{offset}"),
            reason: e.to_string(),
        })?;
        let mut record_key = prefix;
        record_key.extend_from_slice(&offset.to_be_bytes());
        self.store.commit(
            [
                Write::Put(
                    Space::EventKeys,
                    idempotency_key.as_bytes().to_vec(),
                    record_key.clone(),
                ),
                Write::Put(Space::Events, record_key, value),
            ],
            Durability::Buffered,
        )?;
        next.insert(topic.to_owned(), offset + 1);
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventSink for FjallEventLog {
    async fn emit(
        &self,
        topic: &str,
        key: &str,
        payload: &Value,
        idempotency_key: &str,
    ) -> Result<(), CallError> {
        let Some(prefix) = topic_prefix(topic).filter(|_| !topic.is_empty()) else {
            return Err(CallError::new(
                CallErrorKind::InvalidInput,
                ORIGIN,
                format!("topic must be 1 to 65535 bytes, not {}", topic.len()),
            ));
        };
        let unavailable =
            |e: Error| CallError::new(CallErrorKind::Unavailable, ORIGIN, e.to_string());
        self.append(prefix, topic, key, payload, idempotency_key)
            .map_err(unavailable)?;
        // Durable before the execution goes on; the task waits for the fsync without
        // holding its thread.
        self.store
            .persist_async(self.durability)
            .await
            .map_err(unavailable)
    }
}

/// Topic length (2 bytes big-endian) ‖ topic; `None` for a topic over 65535 bytes.
fn topic_prefix(topic: &str) -> Option<Vec<u8>> {
    let len = u16::try_from(topic.len()).ok()?;
    let mut prefix = len.to_be_bytes().to_vec();
    prefix.extend_from_slice(topic.as_bytes());
    Some(prefix)
}

fn decode_offset(key: &[u8], prefix_len: usize) -> Result<u64> {
    key.get(prefix_len..)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::CorruptRecord {
            key: format!("events/{}", hex::encode(key)),
            reason: "key does not end in an 8-byte offset".into(),
        })
}
