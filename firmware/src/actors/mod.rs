//! The actors of an execution, each an Embassy task with an embassy-sync `Channel` as its
//! mailbox:
//!
//! ```text
//!                         ┌──► evaluator (EVAL) ───────┐
//!                         ├──► evaluator (BRANCH) ─────┤
//!  conductor (walks the   ├──► evaluator (RETURN) ─────┤
//!  flow, retries, fallbacks,─► memory (STORE / LOAD) ──┼──► REPLIES ──► conductor
//!  compensation, trace)   ├──► loop (LOOP rounds) ─────┤
//!                         └──► hardware (CALL_ACTION / │
//!                               LOAD_RESOURCE, LLM_CALL,
//!                               EMIT_EVENT) ───────────┘
//!                                   │ ▲ permit per capability, by priority
//!                                   ▼ │
//!                                 arbiter
//! ```
//!
//! The conductor sends one job at a time and waits for its reply; the hardware actor
//! holds the arbiter's permit for the capability during the call and bounds the call by
//! the instruction's timeout.

pub mod arbiter;
pub mod evaluator;
pub mod hardware;
pub mod looping;
pub mod memory;

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use eyeflow_mcu::trace::ErrorClass;

use crate::owned::Owned;

/// A mailbox of one message.
pub(crate) type Mailbox<T> = Channel<CriticalSectionRawMutex, T, 1>;

/// Every actor's answer to the conductor.
pub(crate) type Reply = Result<Owned, ErrorClass>;

/// Where the actors answer.
pub(crate) static REPLIES: Mailbox<Reply> = Channel::new();
