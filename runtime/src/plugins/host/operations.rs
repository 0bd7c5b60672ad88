//! The calls of [`PluginHost`]: `read` through a connector (or a capability's `read`
//! action), `invoke` of a capability's action, `poll` of an event source and `describe`,
//! each resolved in the live table, run by the call machinery and mapped to a result.

use std::sync::Arc;
use std::time::Duration;

use eyeflow_actors::ports::{CallError, CallErrorKind, CapabilityRef};
use serde_json::Value;

use super::PluginHost;
use crate::plugins::bindings::exports::eyeflow::plugin::source::Batch;
use crate::plugins::bindings::eyeflow::plugin::types::PluginError;
use crate::plugins::call::KvWrites;
use crate::plugins::loaded::Entrypoints;
use crate::plugins::manifest::Kind;
use crate::plugins::outcome::{check_input, check_output, output, plugin_error};

/// The call a read outside any execution (the CLI, tests) is made for.
const OUTSIDE_EXECUTIONS: &str = "-";

/// The idempotency key of a read made through a capability's `read` action: the WIT's
/// `invoke` takes one, though a read has no effect. Derived from the execution's call, so
/// it is the same after a restart and never the key of the call's own action.
fn read_key(call: &str) -> String {
    format!("{call}/read")
}

impl PluginHost {
    /// Calls the `describe` export of the newest loaded version of plugin `id`.
    pub fn describe(&self, id: &str) -> std::result::Result<Value, CallError> {
        let loaded = self
            .inner
            .table
            .newest(id)
            .ok_or_else(|| CallError::new(CallErrorKind::NotFound, id, "not installed"))?;
        let index = match &loaded.entrypoints {
            Entrypoints::Capability { describe, .. } | Entrypoints::Connector { describe, .. } => {
                *describe
            }
        };
        let ((text,), finished) =
            self.inner
                .calls
                .blocking(self.inner.calls.call::<(), (String,)>(
                    &loaded,
                    Duration::from_secs(5),
                    KvWrites::Persist,
                    &index,
                    (),
                ))?;
        output(&loaded, Ok(text), &finished)
    }

    /// Deletes every plugin's `apply_once` records of finished executions `ids` (sorted;
    /// retention deleted them: nothing can issue their idempotency keys again), so that
    /// they do not fill the plugins' KV quotas. Returns how many keys went.
    pub fn forget_executions(&self, ids: &[&str]) -> crate::Result<u64> {
        let plugins: Vec<Arc<str>> = self
            .inner
            .catalog
            .ids()?
            .into_iter()
            .map(Arc::from)
            .collect();
        self.inner.calls.services.forget_executions(&plugins, ids)
    }

    /// Log bytes of plugin `id` dropped since the host opened (over its per-call or
    /// per-second quota).
    pub fn log_bytes_dropped(&self, id: &str) -> u64 {
        self.inner.calls.services.log_bytes_dropped(id)
    }

    /// Polls the event source resolved from `source` after `cursor`.
    pub fn poll(
        &self,
        source: &CapabilityRef,
        cursor: Option<&str>,
        max_events: u32,
        deadline: Duration,
    ) -> std::result::Result<Batch, CallError> {
        let loaded = self.resolve(source, Some(Kind::Connector))?;
        let Entrypoints::Connector {
            poll: Some(index), ..
        } = &loaded.entrypoints
        else {
            return Err(CallError::new(
                CallErrorKind::InvalidInput,
                &*loaded.label,
                "not an event source",
            ));
        };
        let cursor = cursor.map(str::to_owned);
        let ((result,), finished) = self.inner.calls.blocking(self.inner.calls.call::<(
            Option<String>,
            u32,
        ), (
            std::result::Result<Batch, PluginError>,
        )>(
            &loaded,
            deadline,
            KvWrites::Persist,
            index,
            (cursor, max_events),
        ))?;
        let mut batch = result.map_err(|e| plugin_error(&loaded, e, &finished))?;
        if batch.events.len() > usize::try_from(max_events).unwrap_or(usize::MAX) {
            return Err(CallError::new(
                CallErrorKind::InvalidOutput,
                &*loaded.label,
                format!(
                    "poll returned {} events; it was asked for at most {max_events} (none taken)",
                    batch.events.len()
                ),
            ));
        }
        if !finished.scrubber.is_empty() {
            for event in &mut batch.events {
                finished.scrubber.scrub_string(&mut event.key);
                finished.scrubber.scrub_string(&mut event.payload);
            }
        }
        Ok(batch)
    }

    /// Reads resource `key` through the connector resolved from `connector` (see
    /// [`PluginPort::read`](eyeflow_actors::ports::PluginPort::read)) for the execution's call `call`.
    pub(super) async fn read_resource(
        &self,
        connector: &CapabilityRef,
        key: &str,
        params: &Value,
        call: &str,
        deadline: Duration,
    ) -> std::result::Result<Value, CallError> {
        let loaded = match self.resolve(connector, Some(Kind::Connector)) {
            Ok(loaded) => loaded,
            // A capability that exposes a `read` action (valve-sim's state, for
            // postconditions) is read through that action.
            Err(not_found) => match self.resolve(connector, Some(Kind::Capability)) {
                Ok(capability) if capability.manifest.operations.contains_key("read") => {
                    return self
                        .invoke_action(
                            connector,
                            "read",
                            params,
                            &read_key(call),
                            deadline,
                            KvWrites::Persist,
                        )
                        .await;
                }
                _ => return Err(not_found),
            },
        };
        let Entrypoints::Connector { read: index, .. } = &loaded.entrypoints else {
            return Err(CallError::new(
                CallErrorKind::Internal,
                &*loaded.label,
                "no read export",
            ));
        };
        check_input(&loaded, "read", params)?;
        let params = params.to_string();
        let ((result,), finished) = self
            .inner
            .calls
            .call::<(&str, &str), (std::result::Result<String, PluginError>,)>(
                &loaded,
                deadline,
                KvWrites::Persist,
                index,
                (key, &params),
            )
            .await?;
        let output = output(&loaded, result, &finished)?;
        check_output(&loaded, "read", &output)?;
        Ok(output)
    }

    /// [`PluginPort::read`](eyeflow_actors::ports::PluginPort::read), waiting on the calling thread (outside any runtime: tests, the
    /// CLI), outside any execution.
    pub fn read(
        &self,
        connector: &CapabilityRef,
        key: &str,
        params: &Value,
        deadline: Duration,
    ) -> std::result::Result<Value, CallError> {
        self.inner.calls.blocking(self.read_resource(
            connector,
            key,
            params,
            OUTSIDE_EXECUTIONS,
            deadline,
        ))
    }

    /// [`PluginPort::invoke`](eyeflow_actors::ports::PluginPort::invoke), waiting on the calling thread (outside any runtime: tests,
    /// the CLI).
    pub fn invoke(
        &self,
        capability: &CapabilityRef,
        action: &str,
        input: &Value,
        idempotency_key: &str,
        deadline: Duration,
    ) -> std::result::Result<Value, CallError> {
        self.inner.calls.blocking(self.invoke_action(
            capability,
            action,
            input,
            idempotency_key,
            deadline,
            KvWrites::LeftToJournal,
        ))
    }

    /// Invokes `action` through the capability resolved from `capability` (see
    /// [`PluginPort::invoke`](eyeflow_actors::ports::PluginPort::invoke)).
    pub(super) async fn invoke_action(
        &self,
        capability: &CapabilityRef,
        action: &str,
        input: &Value,
        idempotency_key: &str,
        deadline: Duration,
        kv: KvWrites,
    ) -> std::result::Result<Value, CallError> {
        let loaded = self.resolve(capability, Some(Kind::Capability))?;
        let Entrypoints::Capability { invoke: index, .. } = &loaded.entrypoints else {
            return Err(CallError::new(
                CallErrorKind::Internal,
                &*loaded.label,
                "no invoke export",
            ));
        };
        check_input(&loaded, action, input)?;
        let input = input.to_string();
        let ((result,), finished) = self
            .inner
            .calls
            .call::<(&str, &str, &str), (std::result::Result<String, PluginError>,)>(
                &loaded,
                deadline,
                kv,
                index,
                (action, &input, idempotency_key),
            )
            .await?;
        let output = output(&loaded, result, &finished)?;
        check_output(&loaded, action, &output)?;
        Ok(output)
    }
}
