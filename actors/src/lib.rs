//! The SVM core as supervised actors (scheduler, arbiter, fallback engine, memory tiers,
//! program registry, instruction actors), the audit chain's logic, event routing, and the
//! ports every effect goes through.
//!
//! Actors never import an adapter: they talk to the world through the traits of [`ports`],
//! which `eyeflow-runtime` implements (wasmtime plugin host, stores, HTTP, LLM providers).

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
pub mod tiers;
