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
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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
/// Captured guest stderr (panic messages), per call.
pub(crate) const STDERR_CAPTURE: usize = 8 * 1024;

/// What every call shares: the store, the secrets source and the HTTP client.
pub(crate) struct Services {
    pub(crate) store: EmbeddedStore,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) http: reqwest::blocking::Client,
    pub(crate) started: Instant,
    /// How `set-if-absent` makes its batch durable before it returns.
    pub(crate) kv_durability: Durability,
    /// Held by `set-if-absent` from reading its key to writing its batch, so that two
    /// calls cannot both find the key absent. Plain `set` and `delete` do not take it.
    kv_check_and_write: Mutex<()>,
}

impl Services {
    pub(crate) fn new(
        store: EmbeddedStore,
        secrets: Arc<dyn SecretSource>,
        kv_durability: Durability,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::blocking::Client::builder()
            // A granted host must not be able to bounce the plugin to one that is not.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            store,
            secrets,
            http,
            started: Instant::now(),
            kv_durability,
            kv_check_and_write: Mutex::new(()),
        })
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
    pub(crate) stderr: MemoryOutputPipe,
    /// Whether the plugin wrote to its KV store during this call (written without a flush:
    /// the host or the executor's next durable write makes them durable).
    pub(crate) kv_written: bool,
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
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        // No preopened directories, no environment, no arguments, no network.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            plugin_id,
            label,
            grant,
            services,
            deadline,
            limits,
            stderr,
            kv_written: false,
            scrubber: Scrubber::new(),
            wasi,
            table: ResourceTable::new(),
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
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
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
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
    fn send(&mut self, request: http::Request) -> Result<http::Response, PluginError> {
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
        let response = builder.send().map_err(|e| {
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
        let body = crate::http::read_body(response, "http", timeout.as_millis()).map_err(|e| {
            match e.kind {
                CallErrorKind::Timeout => PluginError::Timeout(e.message),
                _ => PluginError::Unavailable(e.message),
            }
        })?;
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }
}

impl secrets::Host for CallState {
    fn get(&mut self, name: String) -> Result<String, PluginError> {
        if !self.grant.allows_secret(&name) {
            return Err(PluginError::Denied(format!(
                "secret `{name}` is not granted to {}; grant it with `eyeflow plugin grant {} --secret {name}`",
                self.label, self.plugin_id
            )));
        }
        // The source's message names the secret and the backend, never the value.
        let secret = self.services.secrets.get(&name).map_err(|e| match e.kind {
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
        self.services
            .store
            .get(Space::PluginKv, &key)
            .map_err(store_error)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), PluginError> {
        check_kv_value(&value)?;
        let key = self.kv_key(&key)?;
        self.kv_written = true;
        self.services
            .store
            .write([Write::Put(Space::PluginKv, key, value)])
            .map_err(store_error)
    }

    fn delete(&mut self, key: String) -> Result<(), PluginError> {
        let key = self.kv_key(&key)?;
        self.kv_written = true;
        self.services
            .store
            .write([Write::Remove(Space::PluginKv, key)])
            .map_err(store_error)
    }

    fn set_if_absent(
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
        let services = &self.services;
        let held = {
            let _check_and_write = services
                .kv_check_and_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let held = services
                .store
                .get(Space::PluginKv, &key)
                .map_err(store_error)?;
            if held.is_none() {
                // One batch: the key and the writes survive a crash together or not at all.
                services.store.write(batch).map_err(store_error)?;
            }
            held
        };
        // Durable before returning, whichever way it went: a value found may be one that
        // another call wrote a moment ago and is still making durable. (An fsync cannot be
        // interrupted; the call's deadline was checked before.)
        services
            .store
            .persist(services.kv_durability)
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
