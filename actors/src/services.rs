//! The node's service actors — the resource arbiter's shards, the fallback engine, the
//! memory tiers — and how executions reach them. A service is spawned from a
//! [`ServiceSpec`] under the node supervisor, which restarts it one-for-one within the
//! service's own restart intensity and stops (escalates) past it; executions reach the
//! current incarnation through a [`Mailbox`], which waits for a restarted actor instead of
//! failing at once.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::ports::{CallError, CallErrorKind};
use crate::supervision::RestartPolicy;
use crate::sync::RwLocked;

/// How long a caller waits for a service actor that is down (being restarted) before its
/// call fails `unavailable`.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// How often a caller looks again for a restarted service actor.
const RETRY_EVERY: Duration = Duration::from_millis(10);

/// Where a service actor's callers find its current incarnation: its supervisor installs
/// each new one.
pub struct Mailbox<M: ractor::Message> {
    name: &'static str,
    current: RwLock<Option<ActorRef<M>>>,
}

impl<M: ractor::Message> Mailbox<M> {
    /// An empty mailbox for the service called `name` (the origin of its callers' errors).
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            current: RwLock::new(None),
        })
    }

    /// Installs the service's new incarnation.
    pub fn install(&self, actor: ActorRef<M>) {
        *self.current.writing() = Some(actor);
    }

    /// The current incarnation, if one was installed.
    pub fn current(&self) -> Option<ActorRef<M>> {
        self.current.reading().clone()
    }

    /// Sends `message` without waiting; false when no live actor took it.
    pub fn tell(&self, message: M) -> bool {
        self.current()
            .is_some_and(|actor| actor.cast(message).is_ok())
    }

    /// Sends the message `build` makes around a reply channel and waits for the answer.
    /// While the actor is down, or stops before it answers (the message is then dropped
    /// unhandled), the next incarnation is asked, for up to [`PATIENCE`]; then
    /// `Unavailable`. Only for requests that are safe to make again when unanswered.
    pub async fn ask<R: Send + 'static>(
        &self,
        build: impl Fn(oneshot::Sender<R>) -> M,
    ) -> Result<R, CallError> {
        let give_up = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (tx, rx) = oneshot::channel();
            if self.tell(build(tx))
                && let Ok(answer) = rx.await
            {
                return Ok(answer);
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(CallError::new(
                    CallErrorKind::Unavailable,
                    self.name,
                    format!(
                        "the {} actor did not answer within {} s",
                        self.name,
                        PATIENCE.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
}

type Start =
    dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> + Send + Sync;

/// A service actor as its supervisor knows it: where it sits in the tree, how to start a
/// new incarnation (installed in its [`Mailbox`]), how to crash it on request, and what it
/// reports about itself.
pub struct ServiceSpec {
    /// Its path in the tree (`node/arbiter/0`, `node/fallback`, `node/memory/node`, ...).
    pub path: String,
    /// Its kind in `GET /api/actors` (`arbiter`, `fallback`, `memory`).
    pub kind: &'static str,
    /// Its restart intensity; past it the node supervisor escalates.
    pub policy: RestartPolicy,
    start: Box<Start>,
    crash: Box<dyn Fn() -> bool + Send + Sync>,
    describe: Box<dyn Fn() -> BoxFuture<'static, Option<String>> + Send + Sync>,
}

/// A service actor's own part of the protocol: the messages every service answers.
pub trait Service: Actor {
    /// The message that makes the actor panic (an operator's tool, the tests' fault).
    fn crash() -> Self::Msg;
    /// The message asking it to describe its state in a line.
    fn describe(reply: oneshot::Sender<String>) -> Self::Msg;
}

impl ServiceSpec {
    /// The spec of service `actor` (started with the arguments `arguments` makes), reached
    /// through `mailbox`.
    pub fn new<A>(
        path: impl Into<String>,
        kind: &'static str,
        policy: RestartPolicy,
        mailbox: Arc<Mailbox<A::Msg>>,
        actor: impl Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    ) -> Self
    where
        A: Service,
    {
        let installed = mailbox.clone();
        let start = move |supervisor: ActorCell| -> BoxFuture<'static, _> {
            let (actor, arguments) = actor();
            let mailbox = installed.clone();
            Box::pin(async move {
                let (actor, _) = Actor::spawn_linked(None, actor, arguments, supervisor).await?;
                mailbox.install(actor.clone());
                Ok(actor.get_cell())
            })
        };
        let crashed = mailbox.clone();
        let described = mailbox;
        Self {
            path: path.into(),
            kind,
            policy,
            start: Box::new(start),
            crash: Box::new(move || crashed.tell(A::crash())),
            describe: Box::new(move || {
                let actor = described.current();
                Box::pin(async move {
                    let (tx, rx) = oneshot::channel();
                    actor?.cast(A::describe(tx)).ok()?;
                    tokio::time::timeout(Duration::from_millis(500), rx)
                        .await
                        .ok()?
                        .ok()
                })
            }),
        }
    }

    /// Starts a new incarnation under `supervisor`.
    pub(crate) async fn start(
        &self,
        supervisor: ActorCell,
    ) -> Result<ActorCell, ActorProcessingErr> {
        (self.start)(supervisor).await
    }

    /// Makes the current incarnation panic; false when none is alive.
    pub(crate) fn crash(&self) -> bool {
        (self.crash)()
    }

    /// The current incarnation's own line about its state (none when it does not answer).
    pub(crate) fn describe(&self) -> BoxFuture<'static, Option<String>> {
        (self.describe)()
    }
}

impl std::fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSpec")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}
