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
    /// A string longer than [`MAX_STR`].
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
            number if is_json_number(number) => number
                .parse::<f64>()
                .map(Owned::Num)
                .map_err(|_| JsonError::Malformed),
            _ => Err(JsonError::Malformed),
        },
    }
}

fn is_json_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    digits.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
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
