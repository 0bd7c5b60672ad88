//! The host side of the WIT imports, one module per interface (`log`, `http`, `secrets`,
//! `kv`, `clock`), and the state each call's store carries. Every import re-checks the
//! grant in force when the call started; HTTP requests are bounded by the call's own
//! deadline. A new interface is a module here, its arm in [`link`], and its [`Import`].

mod clock;
mod http;
mod kv;
mod log;
mod secrets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eyeflow_actors::exec::Scrubber;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::eyeflow::plugin as wit;
use super::grants::Grant;
use super::limits::CallLimits;
use super::manifest::Import;
use crate::secrets::SecretSource;
use crate::store::{Durability, EmbeddedStore};

use eyeflow_actors::sync::Locked;
use kv::KvBuffer;

/// Captured guest stderr (panic messages), per call; the rest is dropped.
const STDERR_CAPTURE: usize = 8 * 1024;

/// What every call shares: the store, the secrets source and the HTTP client.
pub(crate) struct Services {
    pub(crate) store: EmbeddedStore,
    secrets: Arc<dyn SecretSource>,
    http: reqwest::Client,
    started: Instant,
    /// How `set-if-absent` makes its batch durable before it returns.
    kv_durability: Durability,
    /// Held by `set-if-absent` from reading its key to writing its batch, so that two
    /// calls cannot both find the key absent. A call applying its plain writes does not take
    /// it.
    kv_check_and_write: Mutex<()>,
    /// Per-plugin quotas of the KV store and of logs.
    quotas: Quotas,
    /// KV keys and bytes each plugin holds (counted on its first write after a start).
    kv_usage: Mutex<HashMap<Arc<str>, kv::KvUsage>>,
    /// Log bytes of each plugin in the current second, and how many were dropped.
    log_usage: Mutex<HashMap<Arc<str>, log::LogWindow>>,
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
}

/// A guest's stderr: the first [`STDERR_CAPTURE`] bytes are kept (a panic message), the
/// rest dropped — never a trap for writing too much.
#[derive(Clone, Default)]
pub(crate) struct CappedPipe(Arc<Mutex<Vec<u8>>>);

impl CappedPipe {
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.0.locked().clone()
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut kept = self.0.locked();
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

/// The data of one call's store.
pub(crate) struct CallState {
    pub(crate) plugin_id: Arc<str>,
    label: Arc<str>,
    grant: Arc<Grant>,
    pub(crate) services: Arc<Services>,
    deadline: Instant,
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
            wasi.wall_clock(clock::Stopped)
                .monotonic_clock(clock::Stopped);
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

    /// Time left before the call's deadline.
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
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
    type Own = HasSelf<CallState>;
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::types::add_to_linker::<CallState, Own>(linker, |s| s)?;
    for import in &grant.imports {
        match import {
            Import::Log => wit::log::add_to_linker::<CallState, Own>(linker, |s| s)?,
            Import::Http => wit::http::add_to_linker::<CallState, Own>(linker, |s| s)?,
            Import::Secrets => wit::secrets::add_to_linker::<CallState, Own>(linker, |s| s)?,
            Import::Kv => wit::kv::add_to_linker::<CallState, Own>(linker, |s| s)?,
            Import::Clock => wit::clock::add_to_linker::<CallState, Own>(linker, |s| s)?,
        }
    }
    Ok(())
}

impl wit::types::Host for CallState {}
