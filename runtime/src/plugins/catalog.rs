//! The persisted catalog: every plugin version ever installed on this node, its state
//! (installed or revoked), its package digest and signing key, and the package files
//! themselves under `DATA_DIR/plugins/packages`.

use std::path::PathBuf;

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
