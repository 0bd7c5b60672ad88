//! The resource arbiter: one permit per resource key (a valve, a pump), so two executions
//! never drive the same resource at once. Waiters are served by priority (lower level =
//! more urgent), then arrival; each waits at most its deadline and then gets a timeout that
//! the executor turns into `ResourceTimeout` and a fallback.
//!
//! Priority inversion: while an execution holds a key that a more urgent execution waits
//! for, [`Arbiter::inherited_priority`] reports the waiter's level for the holder, and the
//! scheduler lets the holder run at that level (it is not parked at its instruction
//! boundaries), so the urgent waiter is never stuck behind work of middle priority.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::gates::{ResourceGate, ResourceHold};
use crate::ports::{CallError, CallErrorKind};

#[derive(Default)]
struct Resource {
    holder: Option<String>,
    /// Waiting tickets: (priority, arrival).
    waiters: BTreeSet<(u32, u64)>,
}

#[derive(Default)]
struct State {
    resources: HashMap<String, Resource>,
    arrivals: u64,
}

/// The arbiter. Cheap to clone; clones share permits.
#[derive(Clone, Default)]
pub struct Arbiter {
    /// The permits, and where waiters wait for a release (a task each: no thread waits).
    inner: Arc<(Mutex<State>, Notify)>,
}

impl Arbiter {
    /// An arbiter with no resource held.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most urgent priority level waiting on a resource that `holder` holds, if any.
    pub fn inherited_priority(&self, holder: &str) -> Option<u32> {
        let state = self.lock();
        state
            .resources
            .values()
            .filter(|r| r.holder.as_deref() == Some(holder))
            .filter_map(|r| r.waiters.first().map(|(priority, _)| *priority))
            .min()
    }

    /// Who holds `key` now.
    pub fn holder(&self, key: &str) -> Option<String> {
        self.lock()
            .resources
            .get(key)
            .and_then(|r| r.holder.clone())
    }

    fn release(&self, key: &str) {
        let mut state = self.lock();
        if let Some(resource) = state.resources.get_mut(key) {
            resource.holder = None;
            if resource.waiters.is_empty() {
                state.resources.remove(key);
            }
        }
        drop(state);
        self.inner.1.notify_waiters();
    }

    /// Takes `ticket` out of `key`'s waiters (it gave up or was dropped) and lets the next
    /// waiter look again, since the ticket may have been first.
    fn withdraw(&self, key: &str, ticket: (u32, u64)) {
        let mut state = self.lock();
        if let Some(resource) = state.resources.get_mut(key) {
            resource.waiters.remove(&ticket);
            if resource.holder.is_none() && resource.waiters.is_empty() {
                state.resources.remove(key);
            }
        }
        drop(state);
        self.inner.1.notify_waiters();
    }
}

/// A waiter's ticket: withdrawn when its wait ends without the permit, also when the
/// waiting task is dropped (a cancelled execution never leaves a ticket in front).
struct Ticket<'a> {
    arbiter: &'a Arbiter,
    key: &'a str,
    ticket: (u32, u64),
    granted: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.granted {
            self.arbiter.withdraw(self.key, self.ticket);
        }
    }
}

#[async_trait::async_trait]
impl ResourceGate for Arbiter {
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        priority: u32,
        max_wait: Duration,
    ) -> Result<ResourceHold, CallError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut waiting = {
            let mut state = self.lock();
            state.arrivals += 1;
            let ticket = (priority, state.arrivals);
            state
                .resources
                .entry(key.to_owned())
                .or_default()
                .waiters
                .insert(ticket);
            Ticket {
                arbiter: self,
                key,
                ticket,
                granted: false,
            }
        };
        loop {
            // Registered before looking, so a release between the look and the wait wakes it.
            let released = self.inner.1.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut state = self.lock();
                let resource = state.resources.entry(key.to_owned()).or_default();
                if resource.holder.is_none() && resource.waiters.first() == Some(&waiting.ticket) {
                    resource.waiters.remove(&waiting.ticket);
                    resource.holder = Some(holder.to_owned());
                    waiting.granted = true;
                    let arbiter = self.clone();
                    let key = key.to_owned();
                    return Ok(ResourceHold::new(move || arbiter.release(&key)));
                }
                if tokio::time::Instant::now() >= deadline {
                    let held_by = resource
                        .holder
                        .clone()
                        .unwrap_or_else(|| "a more urgent waiter".to_owned());
                    return Err(CallError::new(
                        CallErrorKind::Timeout,
                        "arbiter",
                        format!(
                            "resource `{key}` not granted within {} ms (held by {held_by})",
                            max_wait.as_millis()
                        ),
                    ));
                }
            }
            // Woken by a release, or at the deadline to give up.
            let _ = tokio::time::timeout_at(deadline, released).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_has_one_holder_and_is_released_on_drop() {
        let arbiter = Arbiter::new();
        let hold = arbiter
            .acquire("valve/1", "e1", 128, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(arbiter.holder("valve/1").as_deref(), Some("e1"));
        let err = arbiter
            .acquire("valve/1", "e2", 128, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.kind, CallErrorKind::Timeout);
        assert!(err.message.contains("held by e1"), "{err}");
        // Another key is independent.
        let _other = arbiter
            .acquire("valve/2", "e2", 128, Duration::from_millis(20))
            .await
            .unwrap();
        drop(hold);
        assert_eq!(arbiter.holder("valve/1"), None);
        let _hold = arbiter
            .acquire("valve/1", "e2", 128, Duration::from_millis(20))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_are_served_by_priority_then_arrival() {
        let arbiter = Arbiter::new();
        let hold = arbiter
            .acquire("pump", "holder", 128, Duration::from_secs(1))
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (name, priority) in [
            ("low", 192),
            ("normal", 128),
            ("critical", 0),
            ("normal-2", 128),
        ] {
            let (arb, order) = (arbiter.clone(), order.clone());
            threads.push(tokio::spawn(async move {
                let _hold = arb
                    .acquire("pump", name, priority, Duration::from_secs(5))
                    .await
                    .unwrap();
                order.lock().unwrap().push(name);
            }));
            // Arrival order is the spawn order.
            while arbiter.lock().resources["pump"].waiters.len() < threads.len() {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(
            arbiter.inherited_priority("holder"),
            Some(0),
            "the holder inherits the critical level"
        );
        drop(hold);
        for thread in threads {
            thread.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["critical", "normal", "normal-2", "low"]
        );
        assert_eq!(arbiter.inherited_priority("holder"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_first_waiter_does_not_block_the_next() {
        let arbiter = Arbiter::new();
        let hold = arbiter
            .acquire("k", "a", 128, Duration::from_secs(1))
            .await
            .unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let (arb, flag) = (arbiter.clone(), done.clone());
        let patient = tokio::spawn(async move {
            let _h = arb
                .acquire("k", "patient", 192, Duration::from_secs(5))
                .await
                .unwrap();
            flag.store(true, Ordering::SeqCst);
        });
        while arbiter.lock().resources["k"].waiters.is_empty() {
            tokio::task::yield_now().await;
        }
        // A more urgent waiter that gives up must not leave its ticket in front.
        assert!(
            arbiter
                .acquire("k", "hasty", 0, Duration::from_millis(10))
                .await
                .is_err()
        );
        drop(hold);
        patient.await.unwrap();
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hold_intervals_on_one_valve_never_overlap() {
        let arbiter = Arbiter::new();
        let intervals = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let (arbiter, intervals) = (arbiter.clone(), intervals.clone());
                tokio::spawn(async move {
                    for i in 0..25 {
                        let holder = format!("e{t}-{i}");
                        let _hold = arbiter
                            .acquire("valve/v-101", &holder, t * 30, Duration::from_secs(10))
                            .await
                            .unwrap();
                        let start = Instant::now();
                        tokio::time::sleep(Duration::from_micros(200)).await;
                        intervals.lock().unwrap().push((start, Instant::now()));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.await.unwrap();
        }
        let mut intervals = intervals.lock().unwrap().clone();
        assert_eq!(intervals.len(), 200);
        intervals.sort();
        for pair in intervals.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlapping holds: {pair:?}");
        }
    }
}
