//! The canonical-encoding check the server makes before anything else (`eyeflow_ir::decode`
//! re-encodes the program and refuses any difference): every field known to the schema
//! with its wire type, in ascending order, once unless repeated, without default values,
//! minimal varints, repeated scalars packed, map entries sorted by key, UTF-8 strings. A
//! file that fails it is `malformed` on both sides, whatever its signature.
//!
//! The schema below is `proto/proto/llm_ir.proto`'s, field by field (a host test checks
//! that the programs the server signs pass).

use crate::wire::{self, Malformed};

/// How a field is encoded.
#[derive(Clone, Copy)]
enum Kind {
    Int32,
    Int64,
    Uint32,
    Uint64,
    Bool,
    Float,
    Str,
    Bytes,
    Msg(Schema),
    RepStr,
    RepMsg(Schema),
    PackedInt32,
    PackedUint32,
    /// `map<string, string>`.
    Map,
}

type Schema = &'static [(u32, Kind)];

use Kind::*;

const PROGRAM: Schema = &[
    (1, Str),
    (2, Str),
    (3, Str),
    (4, Int64),
    (5, Str),
    (6, Bytes),
    (7, Str),
    (8, RepMsg(INSTRUCTION)),
    (9, Msg(METADATA)),
    (10, Str),
    (11, RepMsg(&[(1, Str), (2, Str)])),
    (12, RepMsg(TRIGGER)),
    (13, Msg(PRIORITY)),
    (16, Int32),
];
const METADATA: Schema = &[
    (1, Str),
    (2, Str),
    (3, Str),
    (4, RepStr),
    (5, Map),
    (6, Str),
];
const TRIGGER: Schema = &[
    (1, Int32),
    (2, Str),
    (3, Str),
    (4, Uint64),
    (5, Str),
    (6, Str),
];
const PRIORITY: Schema = &[(1, Int32), (2, Bool), (3, Int32)];
const INSTRUCTION: Schema = &[
    (1, Str),
    (2, Int32),
    (3, Str),
    (4, Msg(DISPATCH)),
    (5, RepStr),
    (6, Msg(&[(1, Int32), (2, Str), (3, Str), (4, PackedInt32)])),
    (
        7,
        Msg(&[
            (1, Uint32),
            (2, Uint32),
            (3, Float),
            (4, Uint32),
            (5, PackedInt32),
        ]),
    ),
    (8, Msg(&[(1, Uint32), (2, Int32)])),
    (9, Msg(&[(1, Bool), (2, Bool), (3, Bool), (4, Bool)])),
    (10, Int32),
    (11, Bool),
    (12, Str),
    (13, Str),
    (14, Str),
    (15, Msg(PRIORITY)),
    (
        16,
        Msg(&[(1, Uint32), (2, RepStr), (3, Str), (4, Str), (5, Str)]),
    ),
    (17, Msg(&[(1, Int32), (2, Str), (3, Uint32), (4, Str)])),
    (18, Str),
    (
        19,
        Msg(&[(1, Uint32), (2, Uint32), (3, Int32), (4, PackedUint32)]),
    ),
    (
        20,
        Msg(&[
            (1, Str),
            (2, Str),
            (3, Str),
            (4, Map),
            (5, Uint32),
            (6, Uint32),
        ]),
    ),
    (21, RepStr),
    (22, Str),
    (23, Map),
    (24, Str),
    (25, Msg(&[(1, Str), (2, Str), (3, Map)])),
    (26, Msg(&[(1, Str), (2, Str)])),
    (
        27,
        Msg(&[
            (1, Bytes),
            (2, Bytes),
            (3, RepMsg(&[(1, Str), (2, Bytes)])),
            (4, Bytes),
            (5, RepMsg(&[(1, Str), (2, Bytes)])),
            (6, Bytes),
        ]),
    ),
];
const DISPATCH: Schema = &[
    (1, Str),
    (2, Str),
    (3, Str),
    (4, Str),
    (5, Str),
    (6, Str),
    (7, Str),
    (8, Float),
    (9, Int32),
    (10, Str),
    (11, Str),
    (12, Int32),
    (13, Int32),
    (14, Bool),
    (15, Str),
    (16, Str),
    (17, RepMsg(&[(1, Str), (2, Str), (3, Str)])),
    (18, RepMsg(&[(1, Str), (2, Str), (3, Str)])),
];
/// A map entry: key and value, each left out when empty.
const ENTRY: Schema = &[(1, Str), (2, Str)];

/// Checks that `file` is a program in its canonical encoding.
pub(crate) fn check(file: &[u8]) -> Result<(), Malformed> {
    message(file, PROGRAM)
}

fn message(bytes: &[u8], schema: Schema) -> Result<(), Malformed> {
    let mut last = 0u32;
    let mut last_key: Option<&[u8]> = None;
    for field in wire::fields(bytes) {
        let field = field?;
        let &(_, kind) = schema
            .iter()
            .find(|(n, _)| *n == field.number)
            .ok_or(Malformed)?;
        let repeated = matches!(kind, RepStr | RepMsg(_) | Map);
        if field.number < last || (field.number == last && !repeated) {
            return Err(Malformed);
        }
        if field.number != last {
            last_key = None;
        }
        last = field.number;
        if !minimal_framing(field.raw, field.bytes.len()) {
            return Err(Malformed);
        }
        let wire_type = field.raw.first().map_or(0, |b| b & 7);
        let expected = match kind {
            Int32 | Int64 | Uint32 | Uint64 | Bool => 0,
            Float => 5,
            _ => 2,
        };
        if wire_type != expected {
            return Err(Malformed);
        }
        let value = field.varint;
        let ok = match kind {
            Int32 => value as i32 != 0 && varint_is(field.raw, value as i32 as i64 as u64),
            Int64 => value != 0 && varint_is(field.raw, value),
            Uint32 => value as u32 != 0 && varint_is(field.raw, u64::from(value as u32)),
            Uint64 => value != 0 && varint_is(field.raw, value),
            Bool => field.raw.last() == Some(&1) && varint_is(field.raw, 1),
            Float => {
                let raw = field.raw.get(field.raw.len() - 4..).ok_or(Malformed)?;
                f32::from_le_bytes(raw.try_into().map_err(|_| Malformed)?) != 0.0
            }
            Str => !field.bytes.is_empty() && core::str::from_utf8(field.bytes).is_ok(),
            Bytes => !field.bytes.is_empty(),
            RepStr => core::str::from_utf8(field.bytes).is_ok(),
            Msg(inner) | RepMsg(inner) => message(field.bytes, inner).is_ok(),
            PackedInt32 => packed(field.bytes, |v| v as i32 as i64 as u64),
            PackedUint32 => packed(field.bytes, |v| u64::from(v as u32)),
            Map => {
                let key = wire::bytes(field.bytes, 1);
                let sorted = last_key.is_none_or(|previous| previous < key);
                last_key = Some(key);
                sorted && message(field.bytes, ENTRY).is_ok()
            }
        };
        if !ok {
            return Err(Malformed);
        }
    }
    Ok(())
}

/// `value` as a minimal varint: its bytes and their count.
fn encode_varint(mut value: u64) -> ([u8; 10], usize) {
    let mut out = [0u8; 10];
    let mut len = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[len] = byte;
            return (out, len + 1);
        }
        out[len] = byte | 0x80;
        len += 1;
    }
}

/// The length of the varint at the start of `bytes` (`None`: unterminated).
fn varint_at(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| b & 0x80 == 0).map(|i| i + 1)
}

/// The value of the varint `bytes` (at most ten bytes, checked by the caller).
fn value_of(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .enumerate()
        .fold(0, |v, (i, b)| v | (u64::from(b & 0x7f) << (7 * i)))
}

/// Whether `bytes` are exactly `value`'s minimal varint.
fn is_varint(bytes: &[u8], value: u64) -> bool {
    let (encoded, len) = encode_varint(value);
    bytes == &encoded[..len]
}

/// Whether the field `raw` (a minimal tag, then a varint) ends with exactly `value`'s
/// minimal varint.
fn varint_is(raw: &[u8], value: u64) -> bool {
    varint_at(raw).is_some_and(|tag_len| is_varint(&raw[tag_len..], value))
}

/// Whether the tag (and, for a length-delimited field, the length) are minimal varints.
fn minimal_framing(raw: &[u8], payload: usize) -> bool {
    let Some(tag_len) = varint_at(raw) else {
        return false;
    };
    let tag = &raw[..tag_len];
    if !is_varint(tag, value_of(tag)) {
        return false;
    }
    if tag[0] & 7 != 2 {
        return true;
    }
    let rest = &raw[tag_len..];
    varint_at(rest)
        .is_some_and(|len| is_varint(&rest[..len], payload as u64) && rest.len() == len + payload)
}

/// A packed list of varints, non-empty, each exactly as prost encodes its decoded value
/// (`canonical`: the value an int32 or a uint32 field keeps).
fn packed(mut bytes: &[u8], canonical: impl Fn(u64) -> u64) -> bool {
    if bytes.is_empty() {
        return false;
    }
    while !bytes.is_empty() {
        let Some(len) = varint_at(bytes).filter(|&len| len <= 10) else {
            return false;
        };
        let (element, rest) = bytes.split_at(len);
        if !is_varint(element, canonical(value_of(element))) {
            return false;
        }
        bytes = rest;
    }
    true
}
