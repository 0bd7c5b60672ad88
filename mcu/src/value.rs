//! The values of the MCU profile (null, booleans, numbers as `f64`, short strings), their
//! canonical bytes, and the digest the trace shows for each step.

use core::fmt;

use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::limits::MAX_STR;

/// A scalar value. Strings borrow from the code, the script or the caller's buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Every number (the MCU profile has one number type).
    Num(f64),
    /// A string of at most [`MAX_STR`] bytes.
    Str(&'a str),
}

const NULL: u8 = 0x00;
const BOOL: u8 = 0x01;
const NUM: u8 = 0x02;
const STR: u8 = 0x03;

impl<'a> Value<'a> {
    /// Feeds the canonical bytes to `sink`: null `00`; bool `01 b`; number `02` + the
    /// `f64` bits big-endian; string `03` + u16 big-endian length + UTF-8 bytes.
    pub fn canonical(&self, mut sink: impl FnMut(&[u8])) {
        match self {
            Value::Null => sink(&[NULL]),
            Value::Bool(b) => sink(&[BOOL, u8::from(*b)]),
            Value::Num(n) => {
                sink(&[NUM]);
                sink(&n.to_bits().to_be_bytes());
            }
            Value::Str(s) => {
                sink(&[STR]);
                let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
                sink(&len.to_be_bytes());
                sink(&s.as_bytes()[..usize::from(len)]);
            }
        }
    }

    /// Reads one value in its canonical form from `bytes` at `at`; returns it and the
    /// offset after it. Strings longer than [`MAX_STR`] are refused.
    pub fn decode(bytes: &'a [u8], at: usize) -> Result<(Value<'a>, usize), Error> {
        let tag = *bytes.get(at).ok_or(Error::Truncated { at })?;
        let body = at + 1;
        match tag {
            NULL => Ok((Value::Null, body)),
            BOOL => match bytes.get(body) {
                Some(0) => Ok((Value::Bool(false), body + 1)),
                Some(1) => Ok((Value::Bool(true), body + 1)),
                Some(&tag) => Err(Error::BadValue { at: body, tag }),
                None => Err(Error::Truncated { at: body }),
            },
            NUM => {
                let raw = take::<8>(bytes, body)?;
                Ok((
                    Value::Num(f64::from_bits(u64::from_be_bytes(raw))),
                    body + 8,
                ))
            }
            STR => {
                let len = usize::from(u16::from_be_bytes(take::<2>(bytes, body)?));
                let start = body + 2;
                let raw = bytes
                    .get(start..start + len)
                    .ok_or(Error::Truncated { at: start })?;
                Ok((Value::Str(short_str(raw, start)?), start + len))
            }
            tag => Err(Error::BadValue { at, tag }),
        }
    }

    /// The digest the trace shows: the first 8 bytes of the SHA-256 of the canonical bytes.
    pub fn digest(&self) -> Digest {
        let mut hasher = Sha256::new();
        self.canonical(|bytes| hasher.update(bytes));
        let full = hasher.finalize();
        let mut out = [0; 8];
        out.copy_from_slice(&full[..8]);
        Digest(out)
    }
}

/// The first 8 bytes of a value's SHA-256; displays as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 8]);

impl Digest {
    /// Writes the 16 lowercase hex digits (without `core::fmt`'s formatting machinery).
    pub fn write(&self, out: &mut impl fmt::Write) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.0.iter().try_for_each(|b| {
            out.write_char(char::from(HEX[usize::from(b >> 4)]))?;
            out.write_char(char::from(HEX[usize::from(b & 0xf)]))
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f)
    }
}

/// `N` bytes at `at`, or `Truncated`.
pub(crate) fn take<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], Error> {
    bytes
        .get(at..at + N)
        .and_then(|raw| raw.try_into().ok())
        .ok_or(Error::Truncated { at })
}

/// `raw` as a string value: UTF-8 and at most [`MAX_STR`] bytes.
pub(crate) fn short_str(raw: &[u8], at: usize) -> Result<&str, Error> {
    if raw.len() > MAX_STR {
        return Err(Error::BadString { at });
    }
    core::str::from_utf8(raw).map_err(|_| Error::BadString { at })
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use super::*;

    fn roundtrip(value: Value<'_>) {
        let mut buf = [0u8; 64];
        let mut len = 0;
        value.canonical(|bytes| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        });
        let (back, end) = Value::decode(&buf[..len], 0).expect("decodes");
        assert_eq!(back, value);
        assert_eq!(end, len);
    }

    #[test]
    fn values_round_trip_through_their_canonical_bytes() {
        roundtrip(Value::Null);
        roundtrip(Value::Bool(true));
        roundtrip(Value::Bool(false));
        roundtrip(Value::Num(-12.5));
        roundtrip(Value::Str("open"));
    }

    #[test]
    fn digests_are_sha256_prefixes_of_the_canonical_bytes() {
        // sha256([0x00]) = 6e340b9cffb37a98...
        assert_eq!(Value::Null.digest().to_string(), "6e340b9cffb37a98");
        assert_ne!(Value::Num(1.0).digest(), Value::Num(-1.0).digest());
        assert_ne!(Value::Str("1").digest(), Value::Num(1.0).digest());
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(
            Value::decode(&[0x02, 0, 0], 0),
            Err(Error::Truncated { at: 1 })
        );
        assert_eq!(
            Value::decode(&[0x09], 0),
            Err(Error::BadValue { at: 0, tag: 9 })
        );
        assert_eq!(
            Value::decode(&[0x01, 7], 0),
            Err(Error::BadValue { at: 1, tag: 7 })
        );
        let mut long = [b'a'; 40];
        long[0] = 0x03;
        long[1] = 0;
        long[2] = 37;
        assert_eq!(Value::decode(&long, 0), Err(Error::BadString { at: 3 }));
    }
}
