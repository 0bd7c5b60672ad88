//! The fallback engine's actor: every fallback decision of the node's executions is logged
//! here (counts by decision and the most recent ones), and a retry's backoff runs on this
//! actor's timer — the execution waits, as a task, for the actor's wake-up. The decisions
//! are pure functions of the instruction's policy ([`crate::exec`]), taken by the execution.
//! If the actor is restarted while timers run, the waiting executions ask its next
//! incarnation, whose timer starts anew: a retry may wait longer than declared, never less.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::gates::{Decided, Fallbacks};
use crate::ports::CallError;
use crate::services::{Mailbox, Service, ServiceSpec};
use crate::supervision::RestartPolicy;

/// How many recent decisions the log keeps.
const RECENT: usize = 64;

/// Messages of the fallback engine's actor.
pub enum FallbackMsg {
    /// A decision to log; answered at once, or after a retry's delay.
    Decided(Decided, oneshot::Sender<()>),
    /// A retry timer ran out.
    Wake(oneshot::Sender<()>),
    /// One line about the log.
    Describe(oneshot::Sender<String>),
    /// Test hook and operator tool: panic (a bug), so that the node supervisor restarts it.
    Crash,
}

/// The fallback engine's actor.
pub struct FallbackEngine;

/// Its state: the decision log and the running timers.
pub struct FallbackLog {
    counts: BTreeMap<&'static str, u64>,
    recent: VecDeque<Decided>,
    timers: u64,
}

impl Actor for FallbackEngine {
    type Msg = FallbackMsg;
    type State = FallbackLog;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (): (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(FallbackLog {
            counts: BTreeMap::new(),
            recent: VecDeque::with_capacity(RECENT),
            timers: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FallbackMsg::Decided(decided, reply) => {
                *state.counts.entry(decided.decision).or_default() += 1;
                if state.recent.len() == RECENT {
                    state.recent.pop_front();
                }
                let delay = decided.delay;
                state.recent.push_back(decided);
                match delay {
                    Some(delay) => {
                        state.timers += 1;
                        // Dropped with the actor if it stops first: the waiter asks again.
                        myself.send_after(delay, move || FallbackMsg::Wake(reply));
                    }
                    None => {
                        let _ = reply.send(());
                    }
                }
            }
            FallbackMsg::Wake(reply) => {
                state.timers = state.timers.saturating_sub(1);
                let _ = reply.send(());
            }
            FallbackMsg::Describe(reply) => {
                let counts: Vec<String> = state
                    .counts
                    .iter()
                    .map(|(decision, n)| format!("{decision} {n}"))
                    .collect();
                let last = state.recent.back().map_or_else(String::new, |d| {
                    format!(
                        "; last: {} {} on {} ({})",
                        d.program, d.instruction, d.class, d.decision
                    )
                });
                let _ = reply.send(format!(
                    "decisions: {}; {} retry timers running{last}",
                    if counts.is_empty() {
                        "none".to_owned()
                    } else {
                        counts.join(", ")
                    },
                    state.timers
                ));
            }
            FallbackMsg::Crash => panic!(
                "the fallback engine crashed on request ({} retry timers running)",
                state.timers
            ),
        }
        Ok(())
    }
}

impl Service for FallbackEngine {
    fn crash() -> FallbackMsg {
        FallbackMsg::Crash
    }

    fn describe(reply: oneshot::Sender<String>) -> FallbackMsg {
        FallbackMsg::Describe(reply)
    }
}

/// The fallback engine as executions reach it.
#[derive(Clone)]
pub struct FallbackDesk {
    mailbox: Arc<Mailbox<FallbackMsg>>,
}

impl FallbackDesk {
    /// The desk, and the spec of its actor (`node/fallback`, restarted within `policy`).
    pub fn new(policy: RestartPolicy) -> (Self, ServiceSpec) {
        let mailbox = Mailbox::new("fallback engine");
        let spec = ServiceSpec::new("node/fallback", "fallback", policy, mailbox.clone(), || {
            (FallbackEngine, ())
        });
        (Self { mailbox }, spec)
    }
}

#[async_trait::async_trait]
impl Fallbacks for FallbackDesk {
    async fn decided(&self, decision: Decided) -> Result<(), CallError> {
        self.mailbox
            .ask(|reply| FallbackMsg::Decided(decision.clone(), reply))
            .await
    }
}
