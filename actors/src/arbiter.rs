//! The resource arbiter: one permit per resource key (a valve, a pump), so two executions
//! never drive the same resource at once. Waiters are served by priority (lower level =
//! more urgent), then arrival; each waits at most its deadline and then gets a timeout that
//! the executor turns into `ResourceTimeout` and a fallback.
//!
//! The arbiter is a set of supervised actors, one per shard of the keys (a key's shard is
//! fixed by its hash): each shard actor owns its keys' holders and waiting queues and is the
//! only one to grant them. An execution asks the shard of its key and waits, as a task, for
//! the grant or its deadline. Who holds what is also written in a ledger that outlives the
//! shard: a restarted shard rebuilds its holders from it (the live holds: a hold is released
//! when the execution drops it, whether or not the shard is up) and never grants a held key
//! twice; the waiters a crash dropped ask the new shard again, keeping their deadline.
//! Holds are process memory: after a node restart the resumed executions acquire anew.
//!
//! Priority inversion: while an execution holds a key that a more urgent execution waits
//! for, [`Arbiter::inherited_priority`] reports the waiter's level for the holder (each shard
//! publishes its contended keys), and the scheduler lets the holder run at that level (it is
//! not parked at its instruction boundaries), so the urgent waiter is never stuck behind
//! work of middle priority.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::gates::{ResourceGate, ResourceHold};
use crate::ports::{CallError, CallErrorKind};
use crate::services::{Mailbox, Service, ServiceSpec};
use crate::supervision::RestartPolicy;
use crate::sync::Locked;

/// Messages of an arbiter shard.
pub(crate) enum ShardMsg {
    /// `holder` waits for `key` at `priority`; the grant goes to `reply`. `ticket` names the
    /// wait (to withdraw it).
    Acquire {
        /// The resource key.
        key: String,
        /// The execution that waits.
        holder: String,
        /// Its level (lower = more urgent).
        priority: u32,
        /// Its wait's name.
        ticket: u64,
        /// Where the hold goes.
        reply: oneshot::Sender<ResourceHold>,
    },
    /// `holder` released `key`.
    Release {
        /// The resource key.
        key: String,
        /// Who held it.
        holder: String,
    },
    /// Wait `ticket` for `key` ended without the permit (deadline, cancelled execution).
    Withdraw {
        /// The resource key.
        key: String,
        /// The wait's name.
        ticket: u64,
    },
    /// One line about the shard's state.
    Describe(oneshot::Sender<String>),
    /// Test hook and operator tool: panic (a bug), so that the node supervisor restarts it.
    Crash,
}

struct Waiter {
    ticket: u64,
    holder: String,
    reply: oneshot::Sender<ResourceHold>,
}

#[derive(Default)]
struct Resource {
    holder: Option<String>,
    /// Waiters by (priority, arrival at the shard).
    waiters: BTreeMap<(u32, u64), Waiter>,
}

/// What every shard and every hold share.
pub(crate) struct Shared {
    shards: Vec<Arc<Mailbox<ShardMsg>>>,
    /// key → holder, for every key held now (written by the granting shard, cleared by the
    /// hold's release).
    ledger: Mutex<HashMap<String, String>>,
    /// key → (holder, most urgent waiting level), for every held key someone waits for.
    contended: Mutex<HashMap<String, (String, u32)>>,
    tickets: AtomicU64,
}

impl Shared {
    fn shard_of(&self, key: &str) -> usize {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let count = u64::try_from(self.shards.len().max(1)).unwrap_or(1);
        usize::try_from(hasher.finish() % count).unwrap_or(0)
    }
}

/// The arbiter, as executions and the scheduler reach it. Cheap to clone; clones share
/// the shards.
#[derive(Clone)]
pub struct Arbiter {
    shared: Arc<Shared>,
}

impl Arbiter {
    /// An arbiter of `shards` shard actors (at least one), none started yet: start them
    /// under a supervisor from [`Arbiter::services`].
    pub fn new(shards: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                shards: (0..shards.max(1))
                    .map(|_| Mailbox::new("arbiter"))
                    .collect(),
                ledger: Mutex::default(),
                contended: Mutex::default(),
                tickets: AtomicU64::new(0),
            }),
        }
    }

    /// The shard actors' specs (`node/arbiter/<n>`), each restarted within `policy`.
    pub fn services(&self, policy: RestartPolicy) -> Vec<ServiceSpec> {
        (0..self.shared.shards.len())
            .map(|index| {
                let shared = self.shared.clone();
                ServiceSpec::new(
                    format!("node/arbiter/{index}"),
                    "arbiter",
                    policy,
                    self.shared.shards[index].clone(),
                    move || (ArbiterShard, (shared.clone(), index)),
                )
            })
            .collect()
    }

    /// The most urgent priority level waiting on a resource that `holder` holds, if any.
    pub fn inherited_priority(&self, holder: &str) -> Option<u32> {
        self.shared
            .contended
            .locked()
            .values()
            .filter(|(h, _)| h == holder)
            .map(|(_, level)| *level)
            .min()
    }

    /// Who holds `key` now.
    pub fn holder(&self, key: &str) -> Option<String> {
        self.shared.ledger.locked().get(key).cloned()
    }
}

/// Withdraws a wait when it ends without the permit (also when the waiting task is
/// dropped: a cancelled execution never leaves a ticket in front).
struct Waiting<'a> {
    shard: &'a Mailbox<ShardMsg>,
    key: &'a str,
    ticket: u64,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shard.tell(ShardMsg::Withdraw {
                key: self.key.to_owned(),
                ticket: self.ticket,
            });
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
        let shard = &self.shared.shards[self.shared.shard_of(key)];
        loop {
            let ticket = self.shared.tickets.fetch_add(1, Ordering::Relaxed);
            let (reply, granted) = oneshot::channel();
            let asked = shard.tell(ShardMsg::Acquire {
                key: key.to_owned(),
                holder: holder.to_owned(),
                priority,
                ticket,
                reply,
            });
            let mut waiting = Waiting {
                shard,
                key,
                ticket,
                armed: asked,
            };
            if asked {
                match tokio::time::timeout_at(deadline, granted).await {
                    Ok(Ok(hold)) => {
                        waiting.armed = false;
                        return Ok(hold);
                    }
                    // The shard stopped with the wait in it: ask its next incarnation.
                    Ok(Err(_)) => waiting.armed = false,
                    Err(_) => {}
                }
            }
            drop(waiting);
            if tokio::time::Instant::now() >= deadline {
                let held_by = self
                    .holder(key)
                    .unwrap_or_else(|| "a more urgent waiter".to_owned());
                let why = if asked {
                    format!("held by {held_by}")
                } else {
                    "its arbiter shard is down".to_owned()
                };
                return Err(CallError::new(
                    CallErrorKind::Timeout,
                    "arbiter",
                    format!(
                        "resource `{key}` not granted within {} ms ({why})",
                        max_wait.as_millis()
                    ),
                ));
            }
            if !asked {
                // The shard is being restarted.
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + Duration::from_millis(10)),
                )
                .await;
            }
        }
    }
}

/// One shard of the arbiter: grants the keys that hash to it.
pub(crate) struct ArbiterShard;

/// A shard's state: its keys.
pub(crate) struct ShardState {
    shared: Arc<Shared>,
    index: usize,
    resources: HashMap<String, Resource>,
    arrivals: u64,
    granted: u64,
}

impl ShardState {
    /// Grants `key` to its first waiter still waiting, if it is free.
    fn serve(&mut self, key: &str) {
        let Some(resource) = self.resources.get_mut(key) else {
            return;
        };
        while resource.holder.is_none() {
            let Some((_, waiter)) = resource.waiters.pop_first() else {
                break;
            };
            if waiter.reply.is_closed() {
                continue;
            }
            self.shared
                .ledger
                .locked()
                .insert(key.to_owned(), waiter.holder.clone());
            resource.holder = Some(waiter.holder.clone());
            let hold = release(&self.shared, self.index, key, &waiter.holder);
            match waiter.reply.send(hold) {
                Ok(()) => self.granted += 1,
                Err(hold) => {
                    // It gave up in between: the key was never its.
                    hold.disarm();
                    self.shared.ledger.locked().remove(key);
                    resource.holder = None;
                }
            }
        }
        self.publish(key);
    }

    /// Publishes `key`'s contention for priority inheritance; forgets an idle key.
    fn publish(&mut self, key: &str) {
        let mut contended = self.shared.contended.locked();
        match self.resources.get(key) {
            Some(resource) => {
                let waiting = resource
                    .waiters
                    .iter()
                    .find(|(_, w)| !w.reply.is_closed())
                    .map(|((level, _), _)| *level);
                match (&resource.holder, waiting) {
                    (Some(holder), Some(level)) => {
                        contended.insert(key.to_owned(), (holder.clone(), level));
                    }
                    _ => {
                        contended.remove(key);
                    }
                }
                if resource.holder.is_none() && resource.waiters.is_empty() {
                    self.resources.remove(key);
                }
            }
            None => {
                contended.remove(key);
            }
        }
    }
}

/// The hold of `key` by `holder`: dropping it clears the ledger and tells the shard, which
/// grants the next waiter (or, restarted meanwhile, finds the key free in the ledger).
fn release(shared: &Arc<Shared>, index: usize, key: &str, holder: &str) -> ResourceHold {
    let (shared, key, holder) = (shared.clone(), key.to_owned(), holder.to_owned());
    ResourceHold::new(move || {
        {
            let mut ledger = shared.ledger.locked();
            if ledger.get(&key) == Some(&holder) {
                ledger.remove(&key);
            }
        }
        shared.shards[index].tell(ShardMsg::Release { key, holder });
    })
}

impl Actor for ArbiterShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = (Arc<Shared>, usize);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (shared, index): (Arc<Shared>, usize),
    ) -> Result<Self::State, ActorProcessingErr> {
        // Restarted: the keys of this shard that are held now, from the ledger. Their
        // waiters were dropped with the old incarnation and ask again.
        let mut resources = HashMap::new();
        for (key, holder) in shared.ledger.locked().iter() {
            if shared.shard_of(key) == index {
                resources.insert(
                    key.clone(),
                    Resource {
                        holder: Some(holder.clone()),
                        waiters: BTreeMap::new(),
                    },
                );
            }
        }
        shared
            .contended
            .locked()
            .retain(|key, _| shared.shard_of(key) != index);
        Ok(ShardState {
            shared,
            index,
            resources,
            arrivals: 0,
            granted: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Acquire {
                key,
                holder,
                priority,
                ticket,
                reply,
            } => {
                state.arrivals += 1;
                let arrival = state.arrivals;
                state
                    .resources
                    .entry(key.clone())
                    .or_default()
                    .waiters
                    .insert(
                        (priority, arrival),
                        Waiter {
                            ticket,
                            holder,
                            reply,
                        },
                    );
                state.serve(&key);
            }
            ShardMsg::Release { key, holder } => {
                if let Some(resource) = state.resources.get_mut(&key)
                    && resource.holder.as_ref() == Some(&holder)
                {
                    resource.holder = None;
                }
                state.serve(&key);
            }
            ShardMsg::Withdraw { key, ticket } => {
                if let Some(resource) = state.resources.get_mut(&key) {
                    resource.waiters.retain(|_, w| w.ticket != ticket);
                }
                state.serve(&key);
            }
            ShardMsg::Describe(reply) => {
                let held = state
                    .resources
                    .values()
                    .filter(|r| r.holder.is_some())
                    .count();
                let waiting: usize = state.resources.values().map(|r| r.waiters.len()).sum();
                let _ = reply.send(format!(
                    "{held} keys held, {waiting} waiting, {} granted",
                    state.granted
                ));
            }
            ShardMsg::Crash => panic!(
                "arbiter shard {} crashed on request ({} keys known)",
                state.index,
                state.resources.len()
            ),
        }
        Ok(())
    }
}

impl Service for ArbiterShard {
    fn crash() -> ShardMsg {
        ShardMsg::Crash
    }

    fn describe(reply: oneshot::Sender<String>) -> ShardMsg {
        ShardMsg::Describe(reply)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;

    /// An arbiter whose shards run unsupervised (the node supervisor is not under test).
    async fn started(shards: usize) -> Arbiter {
        let arbiter = Arbiter::new(shards);
        for index in 0..shards {
            start_shard(&arbiter, index).await;
        }
        arbiter
    }

    async fn start_shard(arbiter: &Arbiter, index: usize) {
        let (actor, _) = Actor::spawn(None, ArbiterShard, (arbiter.shared.clone(), index))
            .await
            .unwrap();
        arbiter.shared.shards[index].install(actor);
    }

    /// How many waits `key`'s shard holds, once it handled every earlier message.
    async fn waiting(arbiter: &Arbiter, key: &str) -> usize {
        let shard = &arbiter.shared.shards[arbiter.shared.shard_of(key)];
        let line = shard.ask(ShardMsg::Describe).await.unwrap();
        let (_, rest) = line.split_once(", ").unwrap();
        rest.split(' ').next().unwrap().parse().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_has_one_holder_and_is_released_on_drop() {
        let arbiter = started(2).await;
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
            .acquire("valve/2", "e2", 128, Duration::from_secs(5))
            .await
            .unwrap();
        drop(hold);
        assert_eq!(arbiter.holder("valve/1"), None);
        let _hold = arbiter
            .acquire("valve/1", "e2", 128, Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_are_served_by_priority_then_arrival() {
        let arbiter = started(2).await;
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
            while waiting(&arbiter, "pump").await < threads.len() {
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
        let arbiter = started(2).await;
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
        while waiting(&arbiter, "k").await == 0 {
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
        let arbiter = started(2).await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_shard_keeps_the_holder_and_serves_the_waiters_again() {
        let arbiter = started(1).await;
        let hold = arbiter
            .acquire("valve/9", "first", 128, Duration::from_secs(1))
            .await
            .unwrap();
        let arb = arbiter.clone();
        let second = tokio::spawn(async move {
            arb.acquire("valve/9", "second", 128, Duration::from_secs(20))
                .await
                .map(|hold| (hold, arb.holder("valve/9")))
        });
        while waiting(&arbiter, "valve/9").await == 0 {
            tokio::task::yield_now().await;
        }
        // The shard dies with the wait inside it; a new incarnation starts.
        let old = arbiter.shared.shards[0].current().unwrap();
        assert!(arbiter.shared.shards[0].tell(ShardMsg::Crash));
        while old.get_status() != ractor::ActorStatus::Stopped {
            tokio::task::yield_now().await;
        }
        start_shard(&arbiter, 0).await;
        // The waiter asked the new shard again, which knows the key is held.
        while waiting(&arbiter, "valve/9").await == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(arbiter.holder("valve/9").as_deref(), Some("first"));
        assert!(!second.is_finished(), "granted a held key twice");
        let err = arbiter
            .acquire("valve/9", "third", 0, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(err.message.contains("held by first"), "{err}");
        drop(hold);
        let (_hold, holder) = second.await.unwrap().unwrap();
        assert_eq!(holder.as_deref(), Some("second"));
    }
}
