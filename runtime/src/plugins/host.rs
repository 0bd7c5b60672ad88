//! The wasmtime plugin host: one engine per node, a pooling allocator, a fresh sandboxed
//! instance per call with a deadline and a memory limit, and the live table of installed
//! plugin versions that installs, upgrades and revocations swap while calls run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eyeflow_actors::exec::Scrubber;
use eyeflow_actors::ports::{CallError, CallErrorKind, CapabilityRef, OnResume, PluginPort};
use semver::Version;
use serde_json::Value;
use wasmtime::component::{
    Component, ComponentExportIndex, InstancePre, Linker, types::ComponentItem,
};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use super::cache::ComponentCache;
use super::catalog::{Catalog, Entry, State};
use super::grants::{Grant, GrantChange};
use super::imports::bindings::exports::eyeflow::plugin::source::Batch;
use super::imports::bindings::eyeflow::plugin::types::PluginError;
use super::imports::{CallLimits, CallState, Quotas, Services, link};

use super::manifest::{HOST_WIT_VERSION, Import, Kind, Manifest};
use super::package::Package;
use crate::secrets::SecretSource;
use crate::store::EmbeddedStore;
use crate::{Error, Result};

/// How a call's deadline is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineMode {
    /// Epoch interruption: a node-wide ticker advances the epoch every millisecond; a call
    /// traps at the first check after its deadline. The default.
    Epoch,
    /// Fuel metering: deterministic, `units_per_ms` instructions-ish per millisecond of
    /// deadline. Costlier per instruction than epochs.
    Fuel {
        /// Fuel granted per millisecond of deadline.
        units_per_ms: u64,
    },
    /// No guest deadline (host imports still honour it). Only for measuring the cost of
    /// the other modes: a runaway plugin would hold its thread forever.
    Unbounded,
}

/// Host limits and policies.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Largest linear memory of one call, in bytes.
    pub memory_limit: usize,
    /// Largest table of one call, in elements.
    pub table_elements: usize,
    /// Instances that may run at the same time (size of the pool).
    pub max_concurrent_calls: u32,
    /// Guest stack limit, in bytes.
    pub max_wasm_stack: usize,
    /// Deadline enforcement.
    pub deadline: DeadlineMode,
    /// Durability of the plugins' scratch KV writes. Those of a `read`, `poll` or
    /// `describe` call are made durable before the call returns; those of an `invoke` by the
    /// execution's next durable journal write (the next effect's intent, a pause or the
    /// end; the store's journal is one log, so that write covers the KV writes before it:
    /// a crash loses them only together with the CALL_ACTION's result, and the resume
    /// re-issues it under the same key). A `set-if-absent` batch is made durable with it
    /// before the import returns, whatever the call.
    pub kv_durability: crate::store::Durability,
    /// Calls of one plugin that may run at once (the node sets it below its worker count,
    /// so that one plugin's calls cannot take every worker).
    pub max_calls_per_plugin: usize,
    /// Per-plugin quotas: KV keys and bytes, log bytes.
    pub quotas: Quotas,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            memory_limit: 64 * 1024 * 1024,
            table_elements: 20_000,
            max_concurrent_calls: 64,
            max_wasm_stack: 512 * 1024,
            deadline: DeadlineMode::Epoch,
            kv_durability: crate::store::Durability::GroupCommit,
            max_calls_per_plugin: 32,
            quotas: Quotas::default(),
        }
    }
}

/// How many calls of each plugin run now, bounded per plugin.
struct Slots {
    limit: usize,
    held: std::sync::Mutex<std::collections::HashMap<Arc<str>, usize>>,
    /// Calls waiting for a slot wait here (as tasks).
    freed: tokio::sync::Notify,
}

/// A running call's slot, given back on drop.
struct Slot<'a> {
    slots: &'a Slots,
    plugin: Arc<str>,
}

impl Slots {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            held: std::sync::Mutex::default(),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// A slot for a call of `plugin`, waiting until `until` at most for one to free.
    async fn acquire(&self, plugin: &Arc<str>, until: Instant) -> Option<Slot<'_>> {
        loop {
            // Registered before looking, so a slot freed in between wakes this call.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut held = self
                    .held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let running = held.entry(plugin.clone()).or_insert(0);
                if *running < self.limit {
                    *running += 1;
                    return Some(Slot {
                        slots: self,
                        plugin: plugin.clone(),
                    });
                }
            }
            if Instant::now() >= until {
                return None;
            }
            let _ = tokio::time::timeout_at(until.into(), freed).await;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = held.get_mut(&self.plugin) {
            *running = running.saturating_sub(1);
        }
        drop(held);
        self.slots.freed.notify_waiters();
    }
}

/// Bytes of each pooled memory and table kept resident between calls, when the kernel can
/// tell which pages a call dirtied (Linux 6.7+, `PAGEMAP_SCAN`). A guest's memory starts
/// with its stack (64 KiB in the bundled plugins), then its data and heap, which a call
/// touches too. Within this bound wasmtime then resets only the dirtied pages; beyond it, it
/// returns pages with madvise, which costs a TLB shootdown across the node's threads and
/// page faults on the next call (with 64 KiB: 13 faults and one madvise per execution of
/// the bench program; with 4 MiB: 3 faults, no madvise).
const KEEP_RESIDENT: usize = 4 * 1024 * 1024;

/// The same without `PAGEMAP_SCAN`, where wasmtime zeroes the whole kept region each call.
const KEEP_RESIDENT_WITHOUT_PAGEMAP: usize = 64 * 1024;

/// [`KEEP_RESIDENT`] on Linux 6.7 and later, else [`KEEP_RESIDENT_WITHOUT_PAGEMAP`].
fn keep_resident() -> usize {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= (6, 7) {
        KEEP_RESIDENT
    } else {
        KEEP_RESIDENT_WITHOUT_PAGEMAP
    }
}

/// Epoch tick period.
const TICK: Duration = Duration::from_millis(1);

/// What a call that returned leaves besides its result.
struct Finished {
    /// The secrets it read, to take out of what it returned.
    scrubber: Scrubber,
    /// Whether a KV write was refused for the plugin's quota.
    over_quota: bool,
}

/// Who makes a call's plugin KV writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KvWrites {
    /// The host, before the call returns.
    Persist,
    /// The executor's durable journal write of the CALL_ACTION step that made the call.
    LeftToJournal,
}

/// Where a plugin's entry points are in its component.
#[derive(Debug, Clone)]
enum Entrypoints {
    Capability {
        describe: ComponentExportIndex,
        invoke: ComponentExportIndex,
    },
    Connector {
        describe: ComponentExportIndex,
        read: ComponentExportIndex,
        poll: Option<ComponentExportIndex>,
    },
}

/// One runnable plugin version: compiled, linked against its grant, schemas compiled.
struct Loaded {
    manifest: Manifest,
    label: Arc<str>,
    id: Arc<str>,
    key_id: String,
    component: Component,
    entrypoints: Entrypoints,
    grant: Arc<Grant>,
    /// Linked instance template, or why the plugin cannot run under its current grant.
    pre: std::result::Result<InstancePre<CallState>, String>,
    schemas: BTreeMap<String, (jsonschema::Validator, jsonschema::Validator)>,
    from_cache: bool,
}

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

struct Inner {
    engine: Engine,
    config: HostConfig,
    catalog: Catalog,
    cache: ComponentCache,
    services: Arc<Services>,
    live: RwLock<BTreeMap<String, BTreeMap<Version, Arc<Loaded>>>>,
    problems: RwLock<BTreeMap<String, String>>,
    /// Serialises installs, revocations and grant changes (calls never wait on it).
    admin: std::sync::Mutex<()>,
    stop: Arc<AtomicBool>,
    ticker: std::sync::Mutex<Option<JoinHandle<()>>>,
    runtime: CallRuntime,
    slots: Slots,
}

/// The runtime the calls run on (asynchronous WASI, deadline timers). Shut down in the
/// background when the host goes: a runtime dropped from an async context would panic.
struct CallRuntime(Option<tokio::runtime::Runtime>);

impl CallRuntime {
    fn new() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("eyeflow-plugin-io")
            .enable_all()
            .build()
            .map(|runtime| Self(Some(runtime)))
    }

    /// Runs `future` to its end on the calling thread (`None` once shut down).
    fn block_on<F: std::future::Future>(&self, future: F) -> Option<F::Output> {
        self.0.as_ref().map(|runtime| runtime.block_on(future))
    }
}

impl Drop for CallRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut ticker) = self.ticker.lock()
            && let Some(handle) = ticker.take()
        {
            let _ = handle.join();
        }
    }
}

/// The node's plugin host. Cheap to clone; all clones share one engine and one catalog.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

fn engine(config: &HostConfig) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let n = config.max_concurrent_calls;
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(16))
        .total_memories(n.saturating_mul(4))
        .total_tables(n.saturating_mul(16))
        .max_memory_size(config.memory_limit)
        // Keep the pages a call touches resident between calls: resetting them is cheaper
        // than madvise + page faults on the next instantiation.
        .linear_memory_keep_resident(keep_resident())
        .table_keep_resident(KEEP_RESIDENT_WITHOUT_PAGEMAP);
    let mut wasm = Config::new();
    wasm.concurrency_support(false)
        .max_wasm_stack(config.max_wasm_stack)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match config.deadline {
        DeadlineMode::Epoch => {
            wasm.epoch_interruption(true);
        }
        DeadlineMode::Fuel { .. } => {
            wasm.consume_fuel(true);
        }
        DeadlineMode::Unbounded => {}
    }
    Engine::new(&wasm).map_err(|e| Error::Wasm {
        plugin: "(engine)".into(),
        reason: format!("{e:#}"),
    })
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
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = (config.deadline == DeadlineMode::Epoch).then(|| {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("eyeflow-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
        });
        let ticker = ticker
            .transpose()
            .map_err(Error::io("(epoch ticker thread)"))?;
        let cache = ComponentCache::new(store.data_dir().join("plugins").join("cache"), &engine);
        let slots = Slots::new(config.max_calls_per_plugin);
        let host = Self {
            inner: Arc::new(Inner {
                engine,
                config,
                catalog: Catalog::new(store),
                cache,
                services: Arc::new(services),
                live: RwLock::new(BTreeMap::new()),
                problems: RwLock::new(BTreeMap::new()),
                admin: std::sync::Mutex::new(()),
                stop,
                ticker: std::sync::Mutex::new(ticker),
                runtime: CallRuntime::new().map_err(Error::io("(plugin call runtime)"))?,
                slots,
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
                Ok(loaded) => self.publish(loaded),
                Err(e) => {
                    tracing::error!(plugin = %label, "not loaded: {e}");
                    write(&self.inner.problems).insert(label, e.to_string());
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
        &self.inner.engine
    }

    /// Installs a package: verifies its signature against the store's keyring, refuses
    /// revoked versions and conflicting content, compiles (or loads from the cache) and checks
    /// the component against its manifest, records it durably, and only then makes it visible
    /// to new calls. Calls already running keep their instance.
    pub fn install(&self, package: &Package) -> Result<Installed> {
        let _admin = lock(&self.inner.admin);
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
            if read(&self.inner.live)
                .get(&manifest.id)
                .is_some_and(|versions| versions.contains_key(&manifest.version))
            {
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
        write(&self.inner.problems).remove(&label);
        self.publish(loaded);
        tracing::info!(plugin = %label, key = %key_id, "plugin installed");
        Ok(Installed::New { label, key_id })
    }

    /// Revokes `id@version`: durably marked, removed from resolution at once; calls in
    /// flight finish. A revoked version is never chosen or reinstalled.
    pub fn revoke(&self, id: &str, version: &Version) -> Result<()> {
        let _admin = lock(&self.inner.admin);
        self.inner.catalog.revoke(id, version)?;
        if let Some(versions) = write(&self.inner.live).get_mut(id) {
            versions.remove(version);
        }
        tracing::warn!(plugin = %format!("{id}@{version}"), "plugin revoked");
        Ok(())
    }

    /// Changes the grant of plugin `id` and relinks its loaded versions; the next call sees
    /// the new grant.
    pub fn change_grant(&self, id: &str, changes: &[GrantChange]) -> Result<Grant> {
        let _admin = lock(&self.inner.admin);
        // No grant after a transfer: start from what the newest loaded version's manifest
        // asks for, as its installation would have.
        if self.inner.catalog.grant(id)?.is_none()
            && let Some(newest) = read(&self.inner.live)
                .get(id)
                .and_then(|versions| versions.values().next_back().cloned())
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
    ) -> Result<super::catalog::Transfer> {
        let _admin = lock(&self.inner.admin);
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
        let transfer = super::catalog::Transfer {
            id: id.to_owned(),
            from,
            to: to_key.to_owned(),
        };
        let now = crate::now_ms();
        let publisher = super::catalog::Publisher {
            key_id: transfer.to.clone(),
            pinned_by: super::catalog::PinnedBy::Transfer,
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
        let live = read(&self.inner.live);
        let problems = read(&self.inner.problems);
        let mut out = Vec::new();
        for entry in self.inner.catalog.entries()? {
            let label = entry.manifest.label();
            let runnable = match live
                .get(&entry.manifest.id)
                .and_then(|v| v.get(&entry.manifest.version))
            {
                Some(loaded) => loaded.pre.as_ref().map(|_| ()).map_err(Clone::clone),
                None if entry.state == State::Revoked => Err("revoked".to_owned()),
                None => Err(problems
                    .get(&label)
                    .cloned()
                    .unwrap_or_else(|| "not loaded".to_owned())),
            };
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
        let live = read(&self.inner.live);
        let all = live.values().flat_map(|v| v.values());
        let (total, cached) = all.fold((0, 0), |(t, c), l| (t + 1, c + usize::from(l.from_cache)));
        (total, cached)
    }

    fn publish(&self, loaded: Loaded) {
        let id = loaded.manifest.id.clone();
        let version = loaded.manifest.version.clone();
        write(&self.inner.live)
            .entry(id)
            .or_default()
            .insert(version, Arc::new(loaded));
    }

    fn prepare(&self, package: &Package, key_id: &str) -> Result<Loaded> {
        let manifest = &package.manifest;
        let label = manifest.label();
        let (component, from_cache) = self.inner.cache.load(
            &self.inner.engine,
            &label,
            package.component(),
            &package.component_digest(),
        )?;
        check_imports(&self.inner.engine, manifest, &component)?;
        let grant = self
            .inner
            .catalog
            .grant(&manifest.id)?
            .unwrap_or_else(|| Grant::initial(manifest));
        self.link(manifest, key_id.to_owned(), component, from_cache, &grant)
    }

    fn link(
        &self,
        manifest: &Manifest,
        key_id: String,
        component: Component,
        from_cache: bool,
        grant: &Grant,
    ) -> Result<Loaded> {
        let label = manifest.label();
        let entrypoints = entrypoints(manifest, &component)?;
        let mut linker = Linker::new(&self.inner.engine);
        link(&mut linker, grant).map_err(|e| Error::Wasm {
            plugin: label.clone(),
            reason: format!("{e:#}"),
        })?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            let missing: Vec<&str> = manifest
                .imports
                .iter()
                .filter(|i| !grant.imports.contains(i))
                .map(|i| i.name())
                .collect();
            if missing.is_empty() {
                format!("cannot link: {e:#}")
            } else {
                format!(
                    "import {} not granted; grant it with `eyeflow plugin grant {} ...`",
                    missing.join(", "),
                    manifest.id
                )
            }
        });
        let mut schemas = BTreeMap::new();
        for (name, op) in &manifest.operations {
            let compile = |schema: &Value| {
                jsonschema::validator_for(schema).map_err(|e| Error::BadManifest {
                    plugin: label.clone(),
                    field: format!("operations.{name}"),
                    reason: e.to_string(),
                })
            };
            schemas.insert(name.clone(), (compile(&op.input)?, compile(&op.output)?));
        }
        Ok(Loaded {
            id: Arc::from(manifest.id.as_str()),
            label: Arc::from(label.as_str()),
            manifest: manifest.clone(),
            key_id,
            component,
            entrypoints,
            grant: Arc::new(grant.clone()),
            pre,
            schemas,
            from_cache,
        })
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
    ) -> std::result::Result<Arc<Loaded>, CallError> {
        let live = read(&self.inner.live);
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

    /// Calls export `index` of a fresh instance of `loaded` with `params` within
    /// `deadline`; then, unless `kv` is [`KvWrites::LeftToJournal`], makes the plugin's KV
    /// writes durable. Also returns the secrets the call read: the caller scrubs them from
    /// what the plugin returned (a failure of the call is scrubbed here).
    ///
    /// The deadline holds whatever the guest does: the call runs as a future on the host's
    /// runtime (WASI's blocking calls — a sleep, a poll — are asynchronous there) under a
    /// timer that drops it at the deadline, and a running guest checks the wall clock at
    /// every epoch tick. At most [`HostConfig::max_calls_per_plugin`] calls of one plugin
    /// run at once: a call past that waits for a slot within its own deadline, then fails as
    /// `rate-limited`.
    async fn call<P, R>(
        &self,
        loaded: &Loaded,
        deadline: Duration,
        kv: KvWrites,
        index: &ComponentExportIndex,
        params: P,
    ) -> std::result::Result<(R, Finished), CallError>
    where
        P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower + Send + Sync,
        R: wasmtime::component::ComponentNamedList
            + wasmtime::component::Lift
            + Send
            + Sync
            + 'static,
    {
        let err = |kind, message: String| CallError::new(kind, &*loaded.label, message);
        let pre = loaded
            .pre
            .as_ref()
            .map_err(|why| err(CallErrorKind::Denied, why.clone()))?;
        let started = Instant::now();
        let end = started + deadline;
        let _slot = self.inner.slots.acquire(&loaded.id, end).await.ok_or_else(|| {
            err(
                CallErrorKind::RateLimited,
                format!(
                    "{} calls of this plugin already run (the limit per plugin) and none ended within the deadline of {} ms",
                    self.inner.config.max_calls_per_plugin,
                    deadline.as_millis()
                ),
            )
        })?;
        let state = CallState::new(
            loaded.id.clone(),
            loaded.label.clone(),
            loaded.grant.clone(),
            self.inner.services.clone(),
            end,
            CallLimits::new(
                self.inner.config.memory_limit,
                self.inner.config.table_elements,
            ),
        );
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.limits);
        match self.inner.config.deadline {
            DeadlineMode::Epoch => {
                // Ticks only say when to look: the wall clock decides, so a tick source
                // slowed by load cannot stretch the deadline. Between ticks a computing
                // guest yields, so other tasks of the runtime it runs on go on.
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| {
                    if Instant::now() >= end {
                        Err(Trap::Interrupt.into())
                    } else {
                        Ok(wasmtime::UpdateDeadline::Yield(1))
                    }
                });
            }
            DeadlineMode::Fuel { units_per_ms } => {
                let fuel = u64::try_from(deadline.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(units_per_ms);
                store
                    .set_fuel(fuel)
                    .map_err(|e| err(CallErrorKind::Internal, format!("fuel: {e}")))?;
            }
            DeadlineMode::Unbounded => {}
        }
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let func = instance.get_typed_func::<P, R>(&mut store, index)?;
            func.call_async(&mut store, params).await
        };
        let bounded = self.inner.config.deadline != DeadlineMode::Unbounded;
        let outcome = if bounded {
            // The timer fires while the guest waits in the host (a WASI sleep or poll): the
            // call is dropped there.
            tokio::time::timeout_at(end.into(), run)
                .await
                .unwrap_or_else(|_| Err(Trap::Interrupt.into()))
        } else {
            run.await
        };
        let state = store.data_mut();
        state
            .kv
            .finish(outcome.is_ok(), &state.services, &state.plugin_id);
        if kv == KvWrites::Persist && store.data().kv_written() {
            self.inner
                .services
                .store
                .persist(self.inner.config.kv_durability)
                .map_err(|e| err(CallErrorKind::Unavailable, format!("scratch store: {e}")))?;
        }
        match outcome {
            Ok(r) => Ok((
                r,
                Finished {
                    scrubber: std::mem::take(&mut store.data_mut().scrubber),
                    over_quota: store.data().kv.over_quota,
                },
            )),
            // A trap's message quotes the guest's stderr (a panic message, say).
            Err(e) => {
                let mut error = classify(&store, e, deadline, started.elapsed(), &loaded.label);
                store.data().scrubber.scrub_string(&mut error.message);
                Err(error)
            }
        }
    }

    /// Links every loaded version of plugin `id` again with the grant `grant_for` gives it
    /// (calls in flight finish on the old link).
    fn relink(&self, id: &str, grant_for: impl Fn(&Loaded) -> Grant) -> Result<()> {
        let current: Vec<Arc<Loaded>> = read(&self.inner.live)
            .get(id)
            .map(|versions| versions.values().cloned().collect())
            .unwrap_or_default();
        for loaded in current {
            let relinked = self.link(
                &loaded.manifest,
                loaded.key_id.clone(),
                loaded.component.clone(),
                loaded.from_cache,
                &grant_for(&loaded),
            )?;
            self.publish(relinked);
        }
        Ok(())
    }

    /// Calls the `describe` export of the newest loaded version of plugin `id`.
    pub fn describe(&self, id: &str) -> std::result::Result<Value, CallError> {
        let loaded = read(&self.inner.live)
            .get(id)
            .and_then(|versions| versions.values().next_back().cloned())
            .ok_or_else(|| CallError::new(CallErrorKind::NotFound, id, "not installed"))?;
        let index = match &loaded.entrypoints {
            Entrypoints::Capability { describe, .. } | Entrypoints::Connector { describe, .. } => {
                *describe
            }
        };
        let ((text,), finished) = self.blocking(self.call::<(), (String,)>(
            &loaded,
            Duration::from_secs(5),
            KvWrites::Persist,
            &index,
            (),
        ))?;
        output(&loaded, Ok(text), &finished)
    }

    /// Log bytes of plugin `id` dropped since the host opened (over its per-call or
    /// per-second quota).
    pub fn log_bytes_dropped(&self, id: &str) -> u64 {
        self.inner.services.log_bytes_dropped(id)
    }

    /// Polls the event source resolved from `source` after `cursor`.
    pub fn poll(
        &self,
        source: &CapabilityRef,
        cursor: Option<&str>,
        max_events: u32,
        deadline: Duration,
    ) -> std::result::Result<Batch, CallError> {
        let loaded = self.resolve(source, Some(Kind::Connector))?;
        let Entrypoints::Connector {
            poll: Some(index), ..
        } = &loaded.entrypoints
        else {
            return Err(CallError::new(
                CallErrorKind::InvalidInput,
                &*loaded.label,
                "not an event source",
            ));
        };
        let cursor = cursor.map(str::to_owned);
        let ((result,), finished) = self.blocking(
            self.call::<(Option<String>, u32), (std::result::Result<Batch, PluginError>,)>(
                &loaded,
                deadline,
                KvWrites::Persist,
                index,
                (cursor, max_events),
            ),
        )?;
        let mut batch = result.map_err(|e| plugin_error(&loaded, e, &finished))?;
        if batch.events.len() > usize::try_from(max_events).unwrap_or(usize::MAX) {
            return Err(CallError::new(
                CallErrorKind::InvalidOutput,
                &*loaded.label,
                format!(
                    "poll returned {} events; it was asked for at most {max_events} (none taken)",
                    batch.events.len()
                ),
            ));
        }
        if !finished.scrubber.is_empty() {
            for event in &mut batch.events {
                finished.scrubber.scrub_string(&mut event.key);
                finished.scrubber.scrub_string(&mut event.payload);
            }
        }
        Ok(batch)
    }
}

impl PluginHost {
    /// Reads resource `key` through the connector resolved from `connector` (see
    /// [`PluginPort::read`]).
    async fn read_resource(
        &self,
        connector: &CapabilityRef,
        key: &str,
        params: &Value,
        deadline: Duration,
    ) -> std::result::Result<Value, CallError> {
        let loaded = match self.resolve(connector, Some(Kind::Connector)) {
            Ok(loaded) => loaded,
            // A capability that exposes a `read` action (valve-sim's state, for
            // postconditions) is read through that action.
            Err(not_found) => match self.resolve(connector, Some(Kind::Capability)) {
                Ok(capability) if capability.manifest.operations.contains_key("read") => {
                    static READS: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    let n = READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let idempotency_key = format!("read/{key}/{n}");
                    return self
                        .invoke_action(
                            connector,
                            "read",
                            params,
                            &idempotency_key,
                            deadline,
                            KvWrites::Persist,
                        )
                        .await;
                }
                _ => return Err(not_found),
            },
        };
        let Entrypoints::Connector { read: index, .. } = &loaded.entrypoints else {
            return Err(CallError::new(
                CallErrorKind::Internal,
                &*loaded.label,
                "no read export",
            ));
        };
        check_input(&loaded, "read", params)?;
        let params = params.to_string();
        let ((result,), finished) = self
            .call::<(&str, &str), (std::result::Result<String, PluginError>,)>(
                &loaded,
                deadline,
                KvWrites::Persist,
                index,
                (key, &params),
            )
            .await?;
        let output = output(&loaded, result, &finished)?;
        check_output(&loaded, "read", &output)?;
        Ok(output)
    }

    /// [`PluginPort::read`], waiting on the calling thread (outside any runtime: tests, the
    /// CLI).
    pub fn read(
        &self,
        connector: &CapabilityRef,
        key: &str,
        params: &Value,
        deadline: Duration,
    ) -> std::result::Result<Value, CallError> {
        self.blocking(self.read_resource(connector, key, params, deadline))
    }

    /// [`PluginPort::invoke`], waiting on the calling thread (outside any runtime: tests,
    /// the CLI).
    pub fn invoke(
        &self,
        capability: &CapabilityRef,
        action: &str,
        input: &Value,
        idempotency_key: &str,
        deadline: Duration,
    ) -> std::result::Result<Value, CallError> {
        self.blocking(self.invoke_action(
            capability,
            action,
            input,
            idempotency_key,
            deadline,
            KvWrites::LeftToJournal,
        ))
    }

    /// Runs a call on the host's own runtime, waiting on the calling thread.
    fn blocking<T>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<T, CallError>>,
    ) -> std::result::Result<T, CallError> {
        self.inner.runtime.block_on(call).unwrap_or_else(|| {
            Err(CallError::new(
                CallErrorKind::Unavailable,
                "plugin host",
                "the plugin host is shut down",
            ))
        })
    }
}

/// Calls run as futures of the caller's task (an execution on the actor runtime): a guest
/// that computes yields at every epoch tick, one that waits in WASI waits as a future.
#[async_trait::async_trait]
impl PluginPort for PluginHost {
    async fn read(
        &self,
        connector: &CapabilityRef,
        key: &str,
        params: &Value,
        deadline: Duration,
    ) -> std::result::Result<Value, CallError> {
        self.read_resource(connector, key, params, deadline).await
    }

    async fn invoke(
        &self,
        capability: &CapabilityRef,
        action: &str,
        input: &Value,
        idempotency_key: &str,
        deadline: Duration,
    ) -> std::result::Result<Value, CallError> {
        self.invoke_action(
            capability,
            action,
            input,
            idempotency_key,
            deadline,
            KvWrites::LeftToJournal,
        )
        .await
    }

    fn on_resume(&self, capability: &CapabilityRef, action: &str) -> OnResume {
        self.resolve(capability, Some(Kind::Capability))
            .ok()
            .and_then(|loaded| {
                loaded
                    .manifest
                    .operations
                    .get(action)
                    .map(|op| op.on_resume.to_port())
            })
            .unwrap_or_default()
    }
}

impl PluginHost {
    async fn invoke_action(
        &self,
        capability: &CapabilityRef,
        action: &str,
        input: &Value,
        idempotency_key: &str,
        deadline: Duration,
        kv: KvWrites,
    ) -> std::result::Result<Value, CallError> {
        let loaded = self.resolve(capability, Some(Kind::Capability))?;
        let Entrypoints::Capability { invoke: index, .. } = &loaded.entrypoints else {
            return Err(CallError::new(
                CallErrorKind::Internal,
                &*loaded.label,
                "no invoke export",
            ));
        };
        check_input(&loaded, action, input)?;
        let input = input.to_string();
        let ((result,), finished) = self
            .call::<(&str, &str, &str), (std::result::Result<String, PluginError>,)>(
                &loaded,
                deadline,
                kv,
                index,
                (action, &input, idempotency_key),
            )
            .await?;
        let output = output(&loaded, result, &finished)?;
        check_output(&loaded, action, &output)?;
        Ok(output)
    }
}

fn check_input(
    loaded: &Loaded,
    operation: &str,
    input: &Value,
) -> std::result::Result<(), CallError> {
    if loaded.schemas.is_empty() {
        return Ok(());
    }
    let Some((schema, _)) = loaded.schemas.get(operation) else {
        let known: Vec<&str> = loaded.schemas.keys().map(String::as_str).collect();
        return Err(CallError::new(
            CallErrorKind::InvalidInput,
            &*loaded.label,
            format!(
                "unknown operation `{operation}`; expected one of {}",
                known.join(", ")
            ),
        ));
    };
    schema_errors(schema, input).map_err(|why| {
        CallError::new(
            CallErrorKind::InvalidInput,
            &*loaded.label,
            format!("input of `{operation}` does not match its schema: {why}"),
        )
    })
}

fn check_output(
    loaded: &Loaded,
    operation: &str,
    output: &Value,
) -> std::result::Result<(), CallError> {
    let Some((_, schema)) = loaded.schemas.get(operation) else {
        return Ok(());
    };
    schema_errors(schema, output).map_err(|why| {
        CallError::new(
            CallErrorKind::Internal,
            &*loaded.label,
            format!("output of `{operation}` does not match its schema: {why}"),
        )
    })
}

fn schema_errors(schema: &jsonschema::Validator, value: &Value) -> std::result::Result<(), String> {
    let errors: Vec<String> = schema
        .iter_errors(value)
        .take(3)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn parse_output(loaded: &Loaded, text: &str) -> std::result::Result<Value, CallError> {
    let limit = eyeflow_actors::exec::bounds::MAX_BYTES;
    if text.len() > limit {
        return Err(CallError::new(
            CallErrorKind::InvalidOutput,
            &*loaded.label,
            format!("returned {} bytes; at most {limit} are taken", text.len()),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        CallError::new(
            CallErrorKind::Internal,
            &*loaded.label,
            format!("returned invalid JSON: {e}"),
        )
    })
}

/// What a call returned, as JSON, with the secrets it read replaced by `[secret:NAME]`
/// (before any schema check, whose message may quote the output).
fn output(
    loaded: &Loaded,
    result: std::result::Result<String, PluginError>,
    finished: &Finished,
) -> std::result::Result<Value, CallError> {
    let scrubber = &finished.scrubber;
    let text = result.map_err(|e| plugin_error(loaded, e, finished))?;
    let mut value = parse_output(loaded, &text)?;
    scrubber.scrub_value(&mut value);
    Ok(value)
}

/// The plugin's own error, classified; after a write refused for its KV quota, whatever it
/// says is `resource-exhausted`.
fn plugin_error(loaded: &Loaded, error: PluginError, finished: &Finished) -> CallError {
    let (kind, mut message) = match error {
        PluginError::InvalidInput(m) => (CallErrorKind::InvalidInput, m),
        PluginError::Unavailable(m) => (CallErrorKind::Unavailable, m),
        PluginError::Timeout(m) => (CallErrorKind::Timeout, m),
        PluginError::Denied(m) => (CallErrorKind::Denied, m),
        PluginError::Internal(m) => (CallErrorKind::Internal, m),
    };
    let kind = if finished.over_quota {
        CallErrorKind::ResourceExhausted
    } else {
        kind
    };
    finished.scrubber.scrub_string(&mut message);
    CallError::new(kind, &*loaded.label, message)
}

/// Turns a wasmtime failure into a classified call error.
fn classify(
    store: &Store<CallState>,
    error: wasmtime::Error,
    deadline: Duration,
    elapsed: Duration,
    label: &str,
) -> CallError {
    let state = store.data();
    if state.limits.memory_exhausted {
        return CallError::new(
            CallErrorKind::ResourceExhausted,
            label,
            format!("{error:#}"),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt | Trap::OutOfFuel) => CallError::new(
            CallErrorKind::Timeout,
            label,
            format!(
                "deadline of {} ms exceeded (stopped after {} ms)",
                deadline.as_millis(),
                elapsed.as_millis()
            ),
        ),
        Some(Trap::AllocationTooLarge) => CallError::new(
            CallErrorKind::ResourceExhausted,
            label,
            format!("{error:#}"),
        ),
        Some(trap) => {
            let stderr = state.stderr.contents();
            let stderr = String::from_utf8_lossy(&stderr);
            let detail = stderr.trim();
            let message = if detail.is_empty() {
                format!("trapped: {trap}")
            } else {
                format!("trapped: {trap}: {detail}")
            };
            CallError::new(CallErrorKind::Trap, label, message)
        }
        None => {
            let text = format!("{error:#}");
            if text.contains("concurrent") && text.contains("limit") {
                CallError::new(CallErrorKind::ResourceExhausted, label, text)
            } else {
                CallError::new(CallErrorKind::Internal, label, text)
            }
        }
    }
}

/// Parses `eyeflow:plugin/NAME@VERSION`.
fn eyeflow_interface(name: &str) -> Option<(&str, Option<Version>)> {
    let rest = name.strip_prefix("eyeflow:plugin/")?;
    Some(match rest.split_once('@') {
        Some((iface, version)) => (iface, Version::parse(version).ok()),
        None => (rest, None),
    })
}

/// WASI interfaces a plugin may import (linked with nothing to reach: no preopened
/// directories, no network).
const WASI_ALLOWED: [&str; 5] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

fn check_imports(engine: &Engine, manifest: &Manifest, component: &Component) -> Result<()> {
    let label = manifest.label();
    let incompatible = |reason: String| Error::Incompatible {
        plugin: label.clone(),
        reason,
    };
    for (name, _) in component.component_type().imports(engine) {
        if let Some((iface, version)) = eyeflow_interface(name) {
            if version
                .as_ref()
                .is_none_or(|v| v.major != HOST_WIT_VERSION.major || *v > HOST_WIT_VERSION)
            {
                return Err(incompatible(format!(
                    "imports {name}; this host implements eyeflow:plugin@{HOST_WIT_VERSION}"
                )));
            }
            if iface == "types" {
                continue;
            }
            match Import::from_name(iface) {
                Some(import) if manifest.imports.contains(&import) => {}
                Some(import) => {
                    return Err(incompatible(format!(
                        "the component imports {name} but its manifest does not declare `{import}` in `imports`"
                    )));
                }
                None => {
                    return Err(incompatible(format!(
                        "the component imports {name}, which this host does not provide (it provides log, http, secrets, kv, clock)"
                    )));
                }
            }
        } else if !WASI_ALLOWED.iter().any(|prefix| name.starts_with(prefix)) {
            return Err(incompatible(format!(
                "the component imports {name}, which plugins may not use (network access goes through eyeflow:plugin/http)"
            )));
        }
    }
    Ok(())
}

/// Finds the entry points of the component, accepting any exported WIT version the host
/// is compatible with (1.0 ≤ v ≤ the host's).
fn entrypoints(manifest: &Manifest, component: &Component) -> Result<Entrypoints> {
    let label = manifest.label();
    let engine = component.engine();
    let exported: Vec<String> = component
        .component_type()
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect();
    let find_instance = |iface: &str| -> Option<ComponentExportIndex> {
        let name = exported.iter().find(|name| {
            eyeflow_interface(name).is_some_and(|(i, v)| {
                i == iface
                    && v.is_some_and(|v| v.major == HOST_WIT_VERSION.major && v <= HOST_WIT_VERSION)
            })
        })?;
        component.get_export_index(None, name.as_str())
    };
    let missing = |what: &str| Error::Incompatible {
        plugin: label.clone(),
        reason: format!(
            "a {:?} must export {what} from eyeflow:plugin@1.x; the component exports [{}]",
            manifest.kind,
            exported.join(", ")
        )
        .to_lowercase(),
    };
    let func = |instance: &ComponentExportIndex, name: &str, iface: &str| {
        component
            .get_export_index(Some(instance), name)
            .ok_or_else(|| missing(&format!("function `{name}` of interface `{iface}`")))
    };
    match manifest.kind {
        Kind::Capability => {
            let actions = find_instance("actions").ok_or_else(|| missing("interface `actions`"))?;
            Ok(Entrypoints::Capability {
                describe: func(&actions, "describe", "actions")?,
                invoke: func(&actions, "invoke", "actions")?,
            })
        }
        Kind::Connector => {
            let reader = find_instance("reader").ok_or_else(|| missing("interface `reader`"))?;
            let poll = match find_instance("source") {
                Some(source) if manifest.source => Some(func(&source, "poll", "source")?),
                None if manifest.source => {
                    return Err(missing(
                        "interface `source` (its manifest says `source: true`)",
                    ));
                }
                _ => None,
            };
            Ok(Entrypoints::Connector {
                describe: func(&reader, "describe", "reader")?,
                read: func(&reader, "read", "reader")?,
                poll,
            })
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(lock: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
