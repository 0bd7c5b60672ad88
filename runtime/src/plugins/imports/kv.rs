//! `eyeflow:plugin/kv`: each plugin's private scratch store in the embedded store. A
//! call's plain writes are buffered and applied when it ends well; `set-if-absent` writes
//! its batch at once, durable before it returns. Keys, values, batches and the per-plugin
//! quota are checked before anything is written.
//!
//! Keys under `once/` are the SDK's `apply_once` records, one per action applied: they
//! live as long as the node keeps the execution that made them (retention deletes them
//! with it), like the journal's own records, so they do not count against the plugin's
//! quota — a capability must not stop acting after its quota's worth of actions. To keep
//! them one per call, a call writes at most one, and only as the key of a `set-if-absent`.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::bindings::eyeflow::plugin::kv::{Host, Write as KvWrite};
use super::super::bindings::eyeflow::plugin::types::PluginError;
use super::{CallState, Services};
use crate::store::{Space, Write};
use eyeflow_actors::sync::Locked;

/// Where the guest SDK's `apply_once` keeps each idempotency key's result.
const ONCE_PREFIX: &str = "once/";

/// Longest key in the plugin scratch store.
const KV_MAX_KEY: usize = 1024;
/// Largest value in the plugin scratch store.
const KV_MAX_VALUE: usize = 1024 * 1024;
/// Most writes in one `set-if-absent` batch (besides its own key).
const KV_MAX_BATCH_WRITES: usize = 64;
/// Most bytes of keys and values in one `set-if-absent` batch, its own key included.
const KV_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// KV keys and bytes one plugin holds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KvUsage {
    keys: u64,
    bytes: u64,
}

impl Services {
    /// The KV keys and bytes `plugin` holds (a scan of its keys the first time).
    fn kv_usage(&self, plugin: &Arc<str>) -> Result<KvUsage, PluginError> {
        let mut usage = self.kv_usage.locked();
        if let Some(found) = usage.get(plugin) {
            return Ok(*found);
        }
        let mut prefix = plugin.as_bytes().to_vec();
        prefix.push(0);
        let mut counted = KvUsage::default();
        for (key, value) in self
            .store
            .scan(Space::PluginKv, &prefix)
            .map_err(store_error)?
        {
            if key[prefix.len()..].starts_with(ONCE_PREFIX.as_bytes()) {
                continue;
            }
            counted.keys += 1;
            counted.bytes += (key.len() - prefix.len() + value.len()) as u64;
        }
        usage.insert(plugin.clone(), counted);
        Ok(counted)
    }

    /// Deletes every plugin's `apply_once` records of executions `ids` (KV keys
    /// `once/<execution_id>/…`, the SDK's convention: idempotency keys are
    /// `execution/instruction/attempt`), once the node no longer keeps those executions and
    /// nothing can issue their keys again (`ids` sorted; [`crate::store::EmbeddedStore::keys_of_ids`]).
    /// Returns how many keys it deleted.
    pub(crate) fn forget_executions(
        &self,
        plugins: &[Arc<str>],
        ids: &[&str],
    ) -> crate::Result<u64> {
        let mut deleted = 0;
        for plugin in plugins {
            let mut once = plugin.as_bytes().to_vec();
            once.push(0);
            once.extend_from_slice(ONCE_PREFIX.as_bytes());
            deleted += self
                .store
                .keys_of_ids(Space::PluginKv, &once, ids, 1024, |keys| {
                    // Under the check-and-write lock, so no `set-if-absent` reads a key in
                    // between. `once/` records are outside the quota's count: nothing to
                    // give back.
                    let _check_and_write = self.kv_check_and_write.locked();
                    self.store.write(
                        keys.into_iter()
                            .map(|key| Write::Remove(Space::PluginKv, key)),
                    )
                })?;
        }
        Ok(deleted)
    }

    fn add_kv_usage(&self, plugin: &Arc<str>, keys: i64, bytes: i64) {
        let mut usage = self.kv_usage.locked();
        let entry = usage.entry(plugin.clone()).or_default();
        entry.keys = entry.keys.saturating_add_signed(keys);
        entry.bytes = entry.bytes.saturating_add_signed(bytes);
    }
}

/// A call's KV writes, applied together when it ends well and dropped when it fails (a
/// trap, a deadline): reads within the call see them first.
#[derive(Default)]
pub(crate) struct KvBuffer {
    /// Full store key → value (`None`: deleted).
    writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Change of the plugin's key count and bytes if they are applied.
    keys: i64,
    bytes: i64,
    /// Whether writes reached the store during this call (applied, or by set-if-absent).
    written: bool,
    /// Whether a write was refused for the plugin's quota.
    pub(crate) over_quota: bool,
    /// Whether this call wrote its `apply_once` record (at most one per call).
    once_written: bool,
}

impl KvBuffer {
    /// Applies the writes (`ok`) or drops them. Applied writes are not flushed: the host
    /// or the executor's next durable journal write makes them durable.
    pub(crate) fn finish(&mut self, ok: bool, services: &Services, plugin: &Arc<str>) {
        if ok {
            self.apply(services, plugin);
        } else {
            self.writes.clear();
            (self.keys, self.bytes) = (0, 0);
        }
    }

    /// Writes the buffered writes of `plugin` as one batch.
    fn apply(&mut self, services: &Services, plugin: &Arc<str>) {
        let writes = std::mem::take(&mut self.writes);
        if writes.is_empty() {
            return;
        }
        let batch: Vec<Write> = writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => Write::Put(Space::PluginKv, key, value),
                None => Write::Remove(Space::PluginKv, key),
            })
            .collect();
        match services.store.write(batch) {
            Ok(()) => {
                self.written = true;
                services.add_kv_usage(plugin, self.keys, self.bytes);
            }
            Err(e) => tracing::error!(plugin = &**plugin, "plugin KV writes not applied: {e}"),
        }
        (self.keys, self.bytes) = (0, 0);
    }
}

impl CallState {
    /// Whether KV writes reached the store during this call.
    pub(crate) fn kv_written(&self) -> bool {
        self.kv.written
    }

    /// The value of full key `key` as this call sees it (its own writes first).
    fn kv_read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        match self.kv.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self
                .services
                .store
                .get(Space::PluginKv, key)
                .map_err(store_error),
        }
    }

    /// Buffers a write of full key `key`, within the plugin's quota (an `apply_once`
    /// record, `counted` false, outside it).
    fn kv_buffer(
        &mut self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        counted: bool,
    ) -> Result<(), PluginError> {
        if !counted {
            self.kv.writes.insert(key, value);
            return Ok(());
        }
        let short = (key.len() - self.plugin_id.len() - 1) as i64;
        let old = self.kv_read(&key)?.map(|v| v.len() as i64 + short);
        let new = value.as_ref().map(|v| v.len() as i64 + short);
        let keys = i64::from(new.is_some()) - i64::from(old.is_some());
        let bytes = new.unwrap_or(0) - old.unwrap_or(0);
        let usage = self.services.kv_usage(&self.plugin_id)?;
        let quotas = self.services.quotas;
        let after_keys = (usage.keys as i64).saturating_add(self.kv.keys + keys);
        let after_bytes = (usage.bytes as i64).saturating_add(self.kv.bytes + bytes);
        if (keys > 0 && after_keys > quotas.kv_keys as i64)
            || (bytes > 0 && after_bytes > quotas.kv_bytes as i64)
        {
            self.kv.over_quota = true;
            return Err(PluginError::Unavailable(format!(
                "kv quota reached: this plugin may hold {} keys and {} bytes (it would hold {after_keys} keys, {after_bytes} bytes)",
                quotas.kv_keys, quotas.kv_bytes
            )));
        }
        self.kv.keys += keys;
        self.kv.bytes += bytes;
        self.kv.writes.insert(key, value);
        Ok(())
    }

    /// [`CallState::kv_key`] of a key the plugin writes itself: never under `once/`.
    fn kv_plain_key(&self, key: &str) -> Result<Vec<u8>, PluginError> {
        if key.starts_with(ONCE_PREFIX) {
            return Err(PluginError::InvalidInput(format!(
                "kv key `{ONCE_PREFIX}…` is an apply_once record, written only as the key of a set-if-absent"
            )));
        }
        self.kv_key(key)
    }

    fn kv_key(&self, key: &str) -> Result<Vec<u8>, PluginError> {
        if key.len() > KV_MAX_KEY {
            return Err(PluginError::InvalidInput(format!(
                "kv key of {} bytes; expected at most {KV_MAX_KEY}",
                key.len()
            )));
        }
        let mut full = self.plugin_id.as_bytes().to_vec();
        full.push(0);
        full.extend_from_slice(key.as_bytes());
        Ok(full)
    }

    /// The store key of a `set-if-absent` and its batch (that key first), once every limit
    /// is checked. Messages name a write by its position and never show a value.
    fn kv_batch(
        &self,
        key: &str,
        value: Vec<u8>,
        writes: Vec<KvWrite>,
    ) -> Result<(Vec<u8>, Vec<Write>), PluginError> {
        let refuse = |why: String| PluginError::InvalidInput(format!("set-if-absent: {why}"));
        if writes.len() > KV_MAX_BATCH_WRITES {
            return Err(refuse(format!(
                "{} writes; expected at most {KV_MAX_BATCH_WRITES}",
                writes.len()
            )));
        }
        let bytes = writes.iter().fold(key.len() + value.len(), |sum, w| {
            sum.saturating_add(w.key.len())
                .saturating_add(w.value.as_ref().map_or(0, Vec::len))
        });
        if bytes > KV_MAX_BATCH_BYTES {
            return Err(refuse(format!(
                "a batch of {bytes} bytes of keys and values; expected at most {KV_MAX_BATCH_BYTES}"
            )));
        }
        let full = self.kv_key(key).map_err(|e| refuse(message(e)))?;
        if key.starts_with(ONCE_PREFIX) && self.kv.once_written {
            return Err(refuse(format!(
                "a second `{ONCE_PREFIX}…` record in one call; an action writes one apply_once record"
            )));
        }
        check_kv_value(&value).map_err(|e| refuse(message(e)))?;
        // Two writes of one batch to the same key would leave the outcome to the store's
        // ordering within a batch: refused instead.
        let mut seen = HashMap::with_capacity(writes.len());
        let mut batch = Vec::with_capacity(writes.len() + 1);
        batch.push(Write::Put(Space::PluginKv, full.clone(), value));
        for (i, write) in writes.into_iter().enumerate() {
            let n = i + 1;
            if write.key == key {
                return Err(refuse(format!(
                    "write {n} has the key that is set if absent"
                )));
            }
            if let Some(first) = seen.insert(write.key.clone(), n) {
                return Err(refuse(format!("writes {first} and {n} have the same key")));
            }
            let full = self
                .kv_plain_key(&write.key)
                .map_err(|e| refuse(format!("write {n}: {}", message(e))))?;
            batch.push(match write.value {
                Some(value) => {
                    check_kv_value(&value)
                        .map_err(|e| refuse(format!("write {n}: {}", message(e))))?;
                    Write::Put(Space::PluginKv, full, value)
                }
                None => Write::Remove(Space::PluginKv, full),
            });
        }
        Ok((full, batch))
    }
}

fn check_kv_value(value: &[u8]) -> Result<(), PluginError> {
    if value.len() > KV_MAX_VALUE {
        return Err(PluginError::InvalidInput(format!(
            "kv value of {} bytes; expected at most {KV_MAX_VALUE}",
            value.len()
        )));
    }
    Ok(())
}

/// The message of a plugin error, whatever its class.
fn message(error: PluginError) -> String {
    match error {
        PluginError::InvalidInput(m)
        | PluginError::Unavailable(m)
        | PluginError::Timeout(m)
        | PluginError::Denied(m)
        | PluginError::Internal(m) => m,
    }
}

fn store_error(e: crate::Error) -> PluginError {
    PluginError::Unavailable(format!("scratch store: {e}"))
}

impl Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, PluginError> {
        let key = self.kv_key(&key)?;
        self.kv_read(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), PluginError> {
        check_kv_value(&value)?;
        let key = self.kv_plain_key(&key)?;
        self.kv_buffer(key, Some(value), true)
    }

    fn delete(&mut self, key: String) -> Result<(), PluginError> {
        let key = self.kv_plain_key(&key)?;
        self.kv_buffer(key, None, true)
    }

    async fn set_if_absent(
        &mut self,
        key: String,
        value: Vec<u8>,
        writes: Vec<KvWrite>,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let once = key.starts_with(ONCE_PREFIX);
        let (key, batch) = self.kv_batch(&key, value, writes)?;
        self.kv.once_written |= once;
        if self.remaining().is_zero() {
            return Err(PluginError::Timeout(
                "the call's deadline passed before set-if-absent; nothing was written".into(),
            ));
        }
        let held = self.kv_read(&key)?;
        let before = (self.kv.writes.clone(), self.kv.keys, self.kv.bytes);
        if held.is_none() {
            // Within the quota like any write; then written at once, with the call's
            // earlier writes, as one batch.
            for (n, write) in batch.into_iter().enumerate() {
                let (key, value) = match write {
                    Write::Put(_, key, value) => (key, Some(value)),
                    Write::Remove(_, key) => (key, None),
                };
                // The batch's first write is the key set if absent.
                if let Err(e) = self.kv_buffer(key, value, !(once && n == 0)) {
                    (self.kv.writes, self.kv.keys, self.kv.bytes) = before;
                    return Err(e);
                }
            }
        }
        let services = self.services.clone();
        let held = {
            let _check_and_write = services.kv_check_and_write.locked();
            let held = match held {
                Some(held) => Some(held),
                None => services
                    .store
                    .get(Space::PluginKv, &key)
                    .map_err(store_error)?,
            };
            if held.is_none() {
                // One batch: the key and the writes survive a crash together or not at all.
                self.kv.apply(&services, &self.plugin_id);
            } else {
                (self.kv.writes, self.kv.keys, self.kv.bytes) = before;
            }
            held
        };
        // Durable before returning, whichever way it went: a value found may be one that
        // another call wrote a moment ago and is still making durable. (An fsync cannot be
        // interrupted; the call's deadline was checked before.) The call waits for the
        // fsync as a future, holding no thread.
        services
            .store
            .persist_async(services.kv_durability)
            .await
            .map_err(store_error)?;
        Ok(held)
    }
}
