//! Event sources that feed a node besides its HTTP webhook: timers and cron expressions of
//! the deployed programs' triggers, MQTT topics, and connector plugins polled as sources. Each turns what it receives into
//! [`Node::ingest`](crate::node::Node::ingest) or [`Node::submit`](crate::node::Node::submit)
//! calls, which journal the event before the source acknowledges it.

pub mod mqtt;
mod plugins;
mod timers;

pub use plugins::PluginSources;
pub use timers::{Timers, next_firing, parse_cron};
