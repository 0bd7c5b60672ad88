//! The deployed program versions: the one table every part of the node reads them from
//! (event routing, lookups by id and version, listings, the registry's restarts). The
//! program registry actor is its only writer: a version is in the table once its program
//! actor runs, and leaves it when it is undeployed.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::exec::Program;
use crate::sync::RwLocked;

type Versions = BTreeMap<semver::Version, Arc<Program>>;

/// The deployed program versions, by id then version.
#[derive(Default)]
pub struct Deployed {
    table: RwLock<BTreeMap<String, Versions>>,
}

/// A program's version as the table orders it (an unparsable one sorts first; the IR's
/// validation refuses those before deploy).
pub(crate) fn version_of(program: &Program) -> semver::Version {
    semver::Version::parse(program.version()).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

impl Deployed {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Program `id` at `version`, or its highest (active) version when `None`.
    pub fn get(&self, id: &str, version: Option<&str>) -> Option<Arc<Program>> {
        let table = self.table.reading();
        let versions = table.get(id)?;
        match version {
            Some(want) => versions
                .iter()
                .find(|(v, _)| v.to_string() == want)
                .map(|(_, p)| p.clone()),
            None => versions.values().next_back().cloned(),
        }
    }

    /// The highest (active) version of every deployed program.
    pub fn active(&self) -> Vec<Arc<Program>> {
        self.table
            .reading()
            .values()
            .filter_map(|versions| versions.values().next_back().cloned())
            .collect()
    }

    /// Every deployed version, by id then version.
    pub fn all(&self) -> Vec<Arc<Program>> {
        self.table
            .reading()
            .values()
            .flat_map(|versions| versions.values().cloned())
            .collect()
    }

    pub(crate) fn insert(&self, program: Arc<Program>) {
        self.table
            .writing()
            .entry(program.id().to_owned())
            .or_default()
            .insert(version_of(&program), program);
    }

    /// Removes `id` (one version, or every version when `None`); returns the removed
    /// versions.
    pub(crate) fn remove(&self, id: &str, version: Option<&str>) -> Vec<semver::Version> {
        let mut table = self.table.writing();
        let Some(versions) = table.get_mut(id) else {
            return Vec::new();
        };
        let gone: Vec<semver::Version> = versions
            .keys()
            .filter(|v| version.is_none_or(|want| v.to_string() == want))
            .cloned()
            .collect();
        for v in &gone {
            versions.remove(v);
        }
        if versions.is_empty() {
            table.remove(id);
        }
        gone
    }
}
