//! The live table of runnable plugin versions, which installs, upgrades, grant changes and
//! revocations swap while calls run (a call holds its version's `Arc` until it ends), and
//! the reasons the versions that could not be loaded were left out.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use eyeflow_actors::ports::{CallError, CallErrorKind, CapabilityRef};
use semver::Version;

use super::catalog::{Entry, State};
use super::loaded::Loaded;
use super::manifest::Kind;
use eyeflow_actors::sync::RwLocked;

/// Loaded versions by plugin id, and why the others are not loaded.
#[derive(Default)]
pub(super) struct Table {
    live: RwLock<BTreeMap<String, BTreeMap<Version, Arc<Loaded>>>>,
    problems: RwLock<BTreeMap<String, String>>,
}

impl Table {
    /// Makes `loaded` serve new calls (replacing the same version, as a relink does).
    pub(super) fn publish(&self, loaded: Loaded) {
        let id = loaded.manifest.id.clone();
        let version = loaded.manifest.version.clone();
        write(&self.live)
            .entry(id)
            .or_default()
            .insert(version, Arc::new(loaded));
    }

    /// Takes `id@version` out of resolution (calls in flight keep it).
    pub(super) fn remove(&self, id: &str, version: &Version) {
        if let Some(versions) = write(&self.live).get_mut(id) {
            versions.remove(version);
        }
    }

    /// Whether `id@version` is loaded.
    pub(super) fn contains(&self, id: &str, version: &Version) -> bool {
        read(&self.live)
            .get(id)
            .is_some_and(|versions| versions.contains_key(version))
    }

    /// The loaded versions of `id`, oldest first.
    pub(super) fn versions(&self, id: &str) -> Vec<Arc<Loaded>> {
        read(&self.live)
            .get(id)
            .map(|versions| versions.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest loaded version of `id`.
    pub(super) fn newest(&self, id: &str) -> Option<Arc<Loaded>> {
        read(&self.live)
            .get(id)
            .and_then(|versions| versions.values().next_back().cloned())
    }

    /// Records why `label` is not loaded.
    pub(super) fn set_problem(&self, label: String, problem: String) {
        write(&self.problems).insert(label, problem);
    }

    /// Forgets why `label` was not loaded (it is now).
    pub(super) fn clear_problem(&self, label: &str) {
        write(&self.problems).remove(label);
    }

    /// Whether the version of catalog entry `entry` can run now, or why not.
    pub(super) fn runnable(&self, entry: &Entry) -> Result<(), String> {
        let manifest = &entry.manifest;
        match read(&self.live)
            .get(&manifest.id)
            .and_then(|versions| versions.get(&manifest.version))
        {
            Some(loaded) => loaded.pre.as_ref().map(|_| ()).map_err(Clone::clone),
            None if entry.state == State::Revoked => Err("revoked".to_owned()),
            None => Err(read(&self.problems)
                .get(&manifest.label())
                .cloned()
                .unwrap_or_else(|| "not loaded".to_owned())),
        }
    }

    /// Number of versions loaded and how many of them came from the precompiled cache.
    pub(super) fn counts(&self) -> (usize, usize) {
        let live = read(&self.live);
        let all = live.values().flat_map(|v| v.values());
        all.fold((0, 0), |(t, c), l| (t + 1, c + usize::from(l.from_cache)))
    }

    /// The highest loaded version of a plugin of `kind` providing `wanted`.
    pub(super) fn resolve(
        &self,
        wanted: &CapabilityRef,
        kind: Option<Kind>,
    ) -> Result<Arc<Loaded>, CallError> {
        let live = read(&self.live);
        live.values()
            .flat_map(|versions| versions.values())
            .filter(|loaded| kind.is_none_or(|kind| loaded.manifest.kind == kind))
            .filter_map(|loaded| {
                let provided = loaded
                    .manifest
                    .provides_matching(&wanted.id, &wanted.version)?;
                Some(((provided.clone(), loaded.manifest.version.clone()), loaded))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, loaded)| loaded.clone())
            .ok_or_else(|| {
                CallError::new(
                    CallErrorKind::NotFound,
                    wanted.to_string(),
                    format!(
                        "no installed {} provides {wanted}",
                        kind.map_or("plugin", |k| if k == Kind::Connector {
                            "connector"
                        } else {
                            "capability"
                        })
                    ),
                )
            })
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.reading()
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.writing()
}
