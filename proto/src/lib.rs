//! # eyeflow-ir: the LLM-IR format
//!
//! LLM-IR is the signed binary form of a compiled eyeflow rule: a protobuf
//! [`LlmIrProgram`](pb::LlmIrProgram) holding a graph of [`IrInstruction`](pb::IrInstruction)s.
//! This crate owns everything about those bytes and nothing about running them:
//!
//! - [`pb`]: the prost types generated from `proto/llm_ir.proto` (no system `protoc`);
//! - [`codec`]: [`decode`] with size / instruction-count [`Limits`] and canonical-encoding check;
//! - [`canonical`]: the signing payload, documented byte by byte;
//! - [`keys`]: Ed25519 keys, key files, the trusted [`Keyring`] (key ids, revocation);
//! - [`version`]: the IR-version compatibility matrix and [`RUNTIME_VERSION`];
//! - [`validate()`]: structural checks (ids, references, bounded loops, priorities, timeouts);
//! - [`mcu`]: the rules of the MCU profile (what a microcontroller runs), one place for the
//!   compiler and the validator.
//!
//! It sits at the bottom of `ir ← actors ← runtime`; the compiler writes programs with it and
//! the runtime (and firmware, through the same `.proto`) reads them.
//!
//! ```
//! use eyeflow_ir::{keys, load, Keyring, Limits};
//! # fn program() -> eyeflow_ir::pb::LlmIrProgram { eyeflow_ir::testing::sample_program() }
//! let key = keys::generate()?;
//! let mut program = program();
//! keys::sign(&mut program, &key);
//! let bytes = eyeflow_ir::encode(&program);
//!
//! let mut keyring = Keyring::new();
//! keyring.trust(key.verifying_key());
//! let loaded = load(&bytes, &keyring, &Limits::default())?;
//! assert_eq!(loaded.program.program_id, program.program_id);
//! # Ok::<(), eyeflow_ir::Error>(())
//! ```

pub mod canonical;
pub mod codec;
mod error;
pub mod expression;
pub mod json;
pub mod keys;
pub mod mcu;
pub mod opcode;
pub mod pb;
pub mod testing;
pub mod validate;
pub mod version;

pub use codec::{Limits, decode, encode};
pub use error::{Error, Result};
pub use keys::Keyring;
pub use validate::validate;
pub use version::{IR_VERSION, RUNTIME_VERSION};

/// A program that passed every check of [`load`].
#[derive(Debug, Clone)]
pub struct VerifiedProgram {
    /// The decoded program.
    pub program: pb::LlmIrProgram,
    /// Id of the keyring key whose signature verified.
    pub key_id: String,
}

/// Everything a runtime does before it accepts program bytes: decode within `limits`
/// (canonical encoding required), verify the signature against `keyring`, check the IR
/// version against this runtime, and validate the structure. Any failure refuses the
/// program with the reason; there is no fallback for an unsigned or tampered program.
pub fn load(bytes: &[u8], keyring: &Keyring, limits: &Limits) -> Result<VerifiedProgram> {
    let program = decode(bytes, limits)?;
    let key_id = keyring.verify(&program)?;
    version::check_runtime_compatible(&program.ir_version)?;
    validate(&program)?;
    Ok(VerifiedProgram { program, key_id })
}
