//! The device's signature check (`verify::strict`, on its own Ed25519 arithmetic) gives
//! ed25519-dalek's `verify_strict` verdict on signatures, keys and messages crafted to hit
//! each of its rules and the edges of the arithmetic: valid ones, every single-bit flip of a
//! signature, `s` around ℓ and 2^256, `R` and keys of small order or with a torsion
//! component, non-canonical encodings (y ≥ p), x = 0 with the sign bit set, encodings that
//! do not decompress, and thousands of pseudo-random keys, messages and signatures.
#![allow(missing_docs)]

#[allow(dead_code)]
#[path = "support/random.rs"]
mod random;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use eyeflow_firmware::verify::strict;
use random::{Random, p_plus};
use sha2::{Digest, Sha512};

/// What `verify_strict` says — the server's check (`eyeflow_ir::Keyring::verify`); a key
/// that does not decompress is refused.
fn dalek(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

fn same(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let ours = strict(key, message, signature).is_ok();
    assert_eq!(
        ours,
        dalek(key, message, signature),
        "key {key:02x?} signature {signature:02x?}"
    );
    ours
}

/// Encodings of the eight points of small order (and a non-canonical one of them).
const SMALL_ORDER: [[u8; 32]; 4] = {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut minus_one = [0u8; 32];
    minus_one[0] = 0xec;
    let mut i = 1;
    while i < 31 {
        minus_one[i] = 0xff;
        i += 1;
    }
    minus_one[31] = 0x7f;
    let order_four = [0u8; 32];
    let mut order_four_neg = [0u8; 32];
    order_four_neg[31] = 0x80;
    [identity, minus_one, order_four, order_four_neg]
};

/// ℓ, the group order, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

#[test]
fn the_device_check_gives_verify_strict_verdicts() {
    let mut accepted = 0;
    for seed in 0u8..8 {
        let signer = SigningKey::from_bytes(&[seed; 32]);
        let key = signer.verifying_key().to_bytes();
        let message = [seed; 32];
        let signature = signer.sign(&message).to_bytes();
        assert!(same(&key, &message, &signature), "a valid signature");
        accepted += 1;
        // Every single-bit flip of the signature, the key and the message.
        for bit in 0..512 {
            let mut flipped = signature;
            flipped[bit / 8] ^= 1 << (bit % 8);
            same(&key, &message, &flipped);
        }
        for bit in 0..256 {
            let mut flipped = key;
            flipped[bit / 8] ^= 1 << (bit % 8);
            same(&flipped, &message, &signature);
            let mut other = message;
            other[bit / 8] ^= 1 << (bit % 8);
            same(&key, &other, &signature);
        }
        // s + ℓ: the same point equation, a non-canonical scalar.
        let mut malleable = signature;
        let s: [u8; 32] = signature[32..].try_into().expect("32 bytes");
        malleable[32..].copy_from_slice(&add_le(&s, &ELL));
        assert!(!same(&key, &message, &malleable), "a non-canonical s");
        // R or the key of small order.
        for small in SMALL_ORDER {
            let mut r = signature;
            r[..32].copy_from_slice(&small);
            assert!(!same(&key, &message, &r), "R of small order");
            assert!(!same(&small, &message, &signature), "a key of small order");
        }
    }
    // A small-order key with a signature made for it: `[s]B − [k]A = R` can hold, and
    // both refuse it for the key's order alone.
    let small = SMALL_ORDER[0];
    let r = [
        0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66,
    ];
    let mut forged = [0u8; 64];
    forged[..32].copy_from_slice(&r);
    forged[32] = 1;
    assert!(!same(&small, b"anything", &forged));
    assert_eq!(accepted, 8);
}

/// `value` below 19, or p − `value` if `minus`, bit 255 set to `sign`.
fn small(value: u8, minus: bool, sign: bool) -> [u8; 32] {
    if minus {
        let mut bytes = p_plus(0, sign);
        bytes[0] -= value;
        bytes
    } else {
        let mut bytes = [0; 32];
        bytes[0] = value;
        bytes[31] = u8::from(sign) << 7;
        bytes
    }
}

/// Encodings at the edges of decompression: y from p to 2^255 − 1 (non-canonical, read as
/// 0 to 18), y of 0 to 18 and p − 1 to p − 18, each with and without the sign bit (x = 0
/// with it for y = ±1), and pseudo-random ones (about half not on the curve).
fn edge_encodings(random: &mut Random) -> Vec<[u8; 32]> {
    let mut encodings = Vec::new();
    for sign in [false, true] {
        for value in 0..=18 {
            encodings.push(p_plus(value, sign));
            encodings.push(small(value, false, sign));
            encodings.push(small(value, true, sign));
        }
    }
    for _ in 0..64 {
        encodings.push(random.bytes());
    }
    encodings
}

#[test]
fn edge_encodings_of_keys_and_r() {
    let mut random = Random(1);
    let encodings = edge_encodings(&mut random);
    for seed in 0u8..4 {
        let signer = SigningKey::from_bytes(&[seed; 32]);
        let key = signer.verifying_key().to_bytes();
        let message = [seed; 16];
        let signature = signer.sign(&message).to_bytes();
        for encoding in &encodings {
            same(encoding, &message, &signature);
            let mut r = signature;
            r[..32].copy_from_slice(encoding);
            same(&key, &message, &r);
        }
    }
}

#[test]
fn edge_scalars() {
    let minus_one = (Scalar::ZERO - Scalar::ONE).to_bytes();
    let one = {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    };
    let mut top_bit = [0u8; 32];
    top_bit[31] = 0x80;
    let mut bit_252 = [0u8; 32];
    bit_252[31] = 0x10;
    let mut below_253 = [0xffu8; 32];
    below_253[31] = 0x1f;
    // 0, 1, ℓ − 1, ℓ, ℓ + 1, 2^252, 2^253 − 1, 2^255, 2^256 − 1.
    let scalars = [
        [0; 32],
        one,
        minus_one,
        ELL,
        add_le(&ELL, &one),
        bit_252,
        below_253,
        top_bit,
        [0xff; 32],
    ];
    for seed in 0u8..4 {
        let signer = SigningKey::from_bytes(&[seed; 32]);
        let key = signer.verifying_key().to_bytes();
        let message = [seed; 16];
        let signature = signer.sign(&message).to_bytes();
        for s in &scalars {
            let mut edited = signature;
            edited[32..].copy_from_slice(s);
            assert!(!same(&key, &message, &edited));
        }
    }
}

#[test]
fn random_signatures_and_their_flips() {
    let mut random = Random(2);
    for _ in 0..2000 {
        let signer = SigningKey::from_bytes(&random.bytes());
        let key = signer.verifying_key().to_bytes();
        let mut message = [0u8; 64];
        let len = random.below(65);
        message[..len].copy_from_slice(&random.bytes::<64>()[..len]);
        let message = &message[..len];
        let signature = signer.sign(message).to_bytes();
        assert!(same(&key, message, &signature), "a valid signature");
        // One bit flipped in R, in s, in the key, in the message.
        let mut flipped = signature;
        flipped[random.below(32)] ^= 1 << random.below(8);
        assert!(!same(&key, message, &flipped));
        let mut flipped = signature;
        flipped[32 + random.below(32)] ^= 1 << random.below(8);
        assert!(!same(&key, message, &flipped));
        let mut other = key;
        other[random.below(32)] ^= 1 << random.below(8);
        assert!(!same(&other, message, &signature));
        if len > 0 {
            let mut other = message.to_vec();
            other[random.below(len)] ^= 1 << random.below(8);
            assert!(!same(&key, &other, &signature));
        }
        // Pseudo-random signatures of that key.
        same(&key, message, &random.bytes());
    }
}

/// Keys and `R` with a torsion component (A = [a]B + T, R = [r]B + T′, s = r + k·a): not of
/// small order, so both go on to the equation [s]B − [k]A = [r]B − [k]T = R, which holds
/// when T′ = −[k]T (k depends on R: about one T′ of eight for each T): some accepted.
#[test]
fn keys_and_r_with_a_torsion_component() {
    let mut random = Random(3);
    let mut accepted = 0;
    for _ in 0..4 {
        let a = Scalar::from_bytes_mod_order_wide(&random.bytes());
        let r = Scalar::from_bytes_mod_order_wide(&random.bytes());
        let message: [u8; 16] = random.bytes();
        for t in EIGHT_TORSION {
            let key = (EdwardsPoint::mul_base(&a) + t).compress().to_bytes();
            for t_r in EIGHT_TORSION {
                let r_bytes = (EdwardsPoint::mul_base(&r) + t_r).compress().to_bytes();
                let k = Scalar::from_hash(
                    Sha512::new()
                        .chain_update(r_bytes)
                        .chain_update(key)
                        .chain_update(message),
                );
                let s = r + k * a;
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&r_bytes);
                signature[32..].copy_from_slice(s.as_bytes());
                accepted += usize::from(same(&key, &message, &signature));
            }
        }
    }
    assert!(
        (8..64).contains(&accepted),
        "{accepted} of 256 accepted, about one R of eight for each key"
    );
}
