//! Signature verification over the canonical signing payload (proto/README.md), computed
//! straight from the file's raw top-level fields: program id, compiled_at, each
//! instruction's bytes framed, then the header — the other fields' raw bytes in order,
//! without the signature (6) and the instructions (8). Verified over its SHA-256, against
//! the keyring compiled into the firmware, with ed25519-dalek's `verify_strict` rules
//! computed here in less stack (see [`strict`]).

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use sha2::{Digest, Sha256, Sha512};

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
/// `R`'s bytes, with `k = SHA-512(R ‖ A ‖ message) mod ℓ`. `verify_strict` computes
/// `[s]B − [k]A` with `vartime_double_scalar_mul_basepoint`, whose lookup tables for both
/// points and both scalars' NAFs share one frame; here one joint double-and-add over the
/// scalars' bits ([`combination`]) computes the same point with no table at all.
/// `tests/verdicts.rs` checks it gives `verify_strict`'s verdict on tens of thousands of
/// mutated signatures, keys and payloads. Not inlined: its frames never share the stack
/// with the hashing's or the caller's.
#[inline(never)]
pub fn strict(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
    let bad = |_| SignatureError::Bad;
    let (r_bytes, s_bytes) = signature.split_at(32);
    let r_bytes: [u8; 32] = r_bytes.try_into().map_err(bad)?;
    let s_bytes: [u8; 32] = s_bytes.try_into().map_err(bad)?;
    let a = CompressedEdwardsY(*key)
        .decompress()
        .ok_or(SignatureError::Bad)?;
    let s =
        Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)).ok_or(SignatureError::Bad)?;
    let r = CompressedEdwardsY(r_bytes)
        .decompress()
        .ok_or(SignatureError::Bad)?;
    if r.is_small_order() || a.is_small_order() {
        return Err(SignatureError::Bad);
    }
    let k = challenge(&r_bytes, key, message);
    if combination(&s, &a, &k).compress().to_bytes() == r_bytes {
        Ok(())
    } else {
        Err(SignatureError::Bad)
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
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// `[s]B − [k]A` by one joint double-and-add from the scalars' top bit down (Shamir's
/// trick): each step doubles the sum, then adds `B`, `−A` or `B − A` as the two bits say.
/// Four points on the stack instead of lookup tables; variable time, which verification
/// allows (every input is public). The doubling is the curve's complete addition of the sum
/// to itself (curve25519-dalek keeps its doubling crate-private).
#[inline(never)]
fn combination(s: &Scalar, a: &EdwardsPoint, k: &Scalar) -> EdwardsPoint {
    let b = ED25519_BASEPOINT_POINT;
    let minus_a = -a;
    let both = b + minus_a;
    let (s, k) = (s.as_bytes(), k.as_bytes());
    let mut sum = EdwardsPoint::identity();
    for bit in (0..256).rev() {
        sum = sum + sum;
        let set = |scalar: &[u8; 32]| scalar[bit / 8] >> (bit % 8) & 1 == 1;
        match (set(s), set(k)) {
            (true, true) => sum += both,
            (true, false) => sum += b,
            (false, true) => sum += minus_a,
            (false, false) => {}
        }
    }
    sum
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
