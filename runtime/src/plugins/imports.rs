//! The host side of the WIT imports (`log`, `http`, `secrets`, `kv`, `clock`) and the state
//! each call's store carries. Every import re-checks the grant in force when the call
//! started; HTTP requests are bounded by the call's own deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eyeflow_actors::exec::Scrubber;
use eyeflow_actors::ports::CallErrorKind;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::grants::Grant;
use super::manifest::Import;
use crate::secrets::SecretSource;
use crate::store::{Durability, EmbeddedStore, Space, Write};

/// Host bindings generated from `plugin-sdk/wit/plugin.wit`.
#[allow(missing_docs)] // generated from the WIT, whose docs it carries where the WIT has them
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/plugin.wit",
        world: "eyeflow:plugin/connector",
        // The imports that wait on the node (a secret source, an fsync) are futures of
        // the call, so that a call waiting there holds no thread of the actor runtime.
        imports: {
            "eyeflow:plugin/http.send": async,
            "eyeflow:plugin/secrets.get": async,
            "eyeflow:plugin/kv.set-if-absent": async,
        },
    });
}

use bindings::eyeflow::plugin::types::PluginError;
use bindings::eyeflow::plugin::{clock, http, kv, log, secrets, types};

/// Longest key in the plugin scratch store.
const KV_MAX_KEY: usize = 1024;
/// Largest value in the plugin scratch store.
const KV_MAX_VALUE: usize = 1024 * 1024;
/// Most writes in one `set-if-absent` batch (besides its own key).
const KV_MAX_BATCH_WRITES: usize = 64;
/// Most bytes of keys and values in one `set-if-absent` batch, its own key included.
const KV_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Longest log line kept.
const LOG_MAX: usize = 4096;
/// Captured guest stderr (panic messages), per call; the rest is dropped.
pub(crate) const STDERR_CAPTURE: usize = 8 * 1024;

/// What every call shares: the store, the secrets source and the HTTP client.
pub(crate) struct Services {
    pub(crate) store: EmbeddedStore,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) http: reqwest::Client,
    pub(crate) started: Instant,
    /// How `set-if-absent` makes its batch durable before it returns.
    pub(crate) kv_durability: Durability,
    /// Held by `set-if-absent` from reading its key to writing its batch, so that two
    /// calls cannot both find the key absent. A call applying its plain writes does not take
    /// it.
    kv_check_and_write: Mutex<()>,
    /// Per-plugin quotas of the KV store and of logs.
    pub(crate) quotas: Quotas,
    /// KV keys and bytes each plugin holds (counted on its first write after a start).
    kv_usage: Mutex<HashMap<Arc<str>, KvUsage>>,
    /// Log bytes of each plugin in the current second, and how many were dropped.
    log_usage: Mutex<HashMap<Arc<str>, LogWindow>>,
}

/// Per-plugin quotas.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// Most keys a plugin's KV store holds.
    pub kv_keys: u64,
    /// Most bytes (keys and values) a plugin's KV store holds.
    pub kv_bytes: u64,
    /// Most log bytes one call writes; the rest is dropped (and counted).
    pub log_bytes_per_call: usize,
    /// Most log bytes a plugin writes per second, all calls together.
    pub log_bytes_per_second: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            kv_keys: 100_000,
            kv_bytes: 64 * 1024 * 1024,
            log_bytes_per_call: 64 * 1024,
            log_bytes_per_second: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct KvUsage {
    keys: u64,
    bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct LogWindow {
    second: u64,
    bytes: usize,
    dropped: u64,
    /// Every byte dropped since the start.
    total_dropped: u64,
}

impl Services {
    pub(crate) fn new(
        store: EmbeddedStore,
        secrets: Arc<dyn SecretSource>,
        kv_durability: Durability,
        quotas: Quotas,
    ) -> Result<Self, reqwest::Error> {
        // No redirects: a granted host must not be able to bounce the plugin to one that is
        // not.
        let http = crate::http::client()?;
        Ok(Self {
            store,
            secrets,
            http,
            started: Instant::now(),
            kv_durability,
            kv_check_and_write: Mutex::new(()),
            quotas,
            kv_usage: Mutex::new(HashMap::new()),
            log_usage: Mutex::new(HashMap::new()),
        })
    }

    /// The KV keys and bytes `plugin` holds (a scan of its keys the first time).
    fn kv_usage(&self, plugin: &Arc<str>) -> Result<KvUsage, PluginError> {
        let mut usage = self.kv_usage.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = usage.get(plugin) {
            return Ok(*found);
        }
        let mut prefix = plugin.as_bytes().to_vec();
        prefix.push(0);
        let mut counted = KvUsage::default();
        for (key, value) in self
            .store
            .scan(Space::PluginKv, &prefix)
            .map_err(store_error)?
        {
            counted.keys += 1;
            counted.bytes += (key.len() - prefix.len() + value.len()) as u64;
        }
        usage.insert(plugin.clone(), counted);
        Ok(counted)
    }

    fn add_kv_usage(&self, plugin: &Arc<str>, keys: i64, bytes: i64) {
        let mut usage = self.kv_usage.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = usage.entry(plugin.clone()).or_default();
        entry.keys = entry.keys.saturating_add_signed(keys);
        entry.bytes = entry.bytes.saturating_add_signed(bytes);
    }

    /// Takes `bytes` of `plugin`'s log budget for this second; false when it is spent (the
    /// line is then dropped and counted).
    fn log_budget(&self, plugin: &Arc<str>, bytes: usize) -> bool {
        let second = crate::now_ms() / 1000;
        let mut usage = self
            .log_usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let window = usage.entry(plugin.clone()).or_default();
        if window.second != second {
            if window.dropped > 0 {
                tracing::warn!(
                    plugin = &**plugin,
                    "{} log bytes dropped in the last second (over {} per second)",
                    window.dropped,
                    self.quotas.log_bytes_per_second
                );
            }
            *window = LogWindow {
                second,
                total_dropped: window.total_dropped,
                ..LogWindow::default()
            };
        }
        if window.bytes + bytes > self.quotas.log_bytes_per_second {
            window.dropped += bytes as u64;
            window.total_dropped += bytes as u64;
            return false;
        }
        window.bytes += bytes;
        true
    }

    /// Counts `bytes` of `plugin`'s log dropped for its per-call budget.
    fn log_dropped(&self, plugin: &Arc<str>, bytes: usize) {
        let mut usage = self
            .log_usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        usage.entry(plugin.clone()).or_default().total_dropped += bytes as u64;
    }

    /// Log bytes of `plugin` dropped since the start, for its quotas.
    pub(crate) fn log_bytes_dropped(&self, plugin: &str) -> u64 {
        self.log_usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(plugin)
            .map_or(0, |window| window.total_dropped)
    }
}

/// A guest's stderr: the first [`STDERR_CAPTURE`] bytes are kept (a panic message), the
/// rest dropped — never a trap for writing too much.
#[derive(Clone, Default)]
pub(crate) struct CappedPipe(Arc<Mutex<Vec<u8>>>);

impl CappedPipe {
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = STDERR_CAPTURE.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..buf.len().min(room)]);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// The clocks a plugin without the `clock` grant sees: stopped at zero.
struct Stopped;

impl HostWallClock for Stopped {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Stopped {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// A call's KV writes, applied together when it ends well and dropped when it fails (a
/// trap, a deadline): reads within the call see them first.
#[derive(Default)]
pub(crate) struct KvBuffer {
    /// Full store key → value (`None`: deleted).
    writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Change of the plugin's key count and bytes if they are applied.
    keys: i64,
    bytes: i64,
    /// Whether writes reached the store during this call (applied, or by set-if-absent).
    written: bool,
    /// Whether a write was refused for the plugin's quota.
    pub(crate) over_quota: bool,
}

impl KvBuffer {
    /// Applies the writes (`ok`) or drops them. Applied writes are not flushed: the host
    /// or the executor's next durable journal write makes them durable.
    pub(crate) fn finish(&mut self, ok: bool, services: &Services, plugin: &Arc<str>) {
        if ok {
            self.apply(services, plugin);
        } else {
            self.writes.clear();
            (self.keys, self.bytes) = (0, 0);
        }
    }

    /// Writes the buffered writes of `plugin` as one batch.
    fn apply(&mut self, services: &Services, plugin: &Arc<str>) {
        let writes = std::mem::take(&mut self.writes);
        if writes.is_empty() {
            return;
        }
        let batch: Vec<Write> = writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => Write::Put(Space::PluginKv, key, value),
                None => Write::Remove(Space::PluginKv, key),
            })
            .collect();
        match services.store.write(batch) {
            Ok(()) => {
                self.written = true;
                services.add_kv_usage(plugin, self.keys, self.bytes);
            }
            Err(e) => tracing::error!(plugin = &**plugin, "plugin KV writes not applied: {e}"),
        }
        (self.keys, self.bytes) = (0, 0);
    }
}

/// Memory and table limits of one call, remembering whether the plugin hit them.
pub(crate) struct CallLimits {
    inner: StoreLimits,
    memory_limit: usize,
    pub(crate) memory_exhausted: bool,
}

impl CallLimits {
    pub(crate) fn new(memory_limit: usize, table_elements: usize) -> Self {
        Self {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .table_elements(table_elements)
                .instances(64)
                .tables(64)
                .memories(8)
                .build(),
            memory_limit,
            memory_exhausted: false,
        }
    }
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exhausted = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached (asked for {desired})",
                self.memory_limit
            ));
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// The data of one call's store.
pub(crate) struct CallState {
    pub(crate) plugin_id: Arc<str>,
    pub(crate) label: Arc<str>,
    pub(crate) grant: Arc<Grant>,
    pub(crate) services: Arc<Services>,
    pub(crate) deadline: Instant,
    pub(crate) limits: CallLimits,
    pub(crate) stderr: CappedPipe,
    /// The call's KV writes, applied when it ends well.
    pub(crate) kv: KvBuffer,
    /// Log bytes this call wrote.
    log_bytes: usize,
    /// The secrets the plugin read during this call: their values are taken out of its
    /// logs, its error and its output.
    pub(crate) scrubber: Scrubber,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl CallState {
    pub(crate) fn new(
        plugin_id: Arc<str>,
        label: Arc<str>,
        grant: Arc<Grant>,
        services: Arc<Services>,
        deadline: Instant,
        limits: CallLimits,
    ) -> Self {
        let stderr = CappedPipe::default();
        // No preopened directories, no environment, no arguments, no network; the time
        // only with the `clock` grant.
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !grant.imports.contains(&Import::Clock) {
            wasi.wall_clock(Stopped).monotonic_clock(Stopped);
        }
        let wasi = wasi.build();
        Self {
            plugin_id,
            label,
            grant,
            services,
            deadline,
            limits,
            stderr,
            kv: KvBuffer::default(),
            log_bytes: 0,
            scrubber: Scrubber::new(),
            wasi,
            table: ResourceTable::new(),
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether KV writes reached the store during this call.
    pub(crate) fn kv_written(&self) -> bool {
        self.kv.written
    }

    /// The value of full key `key` as this call sees it (its own writes first).
    fn kv_read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
        match self.kv.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self
                .services
                .store
                .get(Space::PluginKv, key)
                .map_err(store_error),
        }
    }

    /// Buffers a write of full key `key`, within the plugin's quota.
    fn kv_buffer(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), PluginError> {
        let short = (key.len() - self.plugin_id.len() - 1) as i64;
        let old = self.kv_read(&key)?.map(|v| v.len() as i64 + short);
        let new = value.as_ref().map(|v| v.len() as i64 + short);
        let keys = i64::from(new.is_some()) - i64::from(old.is_some());
        let bytes = new.unwrap_or(0) - old.unwrap_or(0);
        let usage = self.services.kv_usage(&self.plugin_id)?;
        let quotas = self.services.quotas;
        let after_keys = (usage.keys as i64).saturating_add(self.kv.keys + keys);
        let after_bytes = (usage.bytes as i64).saturating_add(self.kv.bytes + bytes);
        if (keys > 0 && after_keys > quotas.kv_keys as i64)
            || (bytes > 0 && after_bytes > quotas.kv_bytes as i64)
        {
            self.kv.over_quota = true;
            return Err(PluginError::Unavailable(format!(
                "kv quota reached: this plugin may hold {} keys and {} bytes (it would hold {after_keys} keys, {after_bytes} bytes)",
                quotas.kv_keys, quotas.kv_bytes
            )));
        }
        self.kv.keys += keys;
        self.kv.bytes += bytes;
        self.kv.writes.insert(key, value);
        Ok(())
    }

    fn kv_key(&self, key: &str) -> Result<Vec<u8>, PluginError> {
        if key.len() > KV_MAX_KEY {
            return Err(PluginError::InvalidInput(format!(
                "kv key of {} bytes; expected at most {KV_MAX_KEY}",
                key.len()
            )));
        }
        let mut full = self.plugin_id.as_bytes().to_vec();
        full.push(0);
        full.extend_from_slice(key.as_bytes());
        Ok(full)
    }

    /// The store key of a `set-if-absent` and its batch (that key first), once every limit
    /// is checked. Messages name a write by its position and never show a value.
    fn kv_batch(
        &self,
        key: &str,
        value: Vec<u8>,
        writes: Vec<kv::Write>,
    ) -> Result<(Vec<u8>, Vec<Write>), PluginError> {
        let refuse = |why: String| PluginError::InvalidInput(format!("set-if-absent: {why}"));
        if writes.len() > KV_MAX_BATCH_WRITES {
            return Err(refuse(format!(
                "{} writes; expected at most {KV_MAX_BATCH_WRITES}",
                writes.len()
            )));
        }
        let bytes = writes.iter().fold(key.len() + value.len(), |sum, w| {
            sum.saturating_add(w.key.len())
                .saturating_add(w.value.as_ref().map_or(0, Vec::len))
        });
        if bytes > KV_MAX_BATCH_BYTES {
            return Err(refuse(format!(
                "a batch of {bytes} bytes of keys and values; expected at most {KV_MAX_BATCH_BYTES}"
            )));
        }
        let full = self.kv_key(key).map_err(|e| refuse(message(e)))?;
        check_kv_value(&value).map_err(|e| refuse(message(e)))?;
        // Two writes of one batch to the same key would leave the outcome to the store's
        // ordering within a batch: refused instead.
        let mut seen = HashMap::with_capacity(writes.len());
        let mut batch = Vec::with_capacity(writes.len() + 1);
        batch.push(Write::Put(Space::PluginKv, full.clone(), value));
        for (i, write) in writes.into_iter().enumerate() {
            let n = i + 1;
            if write.key == key {
                return Err(refuse(format!(
                    "write {n} has the key that is set if absent"
                )));
            }
            if let Some(first) = seen.insert(write.key.clone(), n) {
                return Err(refuse(format!("writes {first} and {n} have the same key")));
            }
            let full = self
                .kv_key(&write.key)
                .map_err(|e| refuse(format!("write {n}: {}", message(e))))?;
            batch.push(match write.value {
                Some(value) => {
                    check_kv_value(&value)
                        .map_err(|e| refuse(format!("write {n}: {}", message(e))))?;
                    Write::Put(Space::PluginKv, full, value)
                }
                None => Write::Remove(Space::PluginKv, full),
            });
        }
        Ok((full, batch))
    }
}

fn check_kv_value(value: &[u8]) -> Result<(), PluginError> {
    if value.len() > KV_MAX_VALUE {
        return Err(PluginError::InvalidInput(format!(
            "kv value of {} bytes; expected at most {KV_MAX_VALUE}",
            value.len()
        )));
    }
    Ok(())
}

fn message(error: PluginError) -> String {
    match error {
        PluginError::InvalidInput(m)
        | PluginError::Unavailable(m)
        | PluginError::Timeout(m)
        | PluginError::Denied(m)
        | PluginError::Internal(m) => m,
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Adds WASI (sandboxed) and the granted eyeflow interfaces to `linker`.
pub(crate) fn link(linker: &mut Linker<CallState>, grant: &Grant) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    for import in &grant.imports {
        match import {
            Import::Log => log::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?,
            Import::Http => http::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?,
            Import::Secrets => {
                secrets::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?
            }
            Import::Kv => kv::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?,
            Import::Clock => clock::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?,
        }
    }
    Ok(())
}

fn store_error(e: crate::Error) -> PluginError {
    PluginError::Unavailable(format!("scratch store: {e}"))
}

impl types::Host for CallState {}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) {
        let quotas = self.services.quotas;
        let bytes = message.len().min(LOG_MAX);
        if self.log_bytes + bytes > quotas.log_bytes_per_call {
            self.services.log_dropped(&self.plugin_id, bytes);
            return;
        }
        if !self.services.log_budget(&self.plugin_id, bytes) {
            return;
        }
        self.log_bytes += bytes;
        let mut message = message;
        self.scrubber.scrub_string(&mut message);
        if message.len() > LOG_MAX {
            let mut cut = LOG_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.label;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl http::Host for CallState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, PluginError> {
        let url = url::Url::parse(&request.url)
            .map_err(|e| PluginError::InvalidInput(format!("url `{}`: {e}", request.url)))?;
        if !self.grant.allows_url(&url) {
            return Err(PluginError::Denied(format!(
                "HTTP to {} is not granted to {}; grant it with `eyeflow plugin grant {} --http HOST[:PORT]`",
                url.host_str().unwrap_or("?"),
                self.label,
                self.plugin_id
            )));
        }
        let remaining = self.remaining();
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()).min(remaining))
            .unwrap_or(remaining);
        if timeout.is_zero() {
            return Err(PluginError::Timeout(
                "the call's deadline has passed".into(),
            ));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| PluginError::InvalidInput(format!("HTTP method `{}`", request.method)))?;
        let mut builder = self.services.http.request(method, url).timeout(timeout);
        for header in request.headers {
            builder = builder.header(header.name, header.value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        // A future of the call (bounded by the call's deadline itself).
        let response = builder.send().await.map_err(|e| {
            if e.is_timeout() {
                PluginError::Timeout(format!(
                    "HTTP request timed out after {} ms",
                    timeout.as_millis()
                ))
            } else if e.is_builder() {
                PluginError::InvalidInput(format!("HTTP request: {e}"))
            } else {
                PluginError::Unavailable(format!("HTTP request failed: {e}"))
            }
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some(http::Header {
                    name: name.to_string(),
                    value: value.to_str().ok()?.to_owned(),
                })
            })
            .collect();
        let body = crate::http::read_body(response, "http", timeout.as_millis())
            .await
            .map_err(|e| match e.kind {
                CallErrorKind::Timeout => PluginError::Timeout(e.message),
                _ => PluginError::Unavailable(e.message),
            })?;
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }
}

impl secrets::Host for CallState {
    async fn get(&mut self, name: String) -> Result<String, PluginError> {
        if !self.grant.allows_secret(&name) {
            return Err(PluginError::Denied(format!(
                "secret `{name}` is not granted to {}; grant it with `eyeflow plugin grant {} --secret {name}`",
                self.label, self.plugin_id
            )));
        }
        // The source's message names the secret and the backend, never the value.
        let secret = self
            .services
            .secrets
            .get(&name)
            .await
            .map_err(|e| match e.kind {
                CallErrorKind::Denied => PluginError::Denied(e.to_string()),
                CallErrorKind::Timeout => PluginError::Timeout(e.to_string()),
                _ => PluginError::Unavailable(e.to_string()),
            })?;
        let secret = secret.ok_or_else(|| {
            PluginError::Unavailable(format!("secret `{name}` is not set on this node"))
        })?;
        self.scrubber.add(&name, &secret);
        Ok(secret.expose().to_owned())
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, PluginError> {
        let key = self.kv_key(&key)?;
        self.kv_read(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), PluginError> {
        check_kv_value(&value)?;
        let key = self.kv_key(&key)?;
        self.kv_buffer(key, Some(value))
    }

    fn delete(&mut self, key: String) -> Result<(), PluginError> {
        let key = self.kv_key(&key)?;
        self.kv_buffer(key, None)
    }

    async fn set_if_absent(
        &mut self,
        key: String,
        value: Vec<u8>,
        writes: Vec<kv::Write>,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let (key, batch) = self.kv_batch(&key, value, writes)?;
        if self.remaining().is_zero() {
            return Err(PluginError::Timeout(
                "the call's deadline passed before set-if-absent; nothing was written".into(),
            ));
        }
        let held = self.kv_read(&key)?;
        let before = (self.kv.writes.clone(), self.kv.keys, self.kv.bytes);
        if held.is_none() {
            // Within the quota like any write; then written at once, with the call's
            // earlier writes, as one batch.
            for write in batch {
                let (key, value) = match write {
                    Write::Put(_, key, value) => (key, Some(value)),
                    Write::Remove(_, key) => (key, None),
                };
                if let Err(e) = self.kv_buffer(key, value) {
                    (self.kv.writes, self.kv.keys, self.kv.bytes) = before;
                    return Err(e);
                }
            }
        }
        let services = self.services.clone();
        let held = {
            let _check_and_write = services
                .kv_check_and_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let held = match held {
                Some(held) => Some(held),
                None => services
                    .store
                    .get(Space::PluginKv, &key)
                    .map_err(store_error)?,
            };
            if held.is_none() {
                // One batch: the key and the writes survive a crash together or not at all.
                self.kv.apply(&services, &self.plugin_id);
            } else {
                (self.kv.writes, self.kv.keys, self.kv.bytes) = before;
            }
            held
        };
        // Durable before returning, whichever way it went: a value found may be one that
        // another call wrote a moment ago and is still making durable. (An fsync cannot be
        // interrupted; the call's deadline was checked before.) The call waits for the
        // fsync as a future, holding no thread.
        services
            .store
            .persist_async(services.kv_durability)
            .await
            .map_err(store_error)?;
        Ok(held)
    }
}

impl clock::Host for CallState {
    fn now_ms(&mut self) -> u64 {
        crate::now_ms()
    }

    fn monotonic_ns(&mut self) -> u64 {
        u64::try_from(self.services.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
