//! The canonical signing payload: the exact bytes whose SHA-256 an Ed25519 key signs.
//!
//! ```text
//! payload = "eyeflow/llm-ir/signing/v1" 0x00
//!         ‖ u32be(len(program_id)) ‖ program_id (UTF-8)
//!         ‖ i64be(compiled_at)
//!         ‖ u32be(number of instructions)
//!         ‖ for each instruction, in program order: u32be(len(enc)) ‖ enc(instruction)
//!         ‖ u32be(len(enc(header))) ‖ enc(header)
//! digest  = sha256(payload)
//! sig     = Ed25519(secret key, digest)
//! ```
//!
//! `enc` is the canonical protobuf encoding: fields in ascending field-number order,
//! proto3 default values omitted, repeated scalars packed, map entries sorted by key, no
//! unknown fields. `header` is the program with `signature` and `instructions` cleared,
//! so the version, IR version, key id, capabilities, triggers and metadata are signed too.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::pb::LlmIrProgram;

/// Domain-separation prefix of the payload, so the digest never collides with another use
/// of the same key.
pub const DOMAIN: &[u8] = b"eyeflow/llm-ir/signing/v1\0";

/// Feeds the canonical payload of `program` to `sink`, piece by piece.
fn write_payload(program: &LlmIrProgram, mut sink: impl FnMut(&[u8])) {
    let mut buf = Vec::with_capacity(512);
    let framed = |sink: &mut dyn FnMut(&[u8]), bytes: &[u8]| {
        sink(&len_be(bytes.len()));
        sink(bytes);
    };
    sink(DOMAIN);
    framed(&mut sink, program.program_id.as_bytes());
    sink(&program.compiled_at.to_be_bytes());
    sink(&len_be(program.instructions.len()));
    for instruction in &program.instructions {
        buf.clear();
        instruction.encode_raw(&mut buf);
        framed(&mut sink, &buf);
    }
    buf.clear();
    header(program).encode_raw(&mut buf);
    framed(&mut sink, &buf);
}

/// Lengths are bounded by the decoder's size limit, far below `u32::MAX`; saturate anyway.
fn len_be(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// The program without its signature and instructions. Written field by field (no
/// `..`), so a field added to the schema cannot be left out of the signature silently.
fn header(p: &LlmIrProgram) -> LlmIrProgram {
    LlmIrProgram {
        program_id: p.program_id.clone(),
        name: p.name.clone(),
        version: p.version.clone(),
        compiled_at: p.compiled_at,
        compiled_by: p.compiled_by.clone(),
        signature: Vec::new(),
        ir_version: p.ir_version.clone(),
        instructions: Vec::new(),
        metadata: p.metadata.clone(),
        signing_key_id: p.signing_key_id.clone(),
        required_capabilities: p.required_capabilities.clone(),
        triggers: p.triggers.clone(),
        default_priority: p.default_priority,
        target: p.target,
    }
}

/// The full canonical payload (for inspection and golden tests; signing uses the digest).
pub fn signing_payload(program: &LlmIrProgram) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.encoded_len() + 128);
    write_payload(program, |bytes| out.extend_from_slice(bytes));
    out
}

/// `sha256(signing_payload(program))`, computed without materialising the payload.
pub fn signing_digest(program: &LlmIrProgram) -> [u8; 32] {
    let mut hasher = Sha256::new();
    write_payload(program, |bytes| hasher.update(bytes));
    hasher.finalize().into()
}
