//! Numbers below 2^256 on eight 32-bit limbs (little-endian), and the field GF(2^255 − 19)
//! on them: an element is any such number, reduced below p only when turned into bytes.
//! Every operation is a loop over the limbs, not unrolled, for flash rather than speed.

/// A number below 2^256: a field element, or a scalar (`super::scalar`).
pub(super) type Limbs = [u32; 8];

/// A field element, not necessarily below p.
pub(super) type Fe = Limbs;

pub(super) const ZERO: Fe = [0; 8];
pub(super) const ONE: Fe = [1, 0, 0, 0, 0, 0, 0, 0];

/// p = 2^255 − 19.
const P: Limbs = [
    0xffff_ffed,
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0x7fff_ffff,
];

/// The curve's d = −121665/121666.
pub(super) const D: Fe = [
    0x1359_78a3,
    0x75eb_4dca,
    0x4141_d8ab,
    0x0070_0a4d,
    0x7779_e898,
    0x8cc7_4079,
    0x2b6f_fe73,
    0x5203_6cee,
];

/// √−1 = 2^((p − 1)/4), curve25519-dalek's `SQRT_M1`.
const SQRT_M1: Fe = [
    0x4a0e_a0b0,
    0xc4ee_1b27,
    0xad2f_e478,
    0x2f43_1806,
    0x3dfb_d7a7,
    0x2b4d_0099,
    0x4fc1_df0b,
    0x2b83_2480,
];

/// The little-endian number of `bytes`.
pub(super) fn limbs(bytes: &[u8; 32]) -> Limbs {
    let mut r = [0u32; 8];
    for (i, byte) in bytes.iter().enumerate() {
        r[i / 4] |= u32::from(*byte) << (8 * (i % 4));
    }
    r
}

/// `a + k·b` for `k` = ±1 on the limbs, and the carry out of the top one (−1, 0 or 1).
fn carried(a: &Limbs, b: &Limbs, k: i64) -> (Limbs, i64) {
    let mut r = [0u32; 8];
    let mut carry = 0i64;
    for ((r, a), b) in r.iter_mut().zip(a).zip(b) {
        carry += i64::from(*a) + k * i64::from(*b);
        *r = carry as u32;
        carry >>= 32;
    }
    (r, carry)
}

/// `a − m` if `a ≥ m`.
pub(super) fn minus(a: &Limbs, m: &Limbs) -> Option<Limbs> {
    let (r, borrow) = carried(a, m, -1);
    (borrow == 0).then_some(r)
}

/// Adds `top·2^256 ≡ 38·top` into `r` until nothing carries out (or borrows) any more.
fn fold(r: &mut Fe, mut top: i64) {
    while top != 0 {
        let mut carry = 38 * top;
        for limb in r.iter_mut() {
            carry += i64::from(*limb);
            *limb = carry as u32;
            carry >>= 32;
        }
        top = carry;
    }
}

pub(super) fn add(a: &Fe, b: &Fe) -> Fe {
    let (mut r, top) = carried(a, b, 1);
    fold(&mut r, top);
    r
}

pub(super) fn sub(a: &Fe, b: &Fe) -> Fe {
    let (mut r, top) = carried(a, b, -1);
    fold(&mut r, top);
    r
}

pub(super) fn neg(a: &Fe) -> Fe {
    sub(&ZERO, a)
}

/// The schoolbook product into sixteen limbs, then the high half folded in as 2^256 ≡ 38.
#[inline(never)]
pub(super) fn mul(a: &Fe, b: &Fe) -> Fe {
    let mut wide = [0u32; 16];
    for (i, x) in a.iter().enumerate() {
        let row = &mut wide[i..i + 9];
        let mut carry = 0u32;
        for (w, y) in row.iter_mut().zip(b) {
            let sum = u64::from(*x) * u64::from(*y) + u64::from(*w) + u64::from(carry);
            *w = sum as u32;
            carry = (sum >> 32) as u32;
        }
        row[8] = carry;
    }
    let (low, high) = wide.split_at(8);
    let mut r = ZERO;
    let mut carry = 0i64;
    for ((r, l), h) in r.iter_mut().zip(low).zip(high) {
        carry += i64::from(*l) + 38 * i64::from(*h);
        *r = carry as u32;
        carry >>= 32;
    }
    fold(&mut r, carry);
    r
}

/// `a` to the power (2^250 − 1)·2^`tail_bits` + `tail`. a^(2^n − 1) for n = 250 by the
/// bits of n: n → 2n squares n times and multiplies by the power before, n → n + 1 squares
/// once and multiplies by `a` (about 265 multiplications, squares included, where bit
/// by bit takes about 505); then the
/// tail bit by bit.
fn pow(a: &Fe, tail: u32, tail_bits: u32) -> Fe {
    let mut r = *a;
    let mut n = 1;
    for bit in (0..7).rev() {
        let mut t = r;
        for _ in 0..n {
            t = mul(&t, &t);
        }
        r = mul(&t, &r);
        n *= 2;
        if 250 >> bit & 1 == 1 {
            r = mul(&mul(&r, &r), a);
            n += 1;
        }
    }
    for bit in (0..tail_bits).rev() {
        r = mul(&r, &r);
        if tail >> bit & 1 == 1 {
            r = mul(&r, a);
        }
    }
    r
}

/// `1/a` as a^(p − 2), p − 2 = (2^250 − 1)·2^5 + 0b01011 (0 for 0).
pub(super) fn invert(a: &Fe) -> Fe {
    pow(a, 0b01011, 5)
}

/// The canonical encoding: the number below p, little-endian (bit 255 clear).
pub(super) fn bytes(a: &Fe) -> [u8; 32] {
    let mut r = *a;
    while let Some(less) = minus(&r, &P) {
        r = less;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (r[i / 4] >> (8 * (i % 4))) as u8;
    }
    out
}

/// The element of an encoding as curve25519-dalek's `FieldElement::from_bytes` reads it:
/// bit 255 ignored, and 2^255 − 19 to 2^255 − 1 taken for 0 to 18 (not refused).
pub(super) fn from_bytes(bytes: &[u8; 32]) -> Fe {
    let mut r = limbs(bytes);
    r[7] &= 0x7fff_ffff;
    r
}

pub(super) fn is_zero(a: &Fe) -> bool {
    bytes(a) == [0; 32]
}

/// curve25519-dalek's `is_negative`: the canonical encoding is odd.
pub(super) fn is_negative(a: &Fe) -> bool {
    bytes(a)[0] & 1 == 1
}

/// A square root of `u/v` if it is a square (0 if `u` is 0), as curve25519-dalek's
/// `sqrt_ratio_i` decides it for a nonzero `v`: r = u·v³·(u·v⁷)^((p − 5)/8), then r or
/// r·√−1 if v·r² is u or −u; either sign (the caller picks one).
pub(super) fn sqrt_ratio(u: &Fe, v: &Fe) -> Option<Fe> {
    let v3 = mul(&mul(v, v), v);
    let v7 = mul(&mul(&v3, &v3), v);
    // (p − 5)/8 = (2^250 − 1)·2^2 + 0b01.
    let r = mul(&mul(u, &v3), &pow(&mul(u, &v7), 0b01, 2));
    let check = mul(v, &mul(&r, &r));
    if is_zero(&sub(&check, u)) {
        Some(r)
    } else if is_zero(&add(&check, u)) {
        Some(mul(&r, &SQRT_M1))
    } else {
        None
    }
}
