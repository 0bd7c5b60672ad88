//! Event sources that feed a node besides its HTTP webhook: timers and cron expressions of
//! the deployed programs' triggers, and MQTT topics. Each turns what it receives into
//! [`Node::ingest`](crate::node::Node::ingest) or [`Node::submit`](crate::node::Node::submit)
//! calls, which journal the event before the source acknowledges it.

pub mod mqtt;
mod timers;

pub use timers::{Timers, next_firing, parse_cron};
