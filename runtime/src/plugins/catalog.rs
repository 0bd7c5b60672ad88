//! The persisted catalog: every plugin version ever installed on this node, its state
//! (installed or revoked), its package digest and signing key, and the package files
//! themselves under `DATA_DIR/plugins/packages`, and the publisher key pinned for each id
//! (see [`Publisher`]).

use std::path::PathBuf;

use eyeflow_actors::ports::AuditEntry;
use semver::Version;
use serde::{Deserialize, Serialize};

use super::grants::{Grant, GrantChange};
use super::manifest::Manifest;
use super::package::Package;
use crate::store::{EmbeddedStore, Space};
use crate::{Error, Result};

/// Whether a catalogued version may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Usable.
    Installed,
    /// Never chosen again, never reinstalled.
    Revoked,
}

/// One catalogued plugin version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The manifest as signed.
    pub manifest: Manifest,
    /// Hex SHA-256 of the signed package content.
    pub digest: String,
    /// Id of the key that signed it.
    pub key_id: String,
    /// Installed or revoked.
    pub state: State,
    /// When it was installed, Unix milliseconds.
    pub installed_at_ms: u64,
}

/// The publisher key pinned for a plugin id: only packages signed by it install under that
/// id until an admin transfers the id to another key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    /// Id of the pinned key.
    pub key_id: String,
    /// How it was pinned.
    pub pinned_by: PinnedBy,
    /// When, Unix milliseconds.
    pub pinned_at_ms: u64,
}

/// How a publisher key came to be pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinnedBy {
    /// The first installed version of the id was signed by it.
    Install,
    /// A data directory from before pinning: the key of the newest catalogued version.
    Catalog,
    /// An admin transferred the id to it.
    Transfer,
}

/// A publisher transfer an admin made: plugin `id` moved from key `from` to key `to`, its
/// grant cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// The plugin id.
    pub id: String,
    /// The key pinned before.
    pub from: String,
    /// The key pinned now.
    pub to: String,
}

impl Transfer {
    /// Its audit entry: opcode `PLUGIN_TRANSFER`, instruction id the plugin id, input the
    /// digest of `{"from", "to"}`, output the digest of the new pin and the cleared grant.
    /// An operator action, not an execution's step: node, execution and program are empty.
    pub fn audit_entry(&self, at_ms: u64) -> AuditEntry {
        crate::audit::operator_entry(
            "PLUGIN_TRANSFER",
            &self.id,
            &serde_json::json!({ "from": self.from, "to": self.to }),
            &serde_json::json!({ "key_id": self.to, "grant": null }),
            at_ms,
        )
    }
}

/// The catalog over the embedded store.
#[derive(Clone)]
pub struct Catalog {
    store: EmbeddedStore,
}

fn entry_key(id: &str, version: &Version) -> String {
    format!("{id}\0{version}")
}

impl Catalog {
    /// The catalog kept in `store`.
    pub fn new(store: EmbeddedStore) -> Self {
        Self { store }
    }

    /// The store under the catalog.
    pub fn store(&self) -> &EmbeddedStore {
        &self.store
    }

    fn package_dir(&self) -> PathBuf {
        self.store.data_dir().join("plugins").join("packages")
    }

    /// Path of the stored package file of `id@version`.
    pub fn package_path(&self, id: &str, version: &Version) -> PathBuf {
        self.package_dir().join(format!("{id}@{version}.efp"))
    }

    /// Every catalogued version, by id then version.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = self.store.scan_json(Space::Catalog, "")?;
        entries.sort_by(|a, b| {
            (&a.manifest.id, &a.manifest.version).cmp(&(&b.manifest.id, &b.manifest.version))
        });
        Ok(entries)
    }

    /// One catalogued version.
    pub fn entry(&self, id: &str, version: &Version) -> Result<Option<Entry>> {
        self.store.get_json(Space::Catalog, &entry_key(id, version))
    }

    /// Records an installed package (its file first, then the entry, both durable).
    pub fn record(&self, package: &Package, key_id: &str) -> Result<Entry> {
        let manifest = &package.manifest;
        let dir = self.package_dir();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let path = self.package_path(&manifest.id, &manifest.version);
        let tmp = path.with_extension("efp.tmp");
        package.write(&tmp)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        let entry = Entry {
            manifest: manifest.clone(),
            digest: hex::encode(package.digest()),
            key_id: key_id.to_owned(),
            state: State::Installed,
            installed_at_ms: crate::now_ms(),
        };
        self.store.put_json(
            Space::Catalog,
            &entry_key(&manifest.id, &manifest.version),
            &entry,
        )?;
        Ok(entry)
    }

    /// Marks `id@version` revoked (durably) and returns the entry.
    pub fn revoke(&self, id: &str, version: &Version) -> Result<Entry> {
        let mut entry = self
            .entry(id, version)?
            .ok_or_else(|| Error::NotInstalled {
                plugin: format!("{id}@{version}"),
            })?;
        entry.state = State::Revoked;
        self.store
            .put_json(Space::Catalog, &entry_key(id, version), &entry)?;
        Ok(entry)
    }

    /// The stored package of an entry, checked against the digest recorded at install.
    pub fn load_package(&self, entry: &Entry) -> Result<Package> {
        let path = self.package_path(&entry.manifest.id, &entry.manifest.version);
        let package = Package::read(&path)?;
        if hex::encode(package.digest()) != entry.digest {
            return Err(Error::BadPackage {
                what: path.display().to_string(),
                reason: format!(
                    "content changed since installation (digest {} expected)",
                    entry.digest
                ),
            });
        }
        Ok(package)
    }

    /// The publisher pinned for `id`. A data directory from before pinning has versions but
    /// no pin: the key of the newest catalogued version (unrevoked if any) is pinned then,
    /// durably. `None` when no version of `id` was ever catalogued.
    pub fn publisher(&self, id: &str) -> Result<Option<Publisher>> {
        if let Some(publisher) = self.store.get_json(Space::Publishers, id)? {
            return Ok(Some(publisher));
        }
        let versions: Vec<Entry> = self.store.scan_json(Space::Catalog, &format!("{id}\0"))?;
        let newest = |state: Option<State>| {
            versions
                .iter()
                .filter(|e| e.manifest.id == id && state.is_none_or(|s| e.state == s))
                .max_by(|a, b| a.manifest.version.cmp(&b.manifest.version))
        };
        let Some(entry) = newest(Some(State::Installed)).or_else(|| newest(None)) else {
            return Ok(None);
        };
        let publisher = Publisher {
            key_id: entry.key_id.clone(),
            pinned_by: PinnedBy::Catalog,
            pinned_at_ms: crate::now_ms(),
        };
        self.store.put_json(Space::Publishers, id, &publisher)?;
        tracing::info!(plugin = %id, key = %publisher.key_id, "publisher pinned from the catalog");
        Ok(Some(publisher))
    }

    /// Pins `key_id` as the publisher of `id` at its first install.
    pub fn pin(&self, id: &str, key_id: &str) -> Result<Publisher> {
        let publisher = Publisher {
            key_id: key_id.to_owned(),
            pinned_by: PinnedBy::Install,
            pinned_at_ms: crate::now_ms(),
        };
        self.store.put_json(Space::Publishers, id, &publisher)?;
        Ok(publisher)
    }

    /// Every catalogued plugin id, sorted, each once (from the entries' keys, without
    /// reading their manifests).
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .store
            .scan(Space::Catalog, b"")?
            .into_iter()
            .filter_map(|(key, _)| {
                let id = key.split(|b| *b == 0).next()?;
                String::from_utf8(id.to_vec()).ok()
            })
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// The grant of plugin `id`, if any.
    pub fn grant(&self, id: &str) -> Result<Option<Grant>> {
        self.store.get_json(Space::Grants, id)
    }

    /// Stores the grant of plugin `id`.
    pub fn set_grant(&self, id: &str, grant: &Grant) -> Result<()> {
        self.store.put_json(Space::Grants, id, grant)
    }

    /// Applies `changes` to the grant of `id` (creating it) and returns the new grant.
    pub fn change_grant(&self, id: &str, changes: &[GrantChange]) -> Result<Grant> {
        let mut grant = self.grant(id)?.unwrap_or_default();
        for change in changes {
            grant.apply(change);
        }
        self.set_grant(id, &grant)?;
        Ok(grant)
    }
}
