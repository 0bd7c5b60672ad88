//! Event sources: what hands events to a node besides its HTTP webhook (which the API
//! serves). Every source follows the same shape: it starts from a [`Context`], hands its
//! events to [`Node::ingest`] (routed by kind and source: MQTT, Kafka) or [`Node::fire`]
//! (one program's trigger: timers, cron, polled plugins), which journal each event under
//! the one key convention ([`event_key`](eyeflow_actors::routing::event_key)) before the
//! source acknowledges it, reports its connection's health as a
//! [`Backend`](eyeflow_actors::ports::Backend) when it has one, and stops when the node's
//! one [`Shutdown`] signal is raised.
//!
//! A source is one module plus one line: in [`Sections`] when a `node.toml` section
//! configures it, else in `ALWAYS`.

mod kafka;
pub mod mqtt;
mod plugins;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::Result;
use crate::node::Node;
use crate::registry::sections;

/// A running event source.
pub trait Source: Send {
    /// Short name, for logs (`timers`, `mqtt`, ...).
    fn name(&self) -> &'static str;
    /// Called once the shutdown signal is raised: returns when the source hands no more
    /// events to the node (an event being journaled finishes first).
    fn stop(self: Box<Self>);
}

/// The one shutdown signal of a node's sources: raised once, seen by all.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Whether the sources must stop.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a source starts from.
pub struct Context<'a> {
    /// The node it feeds.
    pub node: &'a Node,
    /// The backends' sections of the node's configuration (a source may ride one: Kafka
    /// topics).
    pub backends: &'a crate::backends::Sections,
    /// Raised when the sources must stop.
    pub shutdown: Shutdown,
    /// The sources started so far.
    pub started: Vec<Box<dyn Source>>,
}

sections! {
    /// The sources' sections of `node.toml`.
    pub struct Sections for Context<'_> {
        /// `[mqtt]`: an MQTT broker whose topics trigger programs.
        mqtt: mqtt::MqttSection => mqtt::start,
    }
}

/// The sources every node runs: they find their work in the deployed programs' triggers
/// (timers, cron, polled plugins) or in a backend's section (Kafka source topics).
const ALWAYS: &[fn(&mut Context<'_>) -> Result<()>] =
    &[timers::start, plugins::start, kafka::start];

/// A node's running sources.
pub struct Sources {
    shutdown: Shutdown,
    running: Vec<Box<dyn Source>>,
}

impl Sources {
    /// Starts the sources of `sections` and those every node runs, feeding `node` (whose
    /// configured backends are `backends`); if one cannot start, those already started are
    /// stopped and the error is returned.
    pub fn start(
        node: &Node,
        sections: &Sections,
        backends: &crate::backends::Sections,
    ) -> Result<Self> {
        let mut cx = Context {
            node,
            backends,
            shutdown: Shutdown::default(),
            started: Vec::new(),
        };
        let mut outcome = sections.build(&mut cx);
        for start in ALWAYS {
            if outcome.is_err() {
                break;
            }
            outcome = start(&mut cx);
        }
        let sources = Self {
            shutdown: cx.shutdown,
            running: cx.started,
        };
        match outcome {
            Ok(()) => Ok(sources),
            Err(e) => {
                sources.stop();
                Err(e)
            }
        }
    }

    /// Raises the shutdown signal and waits for every source to stop.
    pub fn stop(self) {
        self.shutdown.raise();
        for source in self.running {
            let name = source.name();
            source.stop();
            tracing::debug!("source {name} stopped");
        }
    }
}

/// A source that is one background thread: `run` loops until the shutdown signal.
struct Background {
    name: &'static str,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn(name: &'static str, cx: &Context<'_>, run: fn(&Node, &Shutdown)) -> Result<Self> {
        let (node, shutdown) = (cx.node.clone(), cx.shutdown.clone());
        let thread = std::thread::Builder::new()
            .name(format!("eyeflow-{name}"))
            .spawn(move || run(&node, &shutdown))
            .map_err(crate::Error::io(format!("(start the {name} source)")))?;
        Ok(Self {
            name,
            thread: Some(thread),
        })
    }
}

impl Source for Background {
    fn name(&self) -> &'static str {
        self.name
    }

    fn stop(mut self: Box<Self>) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
