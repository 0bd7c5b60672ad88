//! The device's signature check (`verify::strict`, computed in less stack) gives
//! ed25519-dalek's `verify_strict` verdict on signatures, keys and messages crafted to hit
//! each of its rules: valid ones, every single-bit flip of a signature, non-canonical `s`,
//! `R` and keys of small order, encodings that do not decompress.
#![allow(missing_docs)]

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use eyeflow_firmware::verify::strict;

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
