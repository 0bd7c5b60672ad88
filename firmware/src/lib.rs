//! The eyeflow firmware: runs signed MCU-profile LLM-IR programs on a microcontroller,
//! `no_std`, without a heap, as actors on Embassy — trace-identical to the server on the
//! same program and inputs (the conformance vectors in `vectors/`).
//!
//! - [`program`]: loading — size, signature (`verify_strict`, [`verify::KEYRING`]), IR
//!   version, target, the server's structural checks, the MCU profile and the device's capacities, the capabilities the
//!   board provides; the refusal reasons of the canonical trace. The file is read in
//!   place (a zero-copy protobuf field reader; an instruction's scalars are read when
//!   it is checked and each time it runs), never decoded into structs.
//! - [`conductor`] and [`actors`]: one execution, walked by the conductor, each
//!   instruction run by the actor of its kind; fallbacks in [`policy`].
//! - [`hardware`]: the trait a board implements for CALL_ACTION / LOAD_RESOURCE.
//! - [`gateway`]: the device end of the serial gateway (a board gives its serial port and
//!   where programs are kept: [`slots`], two sectors of its flash).
//!
//! A board crate (`boards/qemu`, `boards/stm32f4`) provides the time driver, the inputs,
//! the [`hardware::Hardware`] and the output of the trace:
//!
//! ```ignore
//! let program = STATIC.init(Program::load(file, KEYRING, CAPABILITIES)?);
//! conductor::spawn_actors(spawner)?;
//! spawner.spawn(hardware_task(MyBoard::new(p))?);   // calls actors::hardware::serve
//! let status = conductor::run(program, event, &mut out).await;
//! ```
#![no_std]
#![forbid(unsafe_code)]

pub mod actors;
mod canonical;
pub mod capability;
pub mod conductor;
mod deploy;
pub mod gateway;
pub mod hardware;
mod instruction;
pub mod owned;
pub mod policy;
pub mod program;
mod semver;
pub mod slots;
pub mod state;
mod structure;
pub mod verify;
mod wire;

pub use eyeflow_mcu;
