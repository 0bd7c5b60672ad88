//! The call machinery: a fresh instance of a loaded plugin version in a store of its own,
//! admitted per plugin, run as a future under the call's deadline (epoch ticks or fuel in
//! the guest, a timer around host waits), its KV writes applied or dropped, and a failure
//! classified from wasmtime's typed errors — never from the text of a message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eyeflow_actors::exec::Scrubber;
use eyeflow_actors::ports::{CallError, CallErrorKind};
use wasmtime::component::ComponentExportIndex;
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, Trap};

use super::admission::Slots;
use super::engine::{CallRuntime, DeadlineMode, HostConfig};
use super::imports::{CallState, Services};
use super::limits::{CallLimits, MemoryLimitReached};
use super::loaded::Loaded;

/// What a call that returned leaves besides its result.
pub(super) struct Finished {
    /// The secrets it read, to take out of what it returned.
    pub(super) scrubber: Scrubber,
    /// Whether a KV write was refused for the plugin's quota.
    pub(super) over_quota: bool,
}

/// Who makes a call's plugin KV writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KvWrites {
    /// The host, before the call returns.
    Persist,
    /// The executor's durable journal write of the CALL_ACTION step that made the call.
    LeftToJournal,
}

/// What every call needs: the engine, the limits, the shared services, the per-plugin
/// admission and the runtime blocking callers wait on.
pub(super) struct Calls {
    pub(super) engine: Engine,
    config: HostConfig,
    pub(super) services: Arc<Services>,
    slots: Slots,
    runtime: CallRuntime,
}

impl Calls {
    pub(super) fn new(
        engine: Engine,
        config: HostConfig,
        services: Arc<Services>,
        runtime: CallRuntime,
    ) -> Self {
        Self {
            slots: Slots::new(config.max_calls_per_plugin),
            engine,
            config,
            services,
            runtime,
        }
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
    pub(super) async fn call<P, R>(
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
        let _slot = self.slots.acquire(&loaded.id, end).await.ok_or_else(|| {
            err(
                CallErrorKind::RateLimited,
                format!(
                    "{} calls of this plugin already run (the limit per plugin) and none ended within the deadline of {} ms",
                    self.config.max_calls_per_plugin,
                    deadline.as_millis()
                ),
            )
        })?;
        let state = CallState::new(
            loaded.id.clone(),
            loaded.label.clone(),
            loaded.grant.clone(),
            self.services.clone(),
            end,
            CallLimits::new(self.config.memory_limit, self.config.table_elements),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        match self.config.deadline {
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
        let bounded = self.config.deadline != DeadlineMode::Unbounded;
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
            self.services
                .store
                .persist_async(self.config.kv_durability)
                .await
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

    /// Runs a call on the host's own runtime, waiting on the calling thread.
    pub(super) fn blocking<T>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<T, CallError>>,
    ) -> std::result::Result<T, CallError> {
        self.runtime.block_on(call).unwrap_or_else(|| {
            Err(CallError::new(
                CallErrorKind::Unavailable,
                "plugin host",
                "the plugin host is shut down",
            ))
        })
    }
}

/// The class of a failed call, from the type of wasmtime's error (whatever context wraps
/// it): the deadline (an epoch interrupt, fuel run out, or the host's timer, which
/// reports [`Trap::Interrupt`]); memory or the instance pool exhausted; a trap of the
/// guest; anything else is the host's own failure.
fn kind_of(error: &wasmtime::Error) -> CallErrorKind {
    if error.downcast_ref::<MemoryLimitReached>().is_some()
        || error.downcast_ref::<PoolConcurrencyLimitError>().is_some()
    {
        return CallErrorKind::ResourceExhausted;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt | Trap::OutOfFuel) => CallErrorKind::Timeout,
        Some(Trap::AllocationTooLarge) => CallErrorKind::ResourceExhausted,
        Some(_) => CallErrorKind::Trap,
        None => CallErrorKind::Internal,
    }
}

/// Turns a wasmtime failure into a classified call error; a trap's message quotes what
/// the guest wrote to stderr (a panic message).
fn classify(
    store: &Store<CallState>,
    error: wasmtime::Error,
    deadline: Duration,
    elapsed: Duration,
    label: &str,
) -> CallError {
    let kind = kind_of(&error);
    let message = match (kind, error.downcast_ref::<Trap>()) {
        (CallErrorKind::Timeout, _) => format!(
            "deadline of {} ms exceeded (stopped after {} ms)",
            deadline.as_millis(),
            elapsed.as_millis()
        ),
        (CallErrorKind::Trap, Some(trap)) => {
            let stderr = store.data().stderr.contents();
            let stderr = String::from_utf8_lossy(&stderr);
            match stderr.trim() {
                "" => format!("trapped: {trap}"),
                detail => format!("trapped: {trap}: {detail}"),
            }
        }
        _ => format!("{error:#}"),
    };
    CallError::new(kind, label, message)
}

#[cfg(test)]
mod tests {
    use wasmtime::{Config, Instance, InstanceAllocationStrategy, Module, PoolingAllocationConfig};

    use super::*;

    /// `(module)`: the smallest core module, to fill an instance pool. The classes of a
    /// plugin's own traps are shown with real plugins in `runtime/tests/plugins/hostile.rs`.
    const EMPTY: &[u8] = b"\0asm\x01\0\0\0";
    /// `(module (memory 1))`: asks for one 64 KiB page when instantiated.
    const ONE_PAGE: &[u8] = b"\0asm\x01\0\0\0\x05\x03\x01\x00\x01";

    #[test]
    fn traps_are_classified_by_their_type_under_any_context() {
        for (trap, kind) in [
            (Trap::Interrupt, CallErrorKind::Timeout),
            (Trap::OutOfFuel, CallErrorKind::Timeout),
            (Trap::StackOverflow, CallErrorKind::Trap),
            (Trap::UnreachableCodeReached, CallErrorKind::Trap),
            (Trap::MemoryOutOfBounds, CallErrorKind::Trap),
            (Trap::IntegerDivisionByZero, CallErrorKind::Trap),
            (Trap::AllocationTooLarge, CallErrorKind::ResourceExhausted),
        ] {
            let error =
                wasmtime::Error::from(trap).context("error while executing at wasm backtrace");
            assert_eq!(kind_of(&error), kind, "{trap:?}");
        }
    }

    #[test]
    fn a_message_alone_classifies_nothing() {
        let error =
            wasmtime::format_err!("maximum concurrent limit of 1 for core instances reached");
        assert_eq!(kind_of(&error), CallErrorKind::Internal);
    }

    #[test]
    fn an_exhausted_instance_pool_is_resource_exhausted() {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(1)
            .total_memories(1)
            .total_tables(1)
            .max_memory_size(1 << 16);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).expect("engine");
        let module = Module::new(&engine, EMPTY).expect("module");
        let mut first = Store::new(&engine, ());
        Instance::new(&mut first, &module, &[]).expect("the pool's only instance");
        let mut second = Store::new(&engine, ());
        let error = Instance::new(&mut second, &module, &[]).expect_err("the pool is full");
        assert_eq!(
            kind_of(&error),
            CallErrorKind::ResourceExhausted,
            "{error:#}"
        );
    }

    #[test]
    fn memory_past_the_call_limit_is_resource_exhausted() {
        let engine = Engine::default();
        let module = Module::new(&engine, ONE_PAGE).expect("module");
        let mut store = Store::new(&engine, CallLimits::new(1024, 16));
        store.limiter(|limits| limits);
        let error = Instance::new(&mut store, &module, &[]).expect_err("over the limit");
        assert_eq!(
            kind_of(&error),
            CallErrorKind::ResourceExhausted,
            "{error:#}"
        );
        assert!(
            format!("{error:#}").contains("memory limit of 1024 bytes"),
            "{error:#}"
        );
    }
}
