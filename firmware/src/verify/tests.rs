//! The field, scalar and point arithmetic of `verify` against curve25519-dalek's on edge
//! values and pseudo-random ones.

extern crate std;

use std::vec::Vec;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar as DalekScalar;

use super::edwards::{self, Point};
use super::field::{self, Fe, ONE, ZERO, mul};
use super::scalar;

#[allow(dead_code)]
#[path = "../../tests/support/random.rs"]
mod random;

use random::{Random, p_plus};

/// Scalars and points from [`Random`].
trait Curve {
    fn scalar(&mut self) -> DalekScalar;
    fn point(&mut self) -> EdwardsPoint;
}

impl Curve for Random {
    fn scalar(&mut self) -> DalekScalar {
        DalekScalar::from_bytes_mod_order_wide(&self.bytes())
    }

    /// A point of the prime-order subgroup, or with a torsion component.
    fn point(&mut self) -> EdwardsPoint {
        let torsion = EIGHT_TORSION[(self.next() % 8) as usize];
        EdwardsPoint::mul_base(&self.scalar()) + torsion
    }
}

fn small(value: u8, sign: bool) -> [u8; 32] {
    let mut bytes = [0; 32];
    bytes[0] = value;
    bytes[31] = u8::from(sign) << 7;
    bytes
}

fn ours(point: &EdwardsPoint) -> Point {
    edwards::decompress(point.compress().as_bytes()).expect("a point decompresses")
}

fn fe(value: u32) -> Fe {
    let mut fe = ZERO;
    fe[0] = value;
    fe
}

#[test]
fn field_canonical_encodings() {
    // p, p + 18, 2^256 − 1 ≡ 37, 2p + 18 ≡ 18: reduced below p.
    assert_eq!(field::bytes(&field::from_bytes(&p_plus(0, false))), [0; 32]);
    assert_eq!(
        field::bytes(&field::from_bytes(&p_plus(18, false))),
        small(18, false)
    );
    assert_eq!(field::bytes(&[u32::MAX; 8]), small(37, false));
    let mut two_p = [u32::MAX; 8];
    two_p[0] = 0xffff_ffda + 18;
    assert_eq!(field::bytes(&two_p), small(18, false));
    // Bit 255 is not part of the element.
    assert_eq!(field::from_bytes(&small(3, true)), fe(3));
    // 0 − 1 = p − 1, 1 + (p − 1) = 0.
    let minus_one = field::neg(&ONE);
    assert_eq!(field::bytes(&minus_one), {
        let mut b = p_plus(0, false);
        b[0] = 0xec;
        b
    });
    assert!(field::is_zero(&field::add(&ONE, &minus_one)));
    // d·(−121666) = 121665 (d = −121665/121666).
    let product = mul(&field::D, &field::neg(&fe(121_666)));
    assert_eq!(field::bytes(&product), field::bytes(&fe(121_665)));
}

#[test]
fn field_inverse_and_square_root() {
    let mut random = Random(1);
    let mut squares = 0;
    for i in 0..200 {
        let a: Fe = match i {
            0 => [u32::MAX; 8],
            1 => field::from_bytes(&p_plus(1, false)),
            2 => fe(2),
            _ => field::limbs(&random.bytes()),
        };
        assert_eq!(
            field::bytes(&mul(&a, &field::invert(&a))),
            field::bytes(&ONE)
        );
        let v = field::limbs(&random.bytes());
        if let Some(r) = field::sqrt_ratio(&a, &v) {
            squares += 1;
            assert!(field::is_zero(&field::sub(&mul(&v, &mul(&r, &r)), &a)));
        }
    }
    assert!((60..140).contains(&squares), "{squares} squares of 200");
    // 0 has the square root 0 and no inverse (0^(p − 2) = 0).
    assert_eq!(
        field::sqrt_ratio(&ZERO, &ONE).map(|r| field::bytes(&r)),
        Some([0; 32])
    );
    assert_eq!(field::bytes(&field::invert(&ZERO)), [0; 32]);
    // √−1.
    let i = field::sqrt_ratio(&field::neg(&ONE), &ONE).expect("−1 is a square");
    assert_eq!(field::bytes(&mul(&i, &i)), field::bytes(&field::neg(&ONE)));
}

/// u = (1 + y)/(1 − y), the Montgomery u of a point: mul, add, sub, invert and bytes
/// against curve25519-dalek's own field (`to_montgomery`).
#[test]
fn field_against_dalek_through_the_montgomery_map() {
    let mut random = Random(2);
    for _ in 0..200 {
        let point = random.point();
        let y = field::from_bytes(point.compress().as_bytes());
        let u = mul(&field::add(&ONE, &y), &field::invert(&field::sub(&ONE, &y)));
        assert_eq!(field::bytes(&u), point.to_montgomery().to_bytes());
    }
}

#[test]
fn decompression_as_dalek_on_edge_encodings() {
    let mut encodings = Vec::new();
    for sign in [false, true] {
        for plus in 0..=18 {
            // y = p + plus (non-canonical, read as plus) and y = plus.
            encodings.push(p_plus(plus, sign));
            encodings.push(small(plus, sign));
        }
        // y = p − 1, p − 2 (−1, −2), 2^255 − 1 is p + 18 above.
        let mut minus = p_plus(0, sign);
        minus[0] = 0xec;
        encodings.push(minus);
        minus[0] = 0xeb;
        encodings.push(minus);
    }
    let mut random = Random(3);
    for _ in 0..300 {
        encodings.push(random.bytes());
    }
    for torsion in EIGHT_TORSION {
        let mut bytes = torsion.compress().to_bytes();
        encodings.push(bytes);
        bytes[31] ^= 0x80;
        encodings.push(bytes);
    }
    let (mut valid, mut invalid) = (0, 0);
    for bytes in encodings {
        let dalek = CompressedEdwardsY(bytes).decompress();
        let point = edwards::decompress(&bytes);
        assert_eq!(
            point.map(|p| edwards::compress(&p)),
            dalek.map(|p| p.compress().to_bytes()),
            "{bytes:02x?}"
        );
        if let (Some(point), Some(dalek)) = (point, dalek) {
            assert_eq!(edwards::is_small_order(&point), dalek.is_small_order());
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    assert!(valid > 100 && invalid > 100, "{valid} valid, {invalid} not");
}

#[test]
fn points_add_as_dalek() {
    let mut random = Random(4);
    for _ in 0..100 {
        let (p, q) = (random.point(), random.point());
        let sum = edwards::add(&ours(&p), &ours(&q));
        assert_eq!(edwards::compress(&sum), (p + q).compress().to_bytes());
        let double = edwards::add(&ours(&p), &ours(&p));
        assert_eq!(edwards::compress(&double), (p + p).compress().to_bytes());
        assert_eq!(edwards::is_small_order(&ours(&p)), p.is_small_order());
    }
    for torsion in EIGHT_TORSION {
        assert!(edwards::is_small_order(&ours(&torsion)));
        let p = random.point();
        let sum = edwards::add(&ours(&p), &ours(&torsion));
        assert_eq!(edwards::compress(&sum), (p + torsion).compress().to_bytes());
    }
}

#[test]
fn combination_as_dalek() {
    let mut random = Random(5);
    let b = ED25519_BASEPOINT_POINT.compress().to_bytes();
    assert_eq!(edwards::compress(&edwards::BASE), b);
    let minus_one = DalekScalar::ZERO - DalekScalar::ONE;
    for i in 0..40 {
        let a = random.point();
        let (s, k) = match i {
            0 => (minus_one, minus_one),
            1 => (DalekScalar::ZERO, minus_one),
            2 => (minus_one, DalekScalar::ZERO),
            3 => (DalekScalar::ZERO, DalekScalar::ZERO),
            _ => (random.scalar(), random.scalar()),
        };
        let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s);
        let (s, k) = (field::limbs(s.as_bytes()), field::limbs(k.as_bytes()));
        let got = edwards::combination(&s, &ours(&a), &k);
        assert_eq!(edwards::compress(&got), expected.compress().to_bytes());
    }
}

#[test]
fn scalars_as_dalek() {
    let mut edges: Vec<[u8; 32]> = std::vec![[0; 32], [0xff; 32], small(1, false)];
    let minus_one = (DalekScalar::ZERO - DalekScalar::ONE).to_bytes();
    // ℓ − 1, ℓ, ℓ + 1, ℓ + 2^128, 2^252, 2^253 − 1, 2^255.
    for add in [0u8, 1, 2] {
        let mut bytes = minus_one;
        let mut carry = u16::from(add);
        for byte in &mut bytes {
            let sum = u16::from(*byte) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        edges.push(bytes);
    }
    let mut plus_high = minus_one;
    plus_high[16] = 1;
    edges.push(plus_high);
    for (at, byte) in [(31, 0x10), (31, 0x80)] {
        let mut bytes = [0; 32];
        bytes[at] = byte;
        edges.push(bytes);
    }
    let mut top = [0xff; 32];
    top[31] = 0x1f;
    edges.push(top);
    let mut random = Random(6);
    for _ in 0..200 {
        edges.push(random.bytes());
    }
    for bytes in &edges {
        let dalek: Option<DalekScalar> = DalekScalar::from_canonical_bytes(*bytes).into();
        assert_eq!(
            scalar::canonical(bytes),
            dalek.map(|s| field::limbs(s.as_bytes())),
            "{bytes:02x?}"
        );
    }
    let mut wide_edges: Vec<[u8; 64]> = std::vec![[0; 64], [0xff; 64]];
    for bytes in &edges {
        let mut low = [0; 64];
        low[..32].copy_from_slice(bytes);
        wide_edges.push(low);
        let mut high = [0; 64];
        high[32..].copy_from_slice(bytes);
        wide_edges.push(high);
    }
    for _ in 0..200 {
        wide_edges.push(random.bytes());
    }
    for wide in &wide_edges {
        let dalek = DalekScalar::from_bytes_mod_order_wide(wide);
        assert_eq!(scalar::reduce(wide), field::limbs(dalek.as_bytes()));
    }
}
