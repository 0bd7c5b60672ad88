//! Installs, upgrades, revocations, grant changes and publisher transfers: each checked,
//! recorded durably in the catalog, and only then swapped into the live table (calls in
//! flight finish on the version and link they started with).

use semver::Version;

use eyeflow_actors::sync::Locked;

use super::PluginHost;
use crate::plugins::catalog::{Entry, State};
use crate::plugins::grants::{Grant, GrantChange};
use crate::plugins::loaded::Loaded;
use crate::plugins::package::Package;
use crate::{Error, Result};

/// A plugin version as `list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// The catalog entry.
    pub entry: Entry,
    /// Whether it is loaded and runnable now (false for revoked ones, and with the reason
    /// for those that failed to load or link).
    pub runnable: std::result::Result<(), String>,
    /// The grant of its id.
    pub grant: Grant,
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// A new version was installed (and, when newer, now serves new calls).
    New {
        /// `id@version`.
        label: String,
        /// Signing key id.
        key_id: String,
    },
    /// The identical package was already installed.
    Unchanged {
        /// `id@version`.
        label: String,
    },
}

impl PluginHost {
    /// Installs a package: verifies its signature against the store's keyring, refuses
    /// revoked versions and conflicting content, compiles (or loads from the cache) and checks
    /// the component against its manifest, records it durably, and only then makes it visible
    /// to new calls. Calls already running keep their instance.
    pub fn install(&self, package: &Package) -> Result<Installed> {
        let _admin = self.inner.admin.locked();
        let label = package.label();
        let keyring = self.inner.catalog.store().keyring()?;
        let key_id = package.verify(&keyring)?;
        let manifest = &package.manifest;
        let publisher = self.inner.catalog.publisher(&manifest.id)?;
        if let Some(pinned) = &publisher
            && pinned.key_id != key_id
        {
            return Err(Error::PublisherChanged {
                plugin: label,
                id: manifest.id.clone(),
                pinned: pinned.key_id.clone(),
                offered: key_id,
            });
        }
        if let Some(existing) = self.inner.catalog.entry(&manifest.id, &manifest.version)? {
            if existing.state == State::Revoked {
                return Err(Error::RevokedPlugin { plugin: label });
            }
            if existing.digest != hex::encode(package.digest()) {
                return Err(Error::VersionConflict { plugin: label });
            }
            if self.inner.table.contains(&manifest.id, &manifest.version) {
                return Ok(Installed::Unchanged { label });
            }
        }
        if self.inner.catalog.grant(&manifest.id)?.is_none() {
            self.inner
                .catalog
                .set_grant(&manifest.id, &Grant::initial(manifest))?;
        }
        let loaded = self.prepare(package, &key_id)?;
        self.inner.catalog.record(package, &key_id)?;
        if publisher.is_none() {
            self.inner.catalog.pin(&manifest.id, &key_id)?;
        }
        self.inner.table.clear_problem(&label);
        self.inner.table.publish(loaded);
        tracing::info!(plugin = %label, key = %key_id, "plugin installed");
        Ok(Installed::New { label, key_id })
    }

    /// Revokes `id@version`: durably marked, removed from resolution at once; calls in
    /// flight finish. A revoked version is never chosen or reinstalled.
    pub fn revoke(&self, id: &str, version: &Version) -> Result<()> {
        let _admin = self.inner.admin.locked();
        self.inner.catalog.revoke(id, version)?;
        self.inner.table.remove(id, version);
        tracing::warn!(plugin = %format!("{id}@{version}"), "plugin revoked");
        Ok(())
    }

    /// Changes the grant of plugin `id` and relinks its loaded versions; the next call sees
    /// the new grant.
    pub fn change_grant(&self, id: &str, changes: &[GrantChange]) -> Result<Grant> {
        let _admin = self.inner.admin.locked();
        // No grant after a transfer: start from what the newest loaded version's manifest
        // asks for, as its installation would have.
        if self.inner.catalog.grant(id)?.is_none()
            && let Some(newest) = self.inner.table.newest(id)
        {
            self.inner
                .catalog
                .set_grant(id, &Grant::initial(&newest.manifest))?;
        }
        let grant = self.inner.catalog.change_grant(id, changes)?;
        self.relink(id, |_| grant.clone())?;
        Ok(grant)
    }

    /// Moves plugin `id` to the publisher key `to_key` (trusted, not revoked): from now on
    /// only packages signed by it install under `id`, and those of the previous key are
    /// refused. The grant of `id` is cleared (the next installed version starts from the
    /// initial grant of its manifest; loaded versions are relinked without HTTP hosts or
    /// secrets), and the transfer is appended to `audit` in the same atomic write as the
    /// new pin, made durable before this returns.
    pub fn transfer(
        &self,
        id: &str,
        to_key: &str,
        audit: &crate::audit::FjallAudit,
    ) -> Result<crate::plugins::catalog::Transfer> {
        let _admin = self.inner.admin.locked();
        let catalog = &self.inner.catalog;
        let from = catalog
            .publisher(id)?
            .ok_or_else(|| Error::NotInstalled {
                plugin: id.to_owned(),
            })?
            .key_id;
        match catalog.store().keyring()?.key(to_key) {
            eyeflow_ir::keys::KeyState::Active(_) => {}
            eyeflow_ir::keys::KeyState::Revoked => {
                return Err(Error::RevokedKey {
                    plugin: id.to_owned(),
                    key_id: to_key.to_owned(),
                });
            }
            eyeflow_ir::keys::KeyState::Unknown => {
                return Err(Error::UnknownKey {
                    plugin: id.to_owned(),
                    key_id: to_key.to_owned(),
                });
            }
        }
        if from == to_key {
            return Err(Error::Conflict {
                what: format!("transfer of plugin {id}"),
                reason: format!("it is already published by key {to_key}"),
            });
        }
        let transfer = crate::plugins::catalog::Transfer {
            id: id.to_owned(),
            from,
            to: to_key.to_owned(),
        };
        let now = crate::now_ms();
        let publisher = crate::plugins::catalog::Publisher {
            key_id: transfer.to.clone(),
            pinned_by: crate::plugins::catalog::PinnedBy::Transfer,
            pinned_at_ms: now,
        };
        let pin = serde_json::to_vec(&publisher).map_err(|e| Error::CorruptRecord {
            key: id.to_owned(),
            reason: e.to_string(),
        })?;
        audit.append_with(
            &[transfer.audit_entry(now)],
            vec![
                crate::store::Write::Put(
                    crate::store::Space::Publishers,
                    id.as_bytes().to_vec(),
                    pin,
                ),
                crate::store::Write::Remove(crate::store::Space::Grants, id.as_bytes().to_vec()),
            ],
        )?;
        catalog.store().persist(crate::store::Durability::Sync)?;
        self.relink(id, |loaded| Grant::initial(&loaded.manifest))?;
        tracing::warn!(plugin = %id, from = %transfer.from, to = %transfer.to, "plugin publisher transferred; grant cleared");
        Ok(transfer)
    }

    /// Every catalogued version with its state.
    pub fn list(&self) -> Result<Vec<PluginInfo>> {
        let mut out = Vec::new();
        for entry in self.inner.catalog.entries()? {
            let runnable = self.inner.table.runnable(&entry);
            let grant = self
                .inner
                .catalog
                .grant(&entry.manifest.id)?
                .unwrap_or_default();
            out.push(PluginInfo {
                entry,
                runnable,
                grant,
            });
        }
        Ok(out)
    }

    /// Number of plugin versions loaded and how many of them came from the precompiled cache.
    pub fn loaded_counts(&self) -> (usize, usize) {
        self.inner.table.counts()
    }

    /// Links every loaded version of plugin `id` again with the grant `grant_for` gives it
    /// (calls in flight finish on the old link).
    fn relink(&self, id: &str, grant_for: impl Fn(&Loaded) -> Grant) -> Result<()> {
        for loaded in self.inner.table.versions(id) {
            let relinked = Loaded::link(
                &self.inner.calls.engine,
                &loaded.manifest,
                loaded.key_id.clone(),
                loaded.component.clone(),
                loaded.from_cache,
                &grant_for(&loaded),
            )?;
            self.inner.table.publish(relinked);
        }
        Ok(())
    }
}
