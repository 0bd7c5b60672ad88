//! `PluginError`: the five failure classes of the WIT `plugin-error` variant.

use crate::bindings::capability::eyeflow::plugin::types::PluginError as WitPluginError;

/// Why a plugin call failed; the runtime maps each case to an error class that the
/// fallback engine filters on.
///
/// Build one with the constructors ([`PluginError::invalid_input`] and friends) or with
/// `?` on a [`serde_json::Error`] (see the [`From`] impl).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The input does not match what the plugin accepts; retrying will not help.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A dependency (device, remote service) is unavailable right now; retry may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The work did not finish in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The host or a remote refused the operation (grant, credentials).
    #[error("denied: {0}")]
    Denied(String),
    /// A bug or unexpected state inside the plugin.
    #[error("internal: {0}")]
    Internal(String),
}

impl PluginError {
    /// The input does not match what the plugin accepts.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// A dependency is unavailable right now; a retry may help.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }

    /// The work did not finish in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::Timeout(message.into())
    }

    /// The host or a remote refused the operation.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::Denied(message.into())
    }

    /// A bug or unexpected state inside the plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// The message carried by any case.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidInput(m)
            | Self::Unavailable(m)
            | Self::Timeout(m)
            | Self::Denied(m)
            | Self::Internal(m) => m,
        }
    }
}

/// A JSON error met while reading outside data (syntax, wrong shape, truncated) is
/// `InvalidInput`; an I/O error inside serde_json is `Internal`. Serializing the plugin's
/// own output goes through the export glue, which reports failures as `Internal`.
impl From<serde_json::Error> for PluginError {
    fn from(error: serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Io => Self::Internal(error.to_string()),
            _ => Self::InvalidInput(error.to_string()),
        }
    }
}

impl From<PluginError> for WitPluginError {
    fn from(error: PluginError) -> Self {
        match error {
            PluginError::InvalidInput(m) => Self::InvalidInput(m),
            PluginError::Unavailable(m) => Self::Unavailable(m),
            PluginError::Timeout(m) => Self::Timeout(m),
            PluginError::Denied(m) => Self::Denied(m),
            PluginError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<WitPluginError> for PluginError {
    fn from(error: WitPluginError) -> Self {
        match error {
            WitPluginError::InvalidInput(m) => Self::InvalidInput(m),
            WitPluginError::Unavailable(m) => Self::Unavailable(m),
            WitPluginError::Timeout(m) => Self::Timeout(m),
            WitPluginError::Denied(m) => Self::Denied(m),
            WitPluginError::Internal(m) => Self::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_syntax_error_is_invalid_input() {
        let error = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(matches!(
            PluginError::from(error),
            PluginError::InvalidInput(_)
        ));
    }

    #[test]
    fn round_trips_through_the_wit_variant() {
        let error = PluginError::denied("no grant");
        let wit: WitPluginError = error.clone().into();
        assert_eq!(PluginError::from(wit), error);
        assert_eq!(error.to_string(), "denied: no grant");
    }
}
