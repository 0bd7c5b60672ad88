//! Signature verification over the canonical signing payload (proto/README.md), computed
//! straight from the file's raw top-level fields: program id, compiled_at, each
//! instruction's bytes framed, then the header — the other fields' raw bytes in order,
//! without the signature (6) and the instructions (8). Verified with `verify_strict`
//! over its SHA-256, against the keyring compiled into the firmware.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::wire::{self, Malformed};

/// The domain-separation prefix of the payload (`eyeflow_ir::canonical::DOMAIN`).
const DOMAIN: &[u8] = b"eyeflow/llm-ir/signing/v1\0";

/// The trusted keys: key id → Ed25519 public key.
pub const KEYRING: &[(&str, [u8; 32])] = &[
    // The test key of the conformance vectors: the public key of seed [7; 32].
    (
        "test",
        [
            0xea, 0x4a, 0x6c, 0x63, 0xe2, 0x9c, 0x52, 0x0a, 0xbe, 0xf5, 0x50, 0x7b, 0x13, 0x2e,
            0xc5, 0xf9, 0x95, 0x47, 0x76, 0xae, 0xbe, 0xbe, 0x7b, 0x92, 0x42, 0x1e, 0xea, 0x69,
            0x14, 0x46, 0xd2, 0x2c,
        ],
    ),
];

/// Why a signature check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// The fields do not frame.
    Malformed,
    /// No signature, a signature of the wrong length, or one that does not verify.
    Bad,
    /// The key id names no key of the keyring.
    UnknownKey,
}

impl From<Malformed> for SignatureError {
    fn from(_: Malformed) -> Self {
        Self::Malformed
    }
}

const SIGNATURE: u32 = 6;
const INSTRUCTIONS: u32 = 8;

/// Checks the signature of `file` against `keyring`.
pub fn check(file: &[u8], keyring: &[(&str, [u8; 32])]) -> Result<(), SignatureError> {
    let mut signature: &[u8] = &[];
    let mut instructions = 0u32;
    let mut header_len = 0usize;
    for field in wire::fields(file) {
        let field = field?;
        match field.number {
            SIGNATURE => signature = field.bytes,
            INSTRUCTIONS => instructions += 1,
            _ => header_len += field.raw.len(),
        }
    }
    let signature = Signature::from_slice(signature).map_err(|_| SignatureError::Bad)?;
    let key_id = wire::string(file, 10)?;
    let key = keyring
        .iter()
        .find(|(id, _)| *id == key_id)
        .ok_or(SignatureError::UnknownKey)?;
    let digest = digest(file, instructions, header_len);
    strict(&key.1, &digest, &signature)
}

/// `verify_strict` alone: its frames (the curve's points and tables) then never share the
/// stack with the hashing's or the caller's.
#[inline(never)]
fn strict(key: &[u8; 32], digest: &[u8; 32], signature: &Signature) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| SignatureError::Bad)?;
    key.verify_strict(digest, signature)
        .map_err(|_| SignatureError::Bad)
}

/// The SHA-256 of the signing payload.
#[inline(never)]
fn digest(file: &[u8], instructions: u32, header_len: usize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    framed(&mut hasher, wire::bytes(file, 1));
    let compiled_at = wire::fields(file)
        .filter_map(Result::ok)
        .filter(|f| f.number == 4)
        .last()
        .map_or(0, |f| f.varint);
    hasher.update(compiled_at.to_be_bytes());
    hasher.update(instructions.to_be_bytes());
    for instruction in wire::repeated(file, INSTRUCTIONS) {
        framed(&mut hasher, instruction);
    }
    hasher.update(len_be(header_len));
    for field in wire::fields(file).filter_map(Result::ok) {
        if field.number != SIGNATURE && field.number != INSTRUCTIONS {
            hasher.update(field.raw);
        }
    }
    hasher.finalize().into()
}

fn framed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update(len_be(bytes.len()));
    hasher.update(bytes);
}

fn len_be(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}
