//! Named secrets granted by the operator (`eyeflow:plugin/secrets` import). Declare
//! `"secrets"` in the manifest's `imports`; never log or return a secret's value.

use crate::PluginError;
use crate::bindings::capability::eyeflow::plugin::secrets as wit;

/// The value of secret `name`; `Denied` when the operator did not grant that name.
pub fn get(name: &str) -> Result<String, PluginError> {
    wit::get(name).map_err(PluginError::from)
}
