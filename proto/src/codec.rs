//! Bytes in and out: the decoder refuses oversized input, non-canonical encodings and
//! programs with too many instructions before anything else looks at them.

use prost::Message;

use crate::pb::LlmIrProgram;
use crate::{Error, Result};

/// Bounds applied to untrusted program bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted encoded program, in bytes.
    pub max_bytes: usize,
    /// Largest accepted number of instructions.
    pub max_instructions: usize,
}

impl Default for Limits {
    /// 1 MiB and 4,096 instructions: twenty times the seed's largest multi-LLM rule.
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_instructions: 4096,
        }
    }
}

/// Decodes program bytes, enforcing `limits` and canonical encoding.
///
/// Canonical encoding means the bytes are exactly what [`encode`] gives for the decoded
/// program, so every byte of a signed file is covered by its signature: a flipped byte
/// cannot turn into an equivalent encoding that still verifies.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<LlmIrProgram> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let program = LlmIrProgram::decode(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    if program.instructions.len() > limits.max_instructions {
        return Err(Error::TooManyInstructions {
            count: program.instructions.len(),
            limit: limits.max_instructions,
        });
    }
    let canonical = encode(&program);
    if canonical != bytes {
        let offset = canonical
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(bytes.len()));
        return Err(Error::NonCanonical { offset });
    }
    Ok(program)
}

/// The canonical encoding of a program (the only form [`decode`] accepts).
pub fn encode(program: &LlmIrProgram) -> Vec<u8> {
    program.encode_to_vec()
}
