//! The core the server and the firmware share for MCU-profile programs, so that both
//! compute alike by construction: the expression bytecode and its evaluator
//! ([`code`]), the scalar values and their digests ([`value`]), the canonical trace
//! ([`trace`]), the serial gateway's frames and messages ([`frame`]), the simulated world
//! of a conformance vector ([`script`]), the retry waits ([`retry`]) and the device
//! capacities the compiler enforces ([`limits`]).
//!
//! `no_std` and heap-free; the `alloc` feature adds the encoders the compiler and the
//! server use.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod code;
mod error;
pub mod frame;
pub mod limits;
pub mod retry;
pub mod script;
pub mod trace;
pub mod value;

pub use error::Error;
pub use value::Value;
