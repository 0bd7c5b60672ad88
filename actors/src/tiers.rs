//! The memory tiers as actors: node memory (embedded or Redis) and cluster memory
//! (embedded or Kafka) each run as a supervised actor that owns the tier's connection (made
//! by its `connect` function when the actor starts, again at every restart). An execution's
//! read or write is a message to the tier's actor, which starts it on its connection as a
//! task of its own and goes on with the next message, so one slow write never holds the
//! tier for the others; the answer goes straight back to the execution. A message the actor
//! had not started when it stopped is asked again of its next incarnation.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::ports::{ClusterMemory, MemoryError, NodeMemory};
use crate::services::{Mailbox, Service, ServiceSpec};
use crate::supervision::RestartPolicy;

/// One operation on connection `C`.
type Job<C> = Box<dyn FnOnce(C) -> BoxFuture<'static, ()> + Send>;

/// Makes a tier's connection.
pub type Connect<C> = Arc<dyn Fn() -> Result<C, String> + Send + Sync>;

/// Messages of a memory tier's actor.
pub enum TierMsg<C> {
    /// Run an operation on the tier's connection.
    Run(Job<C>),
    /// One line about the tier.
    Describe(oneshot::Sender<String>),
    /// Test hook and operator tool: panic (a bug), so that the node supervisor restarts it.
    Crash,
}

/// A memory tier's actor over connections of type `C`.
pub struct TierActor<C> {
    name: &'static str,
    connect: Connect<C>,
}

/// Its state: the connection, and how many operations it started.
pub struct TierState<C> {
    connection: C,
    started: u64,
}

impl<C: Clone + Send + Sync + 'static> Actor for TierActor<C> {
    type Msg = TierMsg<C>;
    type State = TierState<C>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (): (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let connection =
            (self.connect)().map_err(|e| format!("{}: cannot connect: {e}", self.name))?;
        Ok(TierState {
            connection,
            started: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TierMsg::Run(job) => {
                state.started += 1;
                tokio::spawn(job(state.connection.clone()));
            }
            TierMsg::Describe(reply) => {
                let _ = reply.send(format!("{} operations started", state.started));
            }
            TierMsg::Crash => panic!(
                "{} crashed on request (after {} operations)",
                self.name, state.started
            ),
        }
        Ok(())
    }
}

impl<C: Clone + Send + Sync + 'static> Service for TierActor<C> {
    fn crash() -> TierMsg<C> {
        TierMsg::Crash
    }

    fn describe(reply: oneshot::Sender<String>) -> TierMsg<C> {
        TierMsg::Describe(reply)
    }
}

/// A memory tier as executions reach it: each call is an operation run by the tier's actor.
pub struct Tier<C: Send + Sync + 'static> {
    mailbox: Arc<Mailbox<TierMsg<C>>>,
}

impl<C: Clone + Send + Sync + 'static> Tier<C> {
    /// The tier called `name` (`node memory`, `cluster memory`) at `path` in the tree, and
    /// the spec of its actor (restarted within `policy`; each incarnation calls `connect`).
    pub fn new(
        name: &'static str,
        path: &str,
        connect: Connect<C>,
        policy: RestartPolicy,
    ) -> (Self, ServiceSpec) {
        let mailbox = Mailbox::new(name);
        let spec = ServiceSpec::new(path, "memory", policy, mailbox.clone(), move || {
            (
                TierActor {
                    name,
                    connect: connect.clone(),
                },
                (),
            )
        });
        (Self { mailbox }, spec)
    }

    /// Runs `op` (`operation` on `key` of the `tier` scope) on the tier's connection and
    /// returns its answer; a tier actor that does not answer is the tier unavailable.
    async fn run<R, F, Fut>(
        &self,
        (tier, operation, key): (&'static str, &'static str, &str),
        op: F,
    ) -> Result<R, MemoryError>
    where
        R: Send + 'static,
        F: Fn(C) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<R, MemoryError>> + Send + 'static,
    {
        self.mailbox
            .ask(|reply| {
                let op = op.clone();
                TierMsg::Run(Box::new(move |connection| {
                    Box::pin(async move {
                        let _ = reply.send(op(connection).await);
                    })
                }))
            })
            .await
            .map_err(|e| MemoryError::new(tier, operation, key, e.kind, e.message))?
    }
}

#[async_trait::async_trait]
impl NodeMemory for Tier<Arc<dyn NodeMemory>> {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        let at = ("node", "get", key);
        let key = key.to_owned();
        self.run(at, move |memory: Arc<dyn NodeMemory>| {
            let key = key.clone();
            async move { memory.get(&key).await }
        })
        .await
    }

    async fn set(&self, key: &str, value: &Value, ttl: Duration) -> Result<(), MemoryError> {
        let at = ("node", "set", key);
        let (key, value) = (key.to_owned(), value.clone());
        self.run(at, move |memory: Arc<dyn NodeMemory>| {
            let (key, value) = (key.clone(), value.clone());
            async move { memory.set(&key, &value, ttl).await }
        })
        .await
    }
}

#[async_trait::async_trait]
impl ClusterMemory for Tier<Arc<dyn ClusterMemory>> {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        let at = ("cluster", "get", key);
        let key = key.to_owned();
        self.run(at, move |memory: Arc<dyn ClusterMemory>| {
            let key = key.clone();
            async move { memory.get(&key).await }
        })
        .await
    }

    async fn put(&self, key: &str, value: &Value) -> Result<(), MemoryError> {
        let at = ("cluster", "put", key);
        let (key, value) = (key.to_owned(), value.clone());
        self.run(at, move |memory: Arc<dyn ClusterMemory>| {
            let (key, value) = (key.clone(), value.clone());
            async move { memory.put(&key, &value).await }
        })
        .await
    }
}
