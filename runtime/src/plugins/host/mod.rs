//! The node's plugin host, [`PluginHost`]: the engine, the catalog and its live table of
//! loaded versions, and the call machinery put together. Installs, upgrades, grants and
//! revocations are in [`admin`]; the calls (read, invoke, poll, describe) in
//! [`operations`]; the [`PluginPort`](eyeflow_actors::ports::PluginPort) adapter in
//! [`port`].

mod admin;
mod operations;
mod port;

use std::sync::{Arc, Mutex};

use eyeflow_actors::ports::{CallError, CapabilityRef};
use wasmtime::Engine;

use super::cache::ComponentCache;
use super::call::Calls;
use super::catalog::{Catalog, State};
use super::engine::{CallRuntime, EpochTicker, HostConfig, engine};
use super::grants::Grant;
use super::imports::Services;
use super::loaded::{Loaded, check_imports};
use super::manifest::Kind;
use super::package::Package;
use super::table::Table;
use crate::secrets::SecretSource;
use crate::store::EmbeddedStore;
use crate::{Error, Result};

pub use admin::{Installed, PluginInfo};

struct Inner {
    catalog: Catalog,
    cache: ComponentCache,
    table: Table,
    /// Serialises installs, revocations and grant changes (calls never wait on it).
    admin: Mutex<()>,
    calls: Calls,
    /// Stops with the host (after the calls, declared before it).
    _ticker: EpochTicker,
}

/// The node's plugin host. Cheap to clone; all clones share one engine and one catalog.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

impl PluginHost {
    /// Opens the host over `store`: loads every installed, unrevoked plugin version whose
    /// signature still verifies against the store's keyring, from the precompiled cache when
    /// possible. A plugin that fails to load is reported by [`PluginHost::list`] and skipped;
    /// the host still opens.
    pub fn open(
        store: EmbeddedStore,
        secrets: Arc<dyn SecretSource>,
        config: HostConfig,
    ) -> Result<Self> {
        let engine = engine(&config)?;
        let services = Services::new(store.clone(), secrets, config.kv_durability, config.quotas)
            .map_err(|e| Error::Wasm {
            plugin: "(host)".into(),
            reason: format!("HTTP client: {e}"),
        })?;
        let ticker = EpochTicker::start(&engine, config.deadline)?;
        let cache = ComponentCache::new(store.data_dir().join("plugins").join("cache"), &engine);
        let runtime = CallRuntime::new().map_err(Error::io("(plugin call runtime)"))?;
        let host = Self {
            inner: Arc::new(Inner {
                catalog: Catalog::new(store),
                cache,
                table: Table::default(),
                admin: Mutex::new(()),
                calls: Calls::new(engine, config, Arc::new(services), runtime),
                _ticker: ticker,
            }),
        };
        host.load_catalog()?;
        Ok(host)
    }

    fn load_catalog(&self) -> Result<()> {
        let keyring = self.inner.catalog.store().keyring()?;
        // A data directory from before publisher pinning: pin each id now.
        for id in self.inner.catalog.ids()? {
            self.inner.catalog.publisher(&id)?;
        }
        for entry in self.inner.catalog.entries()? {
            if entry.state == State::Revoked {
                continue;
            }
            let label = entry.manifest.label();
            let loaded = self.inner.catalog.load_package(&entry).and_then(|package| {
                package.verify(&keyring)?;
                self.prepare(&package, &entry.key_id)
            });
            match loaded {
                Ok(loaded) => self.inner.table.publish(loaded),
                Err(e) => {
                    tracing::error!(plugin = %label, "not loaded: {e}");
                    self.inner.table.set_problem(label, e.to_string());
                }
            }
        }
        Ok(())
    }

    /// The catalog behind this host.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The wasmtime engine (one per node).
    pub fn engine(&self) -> &Engine {
        &self.inner.calls.engine
    }

    /// `id@version` of the plugin that calls for `wanted` would use now, if any.
    pub fn provider(&self, wanted: &CapabilityRef) -> Option<String> {
        self.resolve(wanted, None)
            .ok()
            .map(|loaded| loaded.label.to_string())
    }

    /// The highest installed, unrevoked version of a plugin of `kind` providing `wanted`.
    fn resolve(
        &self,
        wanted: &CapabilityRef,
        kind: Option<Kind>,
    ) -> Result<Arc<Loaded>, CallError> {
        self.inner.table.resolve(wanted, kind)
    }

    /// Compiles (or loads from the cache) and checks the component of `package`, and links
    /// it against the grant of its id.
    fn prepare(&self, package: &Package, key_id: &str) -> Result<Loaded> {
        let manifest = &package.manifest;
        let label = manifest.label();
        let (component, from_cache) = self.inner.cache.load(
            &self.inner.calls.engine,
            &label,
            package.component(),
            &package.component_digest(),
        )?;
        check_imports(&self.inner.calls.engine, manifest, &component)?;
        let grant = self
            .inner
            .catalog
            .grant(&manifest.id)?
            .unwrap_or_else(|| Grant::initial(manifest));
        Loaded::link(
            &self.inner.calls.engine,
            manifest,
            key_id.to_owned(),
            component,
            from_cache,
            &grant,
        )
    }
}
