//! The embedded store: one fjall database under the node's data directory, one keyspace per
//! concern. Writes that acknowledge something to a caller are persisted with `SyncData`
//! before the call returns.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use eyeflow_ir::Keyring;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Names of the keyspaces, one per concern.
const KEYSPACES: [&str; 4] = ["catalog", "grants", "keyring", "plugin-kv"];

/// The node's embedded database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Database,
    root: PathBuf,
    catalog: Keyspace,
    grants: Keyspace,
    keyring: Keyspace,
    plugin_kv: Keyspace,
}

/// One keyspace of the store, by concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Installed plugin versions (id, version, state).
    Catalog,
    /// Operator grants per plugin id.
    Grants,
    /// Trusted and revoked publisher keys.
    Keyring,
    /// Plugins' scratch key-value data.
    PluginKv,
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `data_dir/store`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(Error::io(data_dir))?;
        let path = data_dir.join("store");
        let db = Database::builder(&path)
            .open()
            .map_err(Error::store(format!("open {}", path.display())))?;
        let open = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(Error::store(format!("open keyspace {name}")))
        };
        let [catalog, grants, keyring, plugin_kv] = KEYSPACES.map(open);
        Ok(Self {
            catalog: catalog?,
            grants: grants?,
            keyring: keyring?,
            plugin_kv: plugin_kv?,
            db,
            root: data_dir.to_path_buf(),
        })
    }

    /// The data directory this store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    fn space(&self, space: Space) -> &Keyspace {
        match space {
            Space::Catalog => &self.catalog,
            Space::Grants => &self.grants,
            Space::Keyring => &self.keyring,
            Space::PluginKv => &self.plugin_kv,
        }
    }

    /// Raw value under `key`.
    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .space(space)
            .get(key)
            .map_err(Error::store(format!("read {space:?}")))?
            .map(|v| v.to_vec()))
    }

    /// Stores `value` under `key` and persists it durably before returning.
    pub fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<()> {
        self.space(space)
            .insert(key, value)
            .map_err(Error::store(format!("write {space:?}")))?;
        self.sync()
    }

    /// Removes `key` (durably).
    pub fn remove(&self, space: Space, key: &[u8]) -> Result<()> {
        self.space(space)
            .remove(key)
            .map_err(Error::store(format!("delete {space:?}")))?;
        self.sync()
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan(&self, space: Space, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.space(space)
            .prefix(prefix)
            .map(|guard| {
                let (k, v) = guard
                    .into_inner()
                    .map_err(Error::store(format!("scan {space:?}")))?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// A JSON record under `key`.
    pub fn get_json<T: DeserializeOwned>(&self, space: Space, key: &str) -> Result<Option<T>> {
        self.get(space, key.as_bytes())?
            .map(|bytes| decode_json(key, &bytes))
            .transpose()
    }

    /// Stores a JSON record under `key` durably.
    pub fn put_json<T: Serialize>(&self, space: Space, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::CorruptRecord {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        self.put(space, key.as_bytes(), &bytes)
    }

    /// Every JSON record whose key starts with `prefix`.
    pub fn scan_json<T: DeserializeOwned>(&self, space: Space, prefix: &str) -> Result<Vec<T>> {
        self.scan(space, prefix.as_bytes())?
            .into_iter()
            .map(|(k, v)| decode_json(&String::from_utf8_lossy(&k), &v))
            .collect()
    }

    fn sync(&self) -> Result<()> {
        self.db
            .persist(PersistMode::SyncData)
            .map_err(Error::store("persist"))
    }

    /// The keyring persisted in this store.
    pub fn keyring(&self) -> Result<Keyring> {
        let mut keyring = Keyring::new();
        for (id, value) in self.scan(Space::Keyring, b"")? {
            let id = String::from_utf8_lossy(&id).into_owned();
            let corrupt = |reason: &str| Error::CorruptRecord {
                key: format!("keyring/{id}"),
                reason: reason.to_owned(),
            };
            let (key, revoked) = value
                .split_at_checked(32)
                .ok_or_else(|| corrupt("short record"))?;
            let key = <[u8; 32]>::try_from(key).map_err(|_| corrupt("bad key length"))?;
            let key = VerifyingKey::from_bytes(&key).map_err(|_| corrupt("not an Ed25519 key"))?;
            keyring.trust(key);
            if revoked.first() == Some(&1) {
                keyring.revoke(&id);
            }
        }
        Ok(keyring)
    }

    /// Adds `key` to the persisted keyring and returns its id (a revoked key stays revoked).
    pub fn trust_key(&self, key: &VerifyingKey) -> Result<String> {
        let id = eyeflow_ir::keys::key_id(key);
        if self.get(Space::Keyring, id.as_bytes())?.is_none() {
            let mut record = key.to_bytes().to_vec();
            record.push(0);
            self.put(Space::Keyring, id.as_bytes(), &record)?;
        }
        Ok(id)
    }

    /// Marks key `id` revoked; returns false when the keyring does not hold it.
    pub fn revoke_key(&self, id: &str) -> Result<bool> {
        let Some(mut record) = self.get(Space::Keyring, id.as_bytes())? else {
            return Ok(false);
        };
        record.truncate(32);
        record.push(1);
        self.put(Space::Keyring, id.as_bytes(), &record)?;
        Ok(true)
    }
}

fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptRecord {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
