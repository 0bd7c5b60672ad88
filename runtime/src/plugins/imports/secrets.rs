//! `eyeflow:plugin/secrets`: a granted secret by name from the node's secret source; its
//! value is remembered by the call's scrubber, which takes it out of whatever the plugin
//! logs or returns.

use eyeflow_actors::ports::CallErrorKind;

use super::super::bindings::eyeflow::plugin::secrets::Host;
use super::super::bindings::eyeflow::plugin::types::PluginError;
use super::CallState;

impl Host for CallState {
    async fn get(&mut self, name: String) -> Result<String, PluginError> {
        if !self.grant.allows_secret(&name) {
            return Err(PluginError::Denied(format!(
                "secret `{name}` is not granted to {}; grant it with `eyeflow plugin grant {} --secret {name}`",
                self.label, self.plugin_id
            )));
        }
        // The source's message names the secret and the backend, never the value.
        let secret = self
            .services
            .secrets
            .get(&name)
            .await
            .map_err(|e| match e.kind {
                CallErrorKind::Denied => PluginError::Denied(e.to_string()),
                CallErrorKind::Timeout => PluginError::Timeout(e.to_string()),
                _ => PluginError::Unavailable(e.to_string()),
            })?;
        let secret = secret.ok_or_else(|| {
            PluginError::Unavailable(format!("secret `{name}` is not set on this node"))
        })?;
        self.scrubber.add(&name, &secret);
        Ok(secret.expose().to_owned())
    }
}
