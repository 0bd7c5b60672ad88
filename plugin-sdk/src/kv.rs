//! A small key-value store private to the plugin id and shared by its versions,
//! persisted by the node (`eyeflow:plugin/kv` import). Declare `"kv"` in the manifest's
//! `imports`. Values are bytes; [`get_json`] / [`set_json`] store JSON.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PluginError;
use crate::bindings::capability::eyeflow::plugin::kv as wit;

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
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PluginError::internal(format!("kv value {key:?} is not valid JSON: {e}"))),
    }
}

/// Store `value` as JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| PluginError::internal(format!("cannot serialize kv value {key:?}: {e}")))?;
    set(key, &bytes)
}
