//! Signature verification over the canonical signing payload (proto/README.md), computed
//! straight from the file's raw top-level fields: program id, compiled_at, each
//! instruction's bytes framed, then the header — the other fields' raw bytes in order,
//! without the signature (6) and the instructions (8). Verified over its SHA-256, against
//! the keyring compiled into the firmware, with ed25519-dalek's `verify_strict` rules on
//! this module's own small Ed25519 arithmetic (see [`strict`]).

mod edwards;
mod field;
mod scalar;

use sha2::{Digest, Sha256, Sha512};

use self::scalar::Scalar;

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
    let signature: &[u8; 64] = signature.try_into().map_err(|_| SignatureError::Bad)?;
    let key_id = wire::string(file, 10)?;
    let key = keyring
        .iter()
        .find(|(id, _)| *id == key_id)
        .ok_or(SignatureError::UnknownKey)?;
    let digest = digest(file, instructions, header_len);
    strict(&key.1, &digest, signature)
}

/// ed25519-dalek's `verify_strict` (3.0), rule for rule: the key and `R` decompress, `s`
/// is canonical, neither the key nor `R` has small order, and `[s]B − [k]A` compresses to
/// `R`'s bytes, with `k = SHA-512(R ‖ A ‖ message) mod ℓ` over the key's bytes as given.
/// The arithmetic is this module's own (`field`, `scalar`, `edwards`): loops over
/// eight 32-bit limbs and no tables, in about a quarter of curve25519-dalek's flash.
/// `tests/strict.rs` and `tests/verdicts.rs` check it gives `verify_strict`'s verdict on
/// edge encodings and tens of thousands of mutated signatures, keys and payloads. `k` is
/// hashed first (it cannot fail, so the verdict is the same), in its own frame: the
/// hashing's frames and the curve arithmetic's are never on the stack together.
#[inline(never)]
pub fn strict(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
    let (r, s) = signature.split_at(32);
    let r: &[u8; 32] = r.try_into().map_err(|_| SignatureError::Bad)?;
    let s: &[u8; 32] = s.try_into().map_err(|_| SignatureError::Bad)?;
    let k = challenge(r, key, message);
    curve(key, r, s, &k)
}

/// [`strict`]'s checks on the curve, with the challenge `k` already hashed.
#[inline(never)]
fn curve(
    key: &[u8; 32],
    r_bytes: &[u8; 32],
    s_bytes: &[u8; 32],
    k: &Scalar,
) -> Result<(), SignatureError> {
    let s = scalar::canonical(s_bytes).ok_or(SignatureError::Bad)?;
    // `R` first, then `A` over it: one point on this frame.
    let mut a = edwards::IDENTITY;
    if !large_point(r_bytes, &mut a) || !large_point(key, &mut a) {
        return Err(SignatureError::Bad);
    }
    if edwards::compress(&edwards::combination(&s, &a, k)) == *r_bytes {
        Ok(())
    } else {
        Err(SignatureError::Bad)
    }
}

/// Whether `bytes` decompress to a point not of small order, written to `point`. Not
/// inlined: its frame is not under [`curve`]'s; the point is not copied out of an
/// `Option` into [`curve`]'s frame.
#[inline(never)]
fn large_point(bytes: &[u8; 32], point: &mut edwards::Point) -> bool {
    match edwards::decompress(bytes) {
        Some(p) if !edwards::is_small_order(&p) => {
            *point = p;
            true
        }
        _ => false,
    }
}

/// `SHA-512(R ‖ A ‖ message) mod ℓ`.
#[inline(never)]
fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(message);
    let wide: [u8; 64] = h.finalize().into();
    scalar::reduce(&wide)
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

#[cfg(test)]
mod tests;
