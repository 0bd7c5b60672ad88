//! Admission of calls per plugin: at most a fixed number of calls of one plugin run at once
//! (the node sets it below its worker count, so one plugin cannot take every worker); a
//! call past that waits for a slot within its own deadline.

use eyeflow_actors::sync::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many calls of each plugin run now, bounded per plugin.
pub(super) struct Slots {
    limit: usize,
    held: Mutex<HashMap<Arc<str>, usize>>,
    /// Calls waiting for a slot wait here (as tasks).
    freed: tokio::sync::Notify,
}

/// A running call's slot, given back on drop.
pub(super) struct Slot<'a> {
    slots: &'a Slots,
    plugin: Arc<str>,
}

impl Slots {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            held: Mutex::default(),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// A slot for a call of `plugin`, waiting until `until` at most for one to free.
    pub(super) async fn acquire(&self, plugin: &Arc<str>, until: Instant) -> Option<Slot<'_>> {
        loop {
            // Registered before looking, so a slot freed in between wakes this call.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut held = self.held.locked();
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
        let mut held = self.slots.held.locked();
        if let Some(running) = held.get_mut(&self.plugin) {
            *running = running.saturating_sub(1);
        }
        drop(held);
        self.slots.freed.notify_waiters();
    }
}
