//! # eyeflow-runtime: the adapters behind the core's ports, the node, and the `eyeflow` binary
//!
//! - [`store`]: the embedded store (fjall) under a node's data directory, one keyspace per
//!   concern, with group commit;
//! - [`journal`] and [`audit`]: the record of truth (accepted events, instruction outcomes)
//!   and the hash-chained audit log with signed checkpoints;
//! - [`memory`], [`events`], [`http`], [`llm`], [`secrets`]: the embedded adapters of the
//!   node and cluster memory tiers, EMIT_EVENT, outgoing HTTP, OpenAI-compatible LLMs and
//!   local secrets;
//! - [`plugins`]: the WebAssembly plugin platform (signed packages, grants, catalog with
//!   live upgrade, the sandboxed wasmtime host behind
//!   [`PluginPort`](eyeflow_actors::ports::PluginPort));
//! - [`backends`]: the production backends (Redis, Kafka, Vault/OpenBao) behind the same
//!   ports, each one module plus one line in its registry;
//! - [`node`]: a node assembled from all of the above, configured by [`config`], with
//!   [`sources`] (MQTT, Kafka topics, timers and cron, polled plugins) feeding it, and
//!   [`devices`] (field devices over the serial gateway) served by it;
//! - [`retention`]: the periodic deletion of finished executions past their window;
//! - [`mcu`]: MCU-profile programs on the server: the conformance vectors, generated and
//!   run through the executor with their scripted hardware;
//! - [`api`]: the node's HTTP API (actix-web) and [`metrics`] for operators.

pub mod api;
pub mod audit;
pub mod backends;
mod blocking;
pub mod config;
pub mod devices;
mod error;
pub mod events;
pub mod http;
pub mod journal;
pub mod llm;
pub mod mcu;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod plugins;
mod records;
mod registry;
pub mod retention;
pub mod secrets;
pub mod sources;
pub mod store;

pub use error::{Error, Result};
pub use eyeflow_actors::exec::now_ms;
