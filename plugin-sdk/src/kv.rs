//! A small key-value store private to the plugin id and shared by its versions,
//! persisted by the node (`eyeflow:plugin/kv` import). Declare `"kv"` in the manifest's
//! `imports`. Values are bytes; [`get_json`] / [`set_json`] store JSON.
//!
//! [`set`] and [`delete`] are made durable by the node after the call (for an action, by
//! the journal write that records its result). [`set_if_absent`] stores a key only when it
//! is absent, together with a batch of [`Write`]s, atomically and durably before it
//! returns: the building block of [`apply_once`](crate::apply_once).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PluginError;
use crate::bindings::capability::eyeflow::plugin::kv as wit;

/// Most [`Write`]s in one [`set_if_absent`] batch, besides its own key.
pub const MAX_BATCH_WRITES: usize = 64;

/// Most bytes of keys and values in one [`set_if_absent`] batch, its own key and value
/// included. Each key is at most 1 KiB and each value at most 1 MiB, as for [`set`].
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The bytes stored under `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, PluginError> {
    wit::get(key).map_err(PluginError::from)
}

/// Store `value` under `key`; over the host's size limit fails with `InvalidInput`.
pub fn set(key: &str, value: &[u8]) -> Result<(), PluginError> {
    wit::set(key, value).map_err(PluginError::from)
}

/// Remove `key`; no error when it is absent.
pub fn delete(key: &str) -> Result<(), PluginError> {
    wit::delete(key).map_err(PluginError::from)
}

/// The JSON value stored under `key`, decoded as `T`. A stored value that does not
/// decode is the plugin's own state gone wrong: `Internal`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, PluginError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => decode(key, &bytes).map(Some),
    }
}

/// Store `value` as JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), PluginError> {
    set(key, &encode(key, value)?)
}

/// One write of a [`set_if_absent`] batch: store `value` under `key`, or remove `key`
/// when `value` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key written.
    pub key: String,
    /// The bytes to store; `None` removes the key.
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// Store `value` under `key`.
    pub fn set(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// Store `value` as JSON under `key`.
    pub fn set_json<T: Serialize + ?Sized>(
        key: impl Into<String>,
        value: &T,
    ) -> Result<Self, PluginError> {
        let key = key.into();
        let value = encode(&key, value)?;
        Ok(Self {
            key,
            value: Some(value),
        })
    }

    /// Remove `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: None,
        }
    }
}

/// When nothing is stored under `key`: store `value` under it and apply `writes`, all in
/// one atomic batch made durable before this returns, and return `None`. Otherwise change
/// nothing and return what `key` holds.
///
/// Atomic with respect to every other `set_if_absent` of the plugin (any version, any
/// call): of two calls with the same absent `key`, exactly one applies its batch and the
/// other gets the winner's `value`. Plain [`set`] and [`delete`] are not part of that
/// order. The host refuses with `InvalidInput`, writing nothing, a batch of more than
/// [`MAX_BATCH_WRITES`] writes or [`MAX_BATCH_BYTES`] bytes, an oversized key or value, a
/// write to `key` itself and two writes to the same key. Needs host WIT 1.2.0
/// (manifest `"wit": "1.2.0"`).
///
/// ```no_run
/// use eyeflow_plugin_sdk::kv::{self, Write};
///
/// # fn main() -> Result<(), eyeflow_plugin_sdk::PluginError> {
/// // Claim order 17 once; the claim and the stock change land together or not at all.
/// let claimed = kv::set_if_absent(
///     "claim/order-17",
///     b"picker-2",
///     vec![Write::set("stock/bolt-m6", b"41".to_vec()), Write::delete("reserved/order-17")],
/// )?;
/// match claimed {
///     None => { /* ours: the writes are applied and durable */ }
///     Some(owner) => { /* already claimed by `owner`: nothing was written */ }
/// }
/// # Ok(())
/// # }
/// ```
pub fn set_if_absent(
    key: &str,
    value: &[u8],
    writes: Vec<Write>,
) -> Result<Option<Vec<u8>>, PluginError> {
    let writes: Vec<wit::Write> = writes
        .into_iter()
        .map(|w| wit::Write {
            key: w.key,
            value: w.value,
        })
        .collect();
    wit::set_if_absent(key, value, &writes).map_err(PluginError::from)
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(bytes)
        .map_err(|e| PluginError::internal(format!("kv value {key:?} is not valid JSON: {e}")))
}

pub(crate) fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, PluginError> {
    serde_json::to_vec(value)
        .map_err(|e| PluginError::internal(format!("cannot serialize kv value {key:?}: {e}")))
}
