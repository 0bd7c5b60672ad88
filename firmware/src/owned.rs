//! Values the execution keeps (instruction results, L1 memory, fallback values): a
//! [`Value`] with its string copied into a fixed buffer, so it outlives what it was read
//! from; and the scalar JSON literals of FALLBACK_VALUE and LOAD defaults.

use eyeflow_mcu::Value;
use eyeflow_mcu::limits::MAX_STR;
use heapless::String;

/// An owned [`Value`].
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Owned {
    /// `null`.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string of at most [`MAX_STR`] bytes.
    Str(String<MAX_STR>),
}

impl Owned {
    /// A copy of `value`; `None` for a string longer than [`MAX_STR`].
    pub fn of(value: Value<'_>) -> Option<Self> {
        Some(match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(b),
            Value::Num(n) => Self::Num(n),
            Value::Str(s) => Self::Str(String::try_from(s).ok()?),
        })
    }

    /// The value, borrowing the string.
    pub fn get(&self) -> Value<'_> {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Num(n) => Value::Num(*n),
            Self::Str(s) => Value::Str(s.as_str()),
        }
    }
}

/// Why a JSON literal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not JSON.
    Malformed,
    /// An object or a list: the MCU profile has scalars only.
    NotScalar,
    /// A string longer than [`MAX_STR`], or a number the device does not parse exactly.
    TooLong,
}

/// The scalar JSON literal `text` (`null`, `true`, `false`, a number, a string).
pub(crate) fn parse_json(text: &str) -> Result<Owned, JsonError> {
    let text = text.trim_matches([' ', '\t', '\n', '\r']);
    match text.as_bytes().first() {
        None => Err(JsonError::Malformed),
        Some(b'{' | b'[') => Err(JsonError::NotScalar),
        Some(b'"') => json_string(text).map(Owned::Str),
        _ => match text {
            "null" => Ok(Owned::Null),
            "true" => Ok(Owned::Bool(true)),
            "false" => Ok(Owned::Bool(false)),
            number => json_number(number).map(Owned::Num),
        },
    }
}

/// Exact powers of ten: every one up to 10^22 is an `f64` without rounding.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A JSON number, when one IEEE operation gives it exactly rounded (Clinger's fast path:
/// at most 2^53 as digits, a decimal exponent within ±22) — what `serde_json` gives for
/// it too. Other numbers are refused as over capacity: core's exact parser costs ≈ 13 KB
/// of flash.
fn json_number(text: &str) -> Result<f64, JsonError> {
    let bytes = text.as_bytes();
    let (negative, mut at) = match bytes.first() {
        Some(b'-') => (true, 1),
        _ => (false, 0),
    };
    let digits_from = |at: &mut usize| {
        let start = *at;
        while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        &bytes[start..*at]
    };
    let integer = digits_from(&mut at);
    if integer.is_empty() || (integer.len() > 1 && integer[0] == b'0') {
        return Err(JsonError::Malformed);
    }
    let mut fraction: &[u8] = &[];
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        fraction = digits_from(&mut at);
        if fraction.is_empty() {
            return Err(JsonError::Malformed);
        }
    }
    let mut exponent: i32 = 0;
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        let sign = match bytes.get(at) {
            Some(b'-') => {
                at += 1;
                -1
            }
            Some(b'+') => {
                at += 1;
                1
            }
            _ => 1,
        };
        let digits = digits_from(&mut at);
        if digits.is_empty() {
            return Err(JsonError::Malformed);
        }
        for &d in digits {
            exponent = exponent
                .saturating_mul(10)
                .saturating_add(i32::from(d - b'0'));
        }
        exponent *= sign;
    }
    if at != bytes.len() {
        return Err(JsonError::Malformed);
    }
    let mut mantissa: u64 = 0;
    for &d in integer.iter().chain(fraction) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(d - b'0')))
            .ok_or(JsonError::TooLong)?;
    }
    let exponent = exponent.saturating_sub(i32::try_from(fraction.len()).unwrap_or(i32::MAX));
    if mantissa > 1 << 53 {
        return Err(JsonError::TooLong);
    }
    let power = POWERS_OF_TEN
        .get(exponent.unsigned_abs() as usize)
        .ok_or(JsonError::TooLong)?;
    let magnitude = if exponent < 0 {
        mantissa as f64 / power
    } else {
        mantissa as f64 * power
    };
    Ok(if negative { -magnitude } else { magnitude })
}

fn json_string(text: &str) -> Result<String<MAX_STR>, JsonError> {
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or(JsonError::Malformed)?;
    let mut out = String::new();
    let mut chars = inner.chars();
    let mut push = |c: char| out.push(c).map_err(|_| JsonError::TooLong);
    while let Some(c) = chars.next() {
        let c = match c {
            '"' => return Err(JsonError::Malformed),
            '\\' => match chars.next().ok_or(JsonError::Malformed)? {
                '"' => '"',
                '\\' => '\\',
                '/' => '/',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let high = hex4(&mut chars)?;
                    let code = if (0xd800..0xdc00).contains(&high) {
                        if chars.next() != Some('\\') || chars.next() != Some('u') {
                            return Err(JsonError::Malformed);
                        }
                        let low = hex4(&mut chars)?;
                        0x10000 + ((high - 0xd800) << 10) + (low.wrapping_sub(0xdc00) & 0x3ff)
                    } else {
                        high
                    };
                    char::from_u32(code).ok_or(JsonError::Malformed)?
                }
                _ => return Err(JsonError::Malformed),
            },
            c if u32::from(c) < 0x20 => return Err(JsonError::Malformed),
            c => c,
        };
        push(c)?;
    }
    Ok(out)
}

fn hex4(chars: &mut core::str::Chars<'_>) -> Result<u32, JsonError> {
    (0..4).try_fold(0, |acc, _| {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or(JsonError::Malformed)?;
        Ok(acc * 16 + digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_json_literals() {
        assert_eq!(parse_json(" null "), Ok(Owned::Null));
        assert_eq!(parse_json("true"), Ok(Owned::Bool(true)));
        assert_eq!(parse_json("-1.5e2"), Ok(Owned::Num(-150.0)));
        for (text, number) in [
            ("0", 0.0),
            ("0.1", 0.1),
            ("12.75", 12.75),
            ("-3e-5", -3e-5),
            ("1E22", 1e22),
        ] {
            assert_eq!(parse_json(text), Ok(Owned::Num(number)), "{text}");
        }
        assert_eq!(parse_json("1e300"), Err(JsonError::TooLong));
        assert_eq!(parse_json("01"), Err(JsonError::Malformed));
        assert_eq!(parse_json("1."), Err(JsonError::Malformed));
        assert_eq!(parse_json("-"), Err(JsonError::Malformed));
        let s = parse_json(r#""a\"b\u00e9\ud83d\ude00""#).expect("a string");
        assert_eq!(s.get(), Value::Str("a\"bé😀"));
        assert_eq!(parse_json("[1]"), Err(JsonError::NotScalar));
        assert_eq!(parse_json("{}"), Err(JsonError::NotScalar));
        assert_eq!(parse_json("nul"), Err(JsonError::Malformed));
        assert_eq!(parse_json("\"open"), Err(JsonError::Malformed));
        assert_eq!(
            parse_json("\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\""),
            Err(JsonError::TooLong)
        );
    }
}
