//! The embedded secrets source: a local JSON file readable only by its owner, behind the
//! [`SecretSource`] port. Values are wrapped in [`Secret`], whose `Debug` and `Display`
//! never show them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use eyeflow_actors::ports::SecretError;
pub use eyeflow_actors::ports::{Secret, SecretSource};

use crate::{Error, Result};

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

#[async_trait::async_trait]
impl SecretSource for LocalSecrets {
    async fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(self.values.get(name).cloned())
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
        let secret = crate::blocking::wait(secrets.get("token"))
            .expect("a local read does not fail")
            .expect("present");
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
