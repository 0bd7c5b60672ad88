//! The node's wasmtime engine: its `Config` (Cranelift, pooling allocator, stack limit,
//! epoch or fuel instrumentation), the epoch ticker thread that drives call deadlines, and
//! the runtime calls run on. One of each per plugin host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::imports::Quotas;
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

/// The node's wasmtime engine for `config`: Cranelift, a pooling allocator sized for
/// [`HostConfig::max_concurrent_calls`], and the deadline mode's instrumentation.
pub(super) fn engine(config: &HostConfig) -> Result<Engine> {
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

/// The thread that advances the engine's epoch every [`TICK`] (with
/// [`DeadlineMode::Epoch`]); stopped and joined when dropped.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine` when `mode` is [`DeadlineMode::Epoch`] (else does nothing).
    pub(super) fn start(engine: &Engine, mode: DeadlineMode) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (mode == DeadlineMode::Epoch)
            .then(|| {
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
            })
            .transpose()
            .map_err(Error::io("(epoch ticker thread)"))?;
        Ok(Self { stop, thread })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The runtime the calls run on (asynchronous WASI, deadline timers). Shut down in the
/// background when the host goes: a runtime dropped from an async context would panic.
pub(super) struct CallRuntime(Option<tokio::runtime::Runtime>);

impl CallRuntime {
    pub(super) fn new() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("eyeflow-plugin-io")
            .enable_all()
            .build()
            .map(|runtime| Self(Some(runtime)))
    }

    /// Runs `future` to its end on the calling thread (`None` once shut down).
    pub(super) fn block_on<F: std::future::Future>(&self, future: F) -> Option<F::Output> {
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
