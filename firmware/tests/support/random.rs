//! What the firmware's unit tests (`src/verify/tests.rs`) and `tests/strict.rs` share:
//! deterministic pseudo-random bytes and encodings at the edge of the field.

/// splitmix64: deterministic pseudo-random bytes.
pub(crate) struct Random(pub(crate) u64);

impl Random {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for byte in &mut out {
            *byte = self.next() as u8;
        }
        out
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// 2^255 − 19 + `plus`, little-endian (`plus` ≤ 18: 2^255 − 1 at most), bit 255 set to
/// `sign`.
pub(crate) fn p_plus(plus: u8, sign: bool) -> [u8; 32] {
    let mut bytes = [0xff; 32];
    bytes[0] = 0xed + plus;
    bytes[31] = 0x7f | u8::from(sign) << 7;
    bytes
}
