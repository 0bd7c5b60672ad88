//! # eyeflow-actors: the execution core
//!
//! Everything that decides what an execution does, with no I/O of its own: it reaches the
//! world only through the traits of [`ports`] (plugins, HTTP, LLM, memory, secrets, the
//! journal, backends' health), which `eyeflow-runtime` implements. Where to start:
//!
//! - [`exec`]: a deployed program prepared for running ([`exec::Program`]) and the executor
//!   that walks its instructions, journals every step, takes fallbacks and resumes after a
//!   crash (`exec::engine`, one opcode per arm in `exec::ops`);
//! - [`lifecycle`], [`bulkhead`], [`scheduler`]: admission of an execution, the per-program
//!   lanes, and priority scheduling on the slots, as tasks of the actor runtime;
//! - [`supervision`], [`services`]: the supervision tree (node → program registry → program
//!   → one actor per instruction; node → service actors) and its restart policy;
//! - [`arbiter`], [`fallbacks`], [`tiers`], [`gates`]: the resource arbiter's shards, the
//!   fallback engine and the memory tiers as actors, and the traits the executor sees them
//!   through;
//! - [`routing`], [`deployed`]: which programs an event starts, the one event-key
//!   convention, and the table of deployed versions;
//! - [`chain`]: the audit chain's canonical form, hashing and verification, and its records
//!   (the offline audit file and the Kafka audit topic's values).

pub mod arbiter;
pub mod bulkhead;
pub mod chain;
pub mod deployed;
pub mod exec;
pub mod fallbacks;
pub mod gates;
pub mod lifecycle;
pub mod ports;
pub mod routing;
pub mod scheduler;
pub mod services;
pub mod supervision;
pub mod sync;
#[cfg(test)]
mod testing;
pub mod tiers;
