//! Acting once per idempotency key: [`apply_once`] keeps, for each key, the result of the
//! action it applied, in the plugin KV under [`KEY_PREFIX`]`<idempotency key>`, written in
//! the same atomic, durable batch as the KV writes that are the action.
//!
//! The runtime hands every action an idempotency key (`execution/instruction/attempt`)
//! and, after a crash, may invoke an action under the same key again (see the manifest's
//! `on_resume`). A capability whose action is a change of its KV state (a simulator, a
//! ledger, a counter) acts once with [`apply_once`]; one that drives an outside device must
//! also make the device itself drop a repeated key, or declare `read_back` / `ambiguous`.

use crate::kv::{self, Write};
use crate::{PluginError, Value};

/// Where [`apply_once`] keeps each key's result: the KV key `once/<idempotency key>`. A
/// record lives as long as the node keeps the execution that made it (an idempotency key
/// can come back until then): the node's retention deletes it with that execution. The
/// host keeps these records outside the plugin's KV quota, lets a call write one, and
/// refuses a plugin's own writes under this prefix.
pub const KEY_PREFIX: &str = "once/";

/// Applies an action at most once per `idempotency_key` and returns its result, the same
/// result every time the key comes back.
///
/// - When the key was already applied, returns the result stored then; `act` does not run.
/// - Otherwise runs `act`, which computes the action's output and the KV writes that *are*
///   the action, without writing them itself; then commits the output (under
///   [`KEY_PREFIX`]`<key>`) and those writes with [`kv::set_if_absent`]: atomically (both
///   or neither survive a crash) and durably before returning. If another call under the
///   same key committed first, its result is returned and these writes are dropped.
/// - With an empty `idempotency_key` nothing can be recognised later: `act` runs and its
///   writes are applied with plain [`kv::set`] / [`kv::delete`] in order (not atomic, made
///   durable by the node after the call), and every call acts again.
///
/// `act` reads the state it needs with [`kv::get`]; two actions under *different* keys
/// that change the same record at the same time are not serialised: the last commit wins
/// for that record. Errors from `act` are returned as they are and nothing is written.
/// The batch limits of [`kv::set_if_absent`] apply (at most [`kv::MAX_BATCH_WRITES`]
/// writes). Needs the manifest's `imports` to list `"kv"` and `"wit": "1.2.0"`.
///
/// ```
/// use eyeflow_plugin_sdk::kv::{self, Write};
/// use eyeflow_plugin_sdk::{PluginError, Value, apply_once, json};
///
/// /// Adds `amount` to account `name` once per idempotency key.
/// fn credit(name: &str, amount: u64, idempotency_key: &str) -> Result<Value, PluginError> {
///     apply_once(idempotency_key, || {
///         let key = format!("balance/{name}");
///         let balance = kv::get_json::<u64>(&key)?.unwrap_or(0) + amount;
///         Ok((json!({"account": name, "balance": balance}), vec![Write::set_json(key, &balance)?]))
///     })
/// }
/// # fn main() {}
/// ```
pub fn apply_once(
    idempotency_key: &str,
    act: impl FnOnce() -> Result<(Value, Vec<Write>), PluginError>,
) -> Result<Value, PluginError> {
    if idempotency_key.is_empty() {
        let (output, writes) = act()?;
        for write in writes {
            match write.value {
                Some(value) => kv::set(&write.key, &value)?,
                None => kv::delete(&write.key)?,
            }
        }
        return Ok(output);
    }
    let record_key = format!("{KEY_PREFIX}{idempotency_key}");
    if let Some(stored) = kv::get(&record_key)? {
        return kv::decode(&record_key, &stored);
    }
    let (output, writes) = act()?;
    let record = kv::encode(&record_key, &output)?;
    match kv::set_if_absent(&record_key, &record, writes)? {
        None => Ok(output),
        // Another call under the same key committed between the check and ours.
        Some(stored) => kv::decode(&record_key, &stored),
    }
}
