//! [`PluginHost`] as the executor's [`PluginPort`]: calls run as futures of the caller's
//! task (an execution on the actor runtime): a guest that computes yields at every epoch
//! tick, one that waits in WASI waits as a future.

use std::time::Duration;

use eyeflow_actors::ports::{CallError, CapabilityRef, OnResume, PluginPort};
use serde_json::Value;

use super::PluginHost;
use crate::plugins::call::KvWrites;
use crate::plugins::manifest::Kind;

#[async_trait::async_trait]
impl PluginPort for PluginHost {
    async fn read(
        &self,
        connector: &CapabilityRef,
        key: &str,
        params: &Value,
        call: &str,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        self.read_resource(connector, key, params, call, deadline)
            .await
    }

    async fn invoke(
        &self,
        capability: &CapabilityRef,
        action: &str,
        input: &Value,
        idempotency_key: &str,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        self.invoke_action(
            capability,
            action,
            input,
            idempotency_key,
            deadline,
            KvWrites::LeftToJournal,
        )
        .await
    }

    fn on_resume(&self, capability: &CapabilityRef, action: &str) -> OnResume {
        self.resolve(capability, Some(Kind::Capability))
            .ok()
            .and_then(|loaded| {
                loaded
                    .manifest
                    .operations
                    .get(action)
                    .map(|op| op.on_resume.to_port())
            })
            .unwrap_or_default()
    }
}
