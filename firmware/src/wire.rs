//! A zero-copy reader of protobuf fields: the signature payload is computed from the
//! file's raw fields, and the strings, ids and bytecode a program keeps are borrowed from
//! the verified file in place rather than copied into fixed buffers.

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    /// Its field number.
    pub(crate) number: u32,
    /// The value of a varint field (0 for the other wire types).
    pub(crate) varint: u64,
    /// The payload of a length-delimited field (empty for the other wire types).
    pub(crate) bytes: &'a [u8],
    /// The whole field as encoded: tag, length and payload.
    pub(crate) raw: &'a [u8],
}

/// The bytes do not frame as protobuf fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The fields of `message`, in order.
pub(crate) fn fields(message: &[u8]) -> impl Iterator<Item = Result<Field<'_>, Malformed>> {
    let mut at = 0;
    core::iter::from_fn(move || {
        if at >= message.len() {
            return None;
        }
        let field = field_at(message, at);
        at = match field {
            Ok((_, next)) => next,
            Err(_) => message.len(),
        };
        Some(field.map(|(f, _)| f))
    })
}

fn field_at(message: &[u8], start: usize) -> Result<(Field<'_>, usize), Malformed> {
    let (tag, mut at) = varint(message, start)?;
    let number = u32::try_from(tag >> 3).map_err(|_| Malformed)?;
    if number == 0 {
        return Err(Malformed);
    }
    let (mut value, mut bytes) = (0, &message[..0]);
    match tag & 7 {
        0 => (value, at) = varint(message, at)?,
        1 => at = at.checked_add(8).ok_or(Malformed)?,
        2 => {
            let (len, body) = varint(message, at)?;
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| body.checked_add(len))
                .ok_or(Malformed)?;
            bytes = message.get(body..end).ok_or(Malformed)?;
            at = end;
        }
        5 => at = at.checked_add(4).ok_or(Malformed)?,
        _ => return Err(Malformed),
    }
    let raw = message.get(start..at).ok_or(Malformed)?;
    Ok((
        Field {
            number,
            varint: value,
            bytes,
            raw,
        },
        at,
    ))
}

fn varint(bytes: &[u8], mut at: usize) -> Result<(u64, usize), Malformed> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(at).ok_or(Malformed)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value, at));
        }
    }
    Err(Malformed)
}

/// The varints of a packed repeated field.
pub(crate) fn varints(bytes: &[u8]) -> impl Iterator<Item = Result<u64, Malformed>> {
    let mut at = 0;
    core::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let element = varint(bytes, at);
        at = element.map_or(bytes.len(), |(_, next)| next);
        Some(element.map(|(value, _)| value))
    })
}

/// The last occurrence of length-delimited field `number` (empty when absent).
pub(crate) fn bytes(message: &[u8], number: u32) -> &[u8] {
    fields(message)
        .filter_map(Result::ok)
        .filter(|f| f.number == number)
        .last()
        .map_or(&[], |f| f.bytes)
}

/// Every occurrence of length-delimited field `number`, in order.
pub(crate) fn repeated(message: &[u8], number: u32) -> impl Iterator<Item = &[u8]> {
    fields(message)
        .filter_map(Result::ok)
        .filter(move |f| f.number == number)
        .map(|f| f.bytes)
}

/// The last occurrence of varint field `number` as an `int32`: its low 32 bits (0 when
/// absent).
pub(crate) fn int32(message: &[u8], number: u32) -> Result<i32, Malformed> {
    let mut value = 0;
    for field in fields(message) {
        let field = field?;
        if field.number == number {
            value = field.varint as u32 as i32;
        }
    }
    Ok(value)
}

/// A `fixed32` field as a `float` (little-endian).
pub(crate) fn float_of(field: &Field<'_>) -> f32 {
    field
        .raw
        .last_chunk()
        .map_or(0.0, |b| f32::from_le_bytes(*b))
}

/// The last occurrence of `fixed32` field `number` as a `float` (0 when absent).
pub(crate) fn float(message: &[u8], number: u32) -> f32 {
    fields(message)
        .filter_map(Result::ok)
        .filter(|f| f.number == number)
        .last()
        .map_or(0.0, |f| float_of(&f))
}

/// Whether `message` has field `number` (in a canonical encoding: a string or bytes field
/// that is not empty, a repeated field with at least one element).
pub(crate) fn has(message: &[u8], number: u32) -> bool {
    fields(message)
        .filter_map(Result::ok)
        .any(|f| f.number == number)
}

/// Field `number` of `message` as UTF-8 (empty when absent).
pub(crate) fn string(message: &[u8], number: u32) -> Result<&str, Malformed> {
    core::str::from_utf8(bytes(message, number)).map_err(|_| Malformed)
}
