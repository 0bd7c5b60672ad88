//! Points of the twisted Edwards curve −x² + y² = 1 + d·x²·y² (Ed25519) in extended
//! coordinates (X : Y : Z : T), x = X/Z, y = Y/Z, x·y = T/Z: curve25519-dalek's
//! decompression and compression, the complete addition, the small-order test, and the
//! verification's `[s]B − [k]A`.

use super::field::{self, D, Fe, ONE, ZERO, mul};
use super::scalar::{self, Scalar};

/// X, Y, Z, T.
pub(super) type Point = [Fe; 4];

pub(super) const IDENTITY: Point = [ZERO, ONE, ONE, ZERO];

/// The base point B: x (even) and y = 4/5.
const BASE_X: Fe = [
    0x8f25_d51a,
    0xc956_2d60,
    0x9525_a7b2,
    0x692c_c760,
    0xfdd6_dc5c,
    0xc0a4_e231,
    0xcd6e_53fe,
    0x2169_36d3,
];
const BASE_Y: Fe = [
    0x6666_6658,
    0x6666_6666,
    0x6666_6666,
    0x6666_6666,
    0x6666_6666,
    0x6666_6666,
    0x6666_6666,
    0x6666_6666,
];

/// B's T = x·y.
const BASE_T: Fe = [
    0xa5b7_dda3,
    0x6dde_8ab3,
    0x7751_52f5,
    0x20f0_9f80,
    0x64ab_e37d,
    0x66ea_4e8e,
    0xd78b_7665,
    0x6787_5f0f,
];

/// B in extended coordinates (in flash, not on the stack).
pub(super) const BASE: Point = [BASE_X, BASE_Y, ONE, BASE_T];

/// curve25519-dalek's `CompressedEdwardsY::decompress`: y from the low 255 bits (y ≥ p
/// taken mod p), x² = (y² − 1)/(d·y² + 1) must be a square, and x's sign is bit 255 — also
/// for x = 0, where it changes nothing.
pub(super) fn decompress(bytes: &[u8; 32]) -> Option<Point> {
    let y = field::from_bytes(bytes);
    let yy = mul(&y, &y);
    let u = field::sub(&yy, &ONE);
    let v = field::add(&mul(&yy, &D), &ONE);
    let mut x = field::sqrt_ratio(&u, &v)?;
    if field::is_negative(&x) != (bytes[31] >> 7 == 1) {
        x = field::neg(&x);
    }
    let t = mul(&x, &y);
    Some([x, y, ONE, t])
}

/// The canonical encoding: y below p, bit 255 the sign of x.
#[inline(never)]
pub(super) fn compress(p: &Point) -> [u8; 32] {
    let z = field::invert(&p[2]);
    let mut bytes = field::bytes(&mul(&p[1], &z));
    bytes[31] |= u8::from(field::is_negative(&mul(&p[0], &z))) << 7;
    bytes
}

/// `p + q` by the complete formula for a = −1 (Hisil–Wong–Carter–Dawson, "add-2008-hwcd-3"),
/// also right for `p = q`: the doubling too.
#[inline(never)]
pub(super) fn add(p: &Point, q: &Point) -> Point {
    let [x1, y1, z1, t1] = p;
    let [x2, y2, z2, t2] = q;
    let a = mul(&field::sub(y1, x1), &field::sub(y2, x2));
    let b = mul(&field::add(y1, x1), &field::add(y2, x2));
    let c = mul(&mul(t1, t2), &D);
    let c = field::add(&c, &c);
    let d = mul(z1, z2);
    let d = field::add(&d, &d);
    let (e, f) = (field::sub(&b, &a), field::sub(&d, &c));
    let (g, h) = (field::add(&d, &c), field::add(&b, &a));
    [mul(&e, &f), mul(&g, &h), mul(&f, &g), mul(&e, &h)]
}

/// curve25519-dalek's `is_small_order`: `[8]p` is the identity (X = 0 and Y = Z).
pub(super) fn is_small_order(p: &Point) -> bool {
    let mut q = *p;
    for _ in 0..3 {
        q = add(&q, &q);
    }
    field::is_zero(&q[0]) && field::is_zero(&field::sub(&q[1], &q[2]))
}

/// `[s]B − [k]A` by one joint double-and-add from the scalars' top bit down (Shamir's
/// trick): each step doubles the sum, then adds `B`, `−A` or `B − A` as the two bits say.
/// Five points on the stack instead of lookup tables; variable time, which verification
/// allows (every input is public). Both scalars are below ℓ < 2^253.
#[inline(never)]
pub(super) fn combination(s: &Scalar, a: &Point, k: &Scalar) -> Point {
    let b = &BASE;
    let [x, y, z, t] = a;
    let minus_a = [field::neg(x), *y, *z, field::neg(t)];
    let both = add(b, &minus_a);
    let mut sum = IDENTITY;
    for bit in (0..253u8).rev() {
        sum = add(&sum, &sum);
        let addend = match (scalar::bit(s, bit), scalar::bit(k, bit)) {
            (true, true) => &both,
            (true, false) => b,
            (false, true) => &minus_a,
            (false, false) => continue,
        };
        sum = add(&sum, addend);
    }
    sum
}
