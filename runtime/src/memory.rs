//! Embedded memory scopes: [`InProcessNodeMemory`] implements the `node` scope (L2, the
//! [`NodeMemory`] port) as a bounded TTL cache in the node's memory; [`FjallClusterMemory`]
//! implements the `cluster` scope (L3, the [`ClusterMemory`] port) as a persistent log in
//! the [`EmbeddedStore`].
//!
//! ## L2
//!
//! Each entry expires `ttl` after it was set (the caller passes the default TTL, one hour
//! per the design). When a new key arrives at capacity, expired entries go first, then the
//! entry that would expire soonest.
//!
//! ## L3
//!
//! Every `put` appends to the history of its key and replaces its latest value, in one
//! atomic, durable commit:
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `cluster-latest` | key | JSON `{"seq": n, "value": v}` |
//! | `cluster-history` | `key/seq` (seq zero-padded to 20 digits, from 0) | JSON value |

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eyeflow_actors::ports::{CallErrorKind, ClusterMemory, MemoryError, NodeMemory};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Durability, EmbeddedStore, Space, Write};
use crate::{Error, Result};
use eyeflow_actors::sync::Locked;

/// Default number of L2 entries.
pub const DEFAULT_NODE_CAPACITY: usize = 100_000;

/// How far "never expires" is: the longest TTL kept, and the expiry when `now + ttl` overflows.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The embedded `node` scope: a bounded TTL cache.
pub struct InProcessNodeMemory {
    capacity: usize,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Slot>,
    /// `(expiry, stamp)` → key, soonest first (the stamp makes the key unique).
    by_expiry: BTreeMap<(Instant, u64), String>,
    next_stamp: u64,
}

struct Slot {
    value: Value,
    expires: Instant,
    stamp: u64,
}

impl Cache {
    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.entries.remove(key) {
            self.by_expiry.remove(&(slot.expires, slot.stamp));
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }

    fn evict_soonest(&mut self) {
        if let Some((_, key)) = self.by_expiry.pop_first() {
            self.entries.remove(&key);
        }
    }
}

impl InProcessNodeMemory {
    /// A cache of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            cache: Mutex::default(),
        }
    }

    /// Number of entries held, expired ones included until they are purged.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.locked()
    }
}

impl Default for InProcessNodeMemory {
    fn default() -> Self {
        Self::new(DEFAULT_NODE_CAPACITY)
    }
}

#[async_trait::async_trait]
impl NodeMemory for InProcessNodeMemory {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        let now = Instant::now();
        let mut cache = self.lock();
        match cache.entries.get(key) {
            Some(slot) if slot.expires > now => Ok(Some(slot.value.clone())),
            Some(_) => {
                cache.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: &Value, ttl: Duration) -> Result<(), MemoryError> {
        let now = Instant::now();
        let mut cache = self.lock();
        cache.remove(key);
        if ttl.is_zero() {
            return Ok(());
        }
        if cache.entries.len() >= self.capacity {
            cache.purge_expired(now);
        }
        while cache.entries.len() >= self.capacity {
            cache.evict_soonest();
        }
        let expires = now
            .checked_add(ttl)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        let stamp = cache.next_stamp;
        cache.next_stamp += 1;
        cache.by_expiry.insert((expires, stamp), key.to_owned());
        cache.entries.insert(
            key.to_owned(),
            Slot {
                value: value.clone(),
                expires,
                stamp,
            },
        );
        Ok(())
    }
}

/// The latest value of a key as stored in `cluster-latest`.
#[derive(Serialize, Deserialize)]
struct Latest {
    seq: u64,
    value: Value,
}

/// The embedded `cluster` scope: latest value per key plus its full history, persistent.
pub struct FjallClusterMemory {
    store: EmbeddedStore,
    durability: Durability,
    /// Serializes puts (read the latest sequence number, write the next).
    writer: Mutex<()>,
}

impl FjallClusterMemory {
    /// The scope in `store`, committing with `durability`.
    pub fn new(store: EmbeddedStore, durability: Durability) -> Self {
        Self {
            store,
            durability,
            writer: Mutex::new(()),
        }
    }

    /// Every value ever put under `key`, oldest first, with its sequence number.
    pub fn history(&self, key: &str) -> Result<Vec<(u64, Value)>> {
        let prefix = format!("{key}/");
        self.store
            .scan(Space::ClusterHistory, prefix.as_bytes())?
            .into_iter()
            .filter_map(|(k, v)| {
                // Keys under `key/` also include those of longer keys (`key/sub/...`).
                let seq = std::str::from_utf8(k.get(prefix.len()..)?).ok()?;
                (seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| seq.parse::<u64>().ok())
                    .flatten()
                    .map(|seq| (seq, v))
            })
            .map(|(seq, v)| {
                serde_json::from_slice(&v)
                    .map(|value| (seq, value))
                    .map_err(|e| Error::CorruptRecord {
                        key: format!("cluster-history/{key}/{seq}"),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    fn latest(&self, key: &str) -> Result<Option<Latest>> {
        self.store.get_json(Space::ClusterLatest, key)
    }

    /// Writes the value as `key`'s latest and in its history; not durable yet.
    fn append(&self, key: &str, value: &Value) -> Result<()> {
        let writer = self.writer.locked();
        let seq = self.latest(key)?.map_or(0, |latest| latest.seq + 1);
        let latest = to_json(
            &format!("cluster-latest/{key}"),
            &Latest {
                seq,
                value: value.clone(),
            },
        )?;
        let history = to_json(&format!("cluster-history/{key}/{seq}"), value)?;
        self.store.commit(
            [
                Write::Put(Space::ClusterLatest, key.as_bytes().to_vec(), latest),
                Write::Put(
                    Space::ClusterHistory,
                    format!("{key}/{seq:020}").into_bytes(),
                    history,
                ),
            ],
            Durability::Buffered,
        )?;
        drop(writer);
        Ok(())
    }
}

impl FjallClusterMemory {
    /// The latest value under `key` (a read of the store: it does not block).
    pub(crate) fn value(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        self.latest(key)
            .map(|latest| latest.map(|l| l.value))
            .map_err(memory_error("get", key))
    }

    /// Writes a value for `key`, not durable yet: see [`Self::durable`].
    pub(crate) fn record(&self, key: &str, value: &Value) -> Result<(), MemoryError> {
        self.append(key, value).map_err(memory_error("put", key))
    }

    /// Waits (as a task) until what was recorded for `key` is durable, as the scope's
    /// durability says.
    pub(crate) async fn durable(&self, key: &str) -> Result<(), MemoryError> {
        self.store
            .persist_async(self.durability)
            .await
            .map_err(memory_error("put", key))
    }
}

#[async_trait::async_trait]
impl ClusterMemory for FjallClusterMemory {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        self.value(key)
    }

    async fn put(&self, key: &str, value: &Value) -> Result<(), MemoryError> {
        self.record(key, value)?;
        self.durable(key).await
    }
}

fn to_json<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::CorruptRecord {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// The store failed under an operation of the embedded cluster scope.
fn memory_error(operation: &'static str, key: &str) -> impl FnOnce(Error) -> MemoryError {
    let key = key.to_owned();
    move |error| {
        MemoryError::new(
            "cluster",
            operation,
            &key,
            CallErrorKind::Unavailable,
            error.to_string(),
        )
    }
}
