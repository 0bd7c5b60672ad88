//! Event sources that feed a node besides its HTTP webhook: timers and cron expressions of
//! the deployed programs' triggers, MQTT topics, and connector plugins polled as sources. Each turns what it receives into
//! [`Node::ingest`](crate::node::Node::ingest) or [`Node::submit`](crate::node::Node::submit)
//! calls, which journal the event before the source acknowledges it.

pub mod mqtt;
mod plugins;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::node::Node;

pub use plugins::PluginSources;
pub use timers::Timers;

/// The background thread of a source: `run` loops until the flag it is given turns true.
struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn(name: &str, node: Node, run: fn(&Node, &AtomicBool)) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&node, &flag))
            .map_err(|e| tracing::error!("cannot start the thread {name}: {e}"))
            .ok();
        Self { stop, thread }
    }

    /// Raises the flag and waits for the thread (a tick in progress finishes first).
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
