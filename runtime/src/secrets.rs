//! Secrets: the [`SecretSource`] the plugin host and (later) the SVM read named secrets
//! from, and its embedded default, a local JSON file readable only by its owner. Values are
//! wrapped in [`Secret`], whose `Debug` and `Display` never show them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::{Error, Result};

/// A secret value. Formatting it prints `***`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: hand it only to the party that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where named secrets come from.
pub trait SecretSource: Send + Sync {
    /// The secret `name`, if the source holds it.
    fn get(&self, name: &str) -> Option<Secret>;
}

/// The embedded default: secrets loaded from `DATA_DIR/secrets.json` (`{"name": "value"}`),
/// or given in memory.
#[derive(Default)]
pub struct LocalSecrets {
    values: BTreeMap<String, Secret>,
}

impl LocalSecrets {
    /// Secrets from memory.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), Secret::new(v)))
                .collect(),
        }
    }

    /// Loads `path` when it exists (no file = no secrets). The file must be a JSON object of
    /// strings.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path)(e)),
        };
        let values: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|e| Error::CorruptRecord {
                key: path.display().to_string(),
                // serde_json's message names the position, never the value.
                reason: format!("expected a JSON object of strings: {e}"),
            })?;
        Ok(Self::from_pairs(values))
    }
}

impl SecretSource for LocalSecrets {
    fn get(&self, name: &str) -> Option<Secret> {
        self.values.get(name).cloned()
    }
}

impl fmt::Debug for LocalSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSecrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let secrets = LocalSecrets::from_pairs([("token", "hunter2")]);
        let secret = secrets.get("token").expect("present");
        assert_eq!(secret.expose(), "hunter2");
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secrets:?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
