//! The points where an execution waits on others: the resource arbiter (a permit per
//! resource key), the scheduler's instruction boundary (where a preemptible execution yields
//! to higher-priority work) and the instruction actors of its program (which admit it to
//! each instruction). The executor calls them; `arbiter`, `scheduler` and `supervision`
//! implement them.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::ports::CallError;

/// Held while an instruction drives a resource; dropping it releases the resource (also on
/// panic or error: release never depends on an actor's `post_stop`).
pub struct ResourceHold {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl ResourceHold {
    /// A hold that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }
}

impl ResourceHold {
    /// Drops the hold without releasing (it was never handed over).
    pub(crate) fn disarm(mut self) {
        self.release = None;
    }
}

impl Drop for ResourceHold {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for ResourceHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResourceHold")
    }
}

/// Grants exclusive use of a resource key.
#[async_trait::async_trait]
pub trait ResourceGate: Send + Sync {
    /// Waits for `key` (served by `priority`, lower = more urgent, then arrival) for at most
    /// `max_wait`; `CallErrorKind::Timeout` with origin `arbiter` when it expires (the
    /// executor classifies it as `ResourceTimeout`).
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        priority: u32,
        max_wait: Duration,
    ) -> Result<ResourceHold, CallError>;
}

/// The scheduler's hook at every instruction boundary.
#[async_trait::async_trait]
pub trait Boundary: Send + Sync {
    /// Called before each instruction of an execution running at `priority`. A preemptible
    /// execution may be parked here (its task waits, holding no thread) while more urgent
    /// work runs; a non-preemptible one returns at once.
    async fn checkpoint(&self, execution_id: &str, priority: u32, preemptible: bool);

    /// Runs `wait` — execution `execution_id` of `program` writing to the journal and
    /// waiting for the fsync that makes it durable — holding no slot: the execution gives
    /// its slot (and its program's turn) up meanwhile, so that other executions run and
    /// share that fsync, and takes them back, before more urgent or older work only, when
    /// it ends — unless `last` (its end's write: it then only returns). Without a
    /// scheduler behind it, just `wait`.
    async fn durable(
        &self,
        program: &str,
        execution_id: &str,
        last: bool,
        wait: BoxFuture<'_, ()>,
    ) {
        let _ = (program, execution_id, last);
        wait.await;
    }
}

/// The instruction actors of a deployed program version, one per instruction: an execution
/// enters each instruction it runs through that instruction's actor.
#[async_trait::async_trait]
pub trait Stations: Send + Sync {
    /// Enters an execution into instruction `index` (its position in the program) through
    /// its actor; `Unavailable` when that actor is down (being restarted: the executor tries
    /// again, reading the program's stations anew, for a while).
    async fn enter(&self, index: usize) -> Result<(), CallError>;
}

/// A fallback decision taken for a failed attempt, as the fallback engine's actor logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The program, `id@version`.
    pub program: String,
    /// The instruction (its path id).
    pub instruction: String,
    /// The failure's class (`timeout`, `unavailable`, ...).
    pub class: &'static str,
    /// What was decided (`retry`, `fallback_value`, `fallback_model`, `skip`, `abort`,
    /// `fail`).
    pub decision: &'static str,
    /// A retry's wait before the next attempt.
    pub delay: Option<Duration>,
}

/// The fallback engine's actor: it keeps the decision log and owns the retry timers (the
/// decisions themselves are pure functions of the instruction's policy, taken by the
/// execution).
#[async_trait::async_trait]
pub trait Fallbacks: Send + Sync {
    /// Logs `decision`; for a retry, returns once its delay has passed on the actor's timer.
    async fn decided(&self, decision: Decided) -> Result<(), CallError>;
}
