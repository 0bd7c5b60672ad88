//! Scalars modulo ℓ = 2^252 + 27742317777372353535851937790883648493, the order of the base
//! point: a signature's `s` must be below ℓ, and the challenge hash is reduced mod ℓ.

use super::field::{Limbs, limbs, minus};

/// A scalar below ℓ, on eight 32-bit limbs, little-endian.
pub(super) type Scalar = Limbs;

/// ℓ.
const L: Scalar = [
    0x5cf5_d3ed,
    0x5812_631a,
    0xa2f7_9cd6,
    0x14de_f9de,
    0,
    0,
    0,
    0x1000_0000,
];

/// The scalar of `bytes` if it is below ℓ, as curve25519-dalek's `Scalar::from_canonical_bytes`.
pub(super) fn canonical(bytes: &[u8; 32]) -> Option<Scalar> {
    let s = limbs(bytes);
    minus(&s, &L).is_none().then_some(s)
}

/// The 512-bit little-endian `wide` mod ℓ, as curve25519-dalek's
/// `Scalar::from_bytes_mod_order_wide`: shift in one bit at a time from the top, subtracting
/// ℓ whenever the remainder reaches it (it stays below 2^254).
pub(super) fn reduce(wide: &[u8; 64]) -> Scalar {
    let mut r = [0u32; 8];
    for bit in (0..512).rev() {
        let mut carry = u32::from(wide[bit / 8] >> (bit % 8) & 1);
        for limb in r.iter_mut() {
            let out = *limb >> 31;
            *limb = *limb << 1 | carry;
            carry = out;
        }
        if let Some(less) = minus(&r, &L) {
            r = less;
        }
    }
    r
}

/// Bit `bit` of `s`.
pub(super) fn bit(s: &Scalar, bit: u8) -> bool {
    s[usize::from(bit / 32)] >> (bit % 32) & 1 == 1
}
