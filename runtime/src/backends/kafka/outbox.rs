//! The Kafka outbox: records waiting for publication, kept in the embedded store so that
//! nothing accepted is lost while the broker is unreachable or the node restarts. Records
//! are numbered in append order; the publisher sends them in that order and removes each
//! one only after the broker confirmed it.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `kafka-outbox` | sequence number (8 bytes big-endian) | JSON [`OutboxRecord`] |
//! | `kafka-outbox-keys` | idempotency key | the sequence number it was appended under |

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Durability, EmbeddedStore, Space, Write};
use crate::{Error, Result};
use eyeflow_actors::sync::Locked;

/// One record waiting for publication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutboxRecord {
    /// Full topic name.
    pub(crate) topic: String,
    /// Partitioning key (none: the producer picks a partition).
    pub(crate) key: Option<String>,
    /// Message headers, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The message, published as JSON text.
    pub(crate) payload: Value,
}

/// The outbox over the embedded store.
pub(crate) struct Outbox {
    store: EmbeddedStore,
    durability: Durability,
    /// Next sequence number; held while checking a key and appending.
    next: Mutex<u64>,
    /// Records held.
    len: AtomicU64,
}

impl Outbox {
    /// The outbox in `store`, appending with `durability`.
    pub(crate) fn open(store: EmbeddedStore, durability: Durability) -> Result<Self> {
        let next = match store.last(Space::KafkaOutbox, b"")? {
            Some((key, _)) => decode_seq(&key)? + 1,
            None => 0,
        };
        let len = store.count(Space::KafkaOutbox)?;
        Ok(Self {
            store,
            durability,
            next: Mutex::new(next),
            len: AtomicU64::new(len),
        })
    }

    /// Waits (as a task) until what was appended — to the outbox or anywhere else in its
    /// store — is durable, as the outbox's durability says.
    pub(crate) async fn durable(&self) -> Result<()> {
        self.store.persist_async(self.durability).await
    }

    /// Appends `record`, not durable yet: see [`Self::durable`]. With an idempotency key
    /// already seen (even before a restart, even once published), appends nothing and
    /// returns false.
    pub(crate) fn append(
        &self,
        record: &OutboxRecord,
        idempotency_key: Option<&str>,
    ) -> Result<bool> {
        let value = serde_json::to_vec(record).map_err(|e| Error::CorruptRecord {
            key: format!("kafka-outbox/{}", record.topic),
            reason: e.to_string(),
        })?;
        let mut next = self.next.locked();
        if let Some(idempotency_key) = idempotency_key
            && self
                .store
                .get(Space::KafkaOutboxKeys, idempotency_key.as_bytes())?
                .is_some()
        {
            // A duplicate: nothing to write (the caller waits until the first append is
            // durable).
            return Ok(false);
        }
        let seq = *next;
        let key = seq.to_be_bytes().to_vec();
        let dedupe = idempotency_key.map(|idempotency_key| {
            Write::Put(
                Space::KafkaOutboxKeys,
                idempotency_key.as_bytes().to_vec(),
                key.clone(),
            )
        });
        self.store.commit(
            dedupe
                .into_iter()
                .chain([Write::Put(Space::KafkaOutbox, key, value)]),
            Durability::Buffered,
        )?;
        *next = seq + 1;
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// At most `max` records from sequence number `from`, in order.
    pub(crate) fn read(&self, from: u64, max: usize) -> Result<Vec<(u64, OutboxRecord)>> {
        self.store
            .scan_from(Space::KafkaOutbox, b"", &from.to_be_bytes(), max)?
            .into_iter()
            .map(|(key, value)| {
                let seq = decode_seq(&key)?;
                let record = serde_json::from_slice(&value).map_err(|e| Error::CorruptRecord {
                    key: format!("kafka-outbox/{seq}"),
                    reason: e.to_string(),
                })?;
                Ok((seq, record))
            })
            .collect()
    }

    /// Removes published records. Not fsynced: after a crash a removed record may come back
    /// and be published again (consumers dedupe by its `event-id` header).
    pub(crate) fn remove(&self, seqs: &[u64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.store.commit(
            seqs.iter()
                .map(|seq| Write::Remove(Space::KafkaOutbox, seq.to_be_bytes().to_vec())),
            Durability::Buffered,
        )?;
        self.len.fetch_sub(
            u64::try_from(seqs.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Records waiting for publication.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }
}

fn decode_seq(key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::CorruptRecord {
            key: format!("kafka-outbox/{}", hex::encode(key)),
            reason: "key is not 8 bytes".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> OutboxRecord {
        OutboxRecord {
            topic: "t".into(),
            key: Some(format!("k{n}")),
            headers: vec![("event-id".into(), format!("e{n}"))],
            payload: serde_json::json!({ "n": n }),
        }
    }

    #[test]
    fn appends_in_order_dedupes_and_survives_reopen() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::io("tempdir"))?;
        let store = EmbeddedStore::open(dir.path())?;
        let outbox = Outbox::open(store.clone(), Durability::Sync)?;
        for n in 0..3 {
            assert!(outbox.append(&record(n), Some(&format!("e{n}")))?);
        }
        assert!(
            !outbox.append(&record(9), Some("e1"))?,
            "a known key appends nothing"
        );
        assert_eq!(outbox.len(), 3);
        outbox.remove(&[0])?;
        drop(outbox);

        let outbox = Outbox::open(store, Durability::Sync)?;
        assert_eq!(outbox.len(), 2);
        assert!(
            !outbox.append(&record(0), Some("e0"))?,
            "published keys stay known"
        );
        assert!(outbox.append(&record(3), None)?);
        let read = outbox.read(0, 10)?;
        let seqs: Vec<u64> = read.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(read[2].1, record(3));
        Ok(())
    }
}
