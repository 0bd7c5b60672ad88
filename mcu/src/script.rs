//! The simulated world of a conformance vector, in a compact binary form both the server
//! and the firmware read without a heap: the event that starts the execution, and the
//! hardware's answers to its CALL_ACTION / LOAD_RESOURCE calls, in call order.
//!
//! ```text
//! "EFS1"
//! u8 field count, then per field: u8 length + dotted path, value (canonical bytes)
//! u8 answer count, then per answer: u8 length + capability id, u8 length + action name,
//!     u32be delay in ms, then 00 + value (an answer) or 01 + error class number (a failure)
//! ```
//!
//! A call whose capability and action do not match the next answer, or with no answer
//! left, fails `unavailable`. An LLM_CALL takes its answer from the same list: capability
//! [`LLM`], action the LLM_CALL's model (the answer is what the node would send back).

use crate::Error;
use crate::code::is_path;
use crate::limits::{MAX_EVENT_FIELDS, MAX_HW_STEPS, MAX_ID};
use crate::trace::ErrorClass;
use crate::value::{Value, take};

/// The first bytes of every script.
pub const MAGIC: &[u8; 4] = b"EFS1";

/// The capability of the answers to LLM_CALLs (their action is the call's model).
pub const LLM: &str = "llm";

/// One answer of the simulated hardware.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer<'a> {
    /// The capability called (`gpio`, `adc`, …).
    pub capability: &'a str,
    /// The action or read called.
    pub action: &'a str,
    /// How long the hardware takes to answer.
    pub delay_ms: u32,
    /// What it answers.
    pub result: Result<Value<'a>, ErrorClass>,
}

/// A parsed (and fully validated) script.
#[derive(Debug, Clone, Copy)]
pub struct Script<'a> {
    fields: &'a [u8],
    field_count: u8,
    answers: &'a [u8],
    answer_count: u8,
}

impl<'a> Script<'a> {
    /// Parses `bytes`, checking every entry and the capacities.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.get(..4) != Some(MAGIC) {
            return Err(Error::Script {
                what: "it does not start with EFS1",
            });
        }
        let field_count = *bytes.get(4).ok_or(Error::Truncated { at: 4 })?;
        if usize::from(field_count) > MAX_EVENT_FIELDS {
            return Err(Error::Script {
                what: "more event fields than a device holds",
            });
        }
        let mut at = 5;
        for index in 0..field_count {
            let (path, _, next) = field(bytes, at)?;
            let earlier = Fields {
                bytes,
                at: 5,
                left: index,
            };
            if earlier.into_iter().any(|(p, _)| p == path) {
                return Err(Error::Script {
                    what: "an event field appears twice",
                });
            }
            at = next;
        }
        let fields = &bytes[5..at];
        let answer_count = *bytes.get(at).ok_or(Error::Truncated { at })?;
        if usize::from(answer_count) > MAX_HW_STEPS {
            return Err(Error::Script {
                what: "more hardware answers than a script holds",
            });
        }
        let answers_start = at + 1;
        at = answers_start;
        for _ in 0..answer_count {
            at = answer(bytes, at)?.1;
        }
        if at != bytes.len() {
            return Err(Error::Script {
                what: "bytes after the last answer",
            });
        }
        Ok(Self {
            fields,
            field_count,
            answers: &bytes[answers_start..],
            answer_count,
        })
    }

    /// The event's fields, as `(dotted path, value)`.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + 'a {
        Fields {
            bytes: self.fields,
            at: 0,
            left: self.field_count,
        }
    }

    /// The event's field at `path` (without the leading `event.`).
    pub fn event_field(&self, path: &str) -> Option<Value<'a>> {
        self.fields().find(|(p, _)| *p == path).map(|(_, v)| v)
    }

    /// The hardware's answers, in call order.
    pub fn answers(&self) -> impl Iterator<Item = Answer<'a>> + 'a {
        let (bytes, mut at, mut left) = (self.answers, 0, self.answer_count);
        core::iter::from_fn(move || {
            left = left.checked_sub(1)?;
            // Validated by `parse`: decoding cannot fail here.
            let (answer, next) = answer(bytes, at).ok()?;
            at = next;
            Some(answer)
        })
    }
}

struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    left: u8,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let (path, value, next) = field(self.bytes, self.at).ok()?;
        self.at = next;
        Some((path, value))
    }
}

/// A length-prefixed string of at most `max` bytes at `at` that `ok` accepts.
fn short(
    bytes: &[u8],
    at: usize,
    max: usize,
    ok: impl Fn(&str) -> bool,
) -> Result<(&str, usize), Error> {
    let len = usize::from(*bytes.get(at).ok_or(Error::Truncated { at })?);
    let raw = bytes
        .get(at + 1..at + 1 + len)
        .ok_or(Error::Truncated { at: at + 1 })?;
    match core::str::from_utf8(raw) {
        Ok(text) if len <= max && ok(text) => Ok((text, at + 1 + len)),
        _ => Err(Error::BadPath { at }),
    }
}

fn field(bytes: &[u8], at: usize) -> Result<(&str, Value<'_>, usize), Error> {
    let (path, at) = short(bytes, at, usize::MAX, is_path)?;
    let (value, at) = Value::decode(bytes, at)?;
    Ok((path, value, at))
}

fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn answer(bytes: &[u8], at: usize) -> Result<(Answer<'_>, usize), Error> {
    let (capability, at) = short(bytes, at, MAX_ID, is_id)?;
    let (action, at) = short(bytes, at, MAX_ID, is_id)?;
    let delay_ms = u32::from_be_bytes(take::<4>(bytes, at)?);
    let at = at + 4;
    let (result, next) = match bytes.get(at) {
        Some(0) => {
            let (value, next) = Value::decode(bytes, at + 1)?;
            (Ok(value), next)
        }
        Some(1) => {
            let number = *bytes.get(at + 1).ok_or(Error::Truncated { at: at + 1 })?;
            let class = ErrorClass::from_number(i32::from(number)).ok_or(Error::Script {
                what: "an answer's error class is unknown",
            })?;
            (Err(class), at + 2)
        }
        Some(_) => {
            return Err(Error::Script {
                what: "an answer is neither a value (00) nor a failure (01)",
            });
        }
        None => return Err(Error::Truncated { at }),
    };
    let answer = Answer {
        capability,
        action,
        delay_ms,
        result,
    };
    Ok((answer, next))
}

/// Encodes a script (for the vector generator); the result parses with [`Script::parse`].
#[cfg(feature = "alloc")]
pub fn encode(
    fields: &[(&str, Value<'_>)],
    answers: &[Answer<'_>],
) -> Result<alloc::vec::Vec<u8>, Error> {
    let mut out = alloc::vec::Vec::from(&MAGIC[..]);
    let count = |n: usize| {
        u8::try_from(n).map_err(|_| Error::Script {
            what: "too many entries",
        })
    };
    let short = |out: &mut alloc::vec::Vec<u8>, text: &str| -> Result<(), Error> {
        out.push(count(text.len())?);
        out.extend_from_slice(text.as_bytes());
        Ok(())
    };
    out.push(count(fields.len())?);
    for (path, value) in fields {
        short(&mut out, path)?;
        value.canonical(|bytes| out.extend_from_slice(bytes));
    }
    out.push(count(answers.len())?);
    for answer in answers {
        short(&mut out, answer.capability)?;
        short(&mut out, answer.action)?;
        out.extend_from_slice(&answer.delay_ms.to_be_bytes());
        match answer.result {
            Ok(value) => {
                out.push(0);
                value.canonical(|bytes| out.extend_from_slice(bytes));
            }
            Err(class) => out.extend_from_slice(&[1, class as u8]),
        }
    }
    Script::parse(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &[u8] = &[
        b'E', b'F', b'S', b'1', //
        2,    // fields
        5, b'l', b'e', b'v', b'e', b'l', 0x02, 0x40, 0x54, 0xa0, 0, 0, 0, 0, 0, // 82.5
        4, b'm', b'o', b'd', b'e', 0x03, 0, 4, b'a', b'u', b't', b'o', //
        2,    // answers
        3, b'a', b'd', b'c', 4, b'r', b'e', b'a', b'd', 0, 0, 0, 5, 0, 0x01, 1, //
        4, b'g', b'p', b'i', b'o', 3, b's', b'e', b't', 0, 0, 0, 0, 1, 1, // fails: timeout
    ];

    #[test]
    fn a_script_reads_back_its_event_and_answers() {
        let script = Script::parse(SCRIPT).expect("parses");
        assert_eq!(script.event_field("level"), Some(Value::Num(82.5)));
        assert_eq!(script.event_field("mode"), Some(Value::Str("auto")));
        assert_eq!(script.event_field("other"), None);
        let answers: [Option<Answer<'_>>; 3] = {
            let mut it = script.answers();
            [it.next(), it.next(), it.next()]
        };
        assert_eq!(
            answers,
            [
                Some(Answer {
                    capability: "adc",
                    action: "read",
                    delay_ms: 5,
                    result: Ok(Value::Bool(true)),
                }),
                Some(Answer {
                    capability: "gpio",
                    action: "set",
                    delay_ms: 0,
                    result: Err(ErrorClass::Timeout),
                }),
                None,
            ]
        );
    }

    #[test]
    fn malformed_scripts_are_refused() {
        assert!(matches!(Script::parse(b"EFS2"), Err(Error::Script { .. })));
        assert_eq!(
            Script::parse(&SCRIPT[..SCRIPT.len() - 1]).err(),
            Some(Error::Truncated {
                at: SCRIPT.len() - 1
            })
        );
        let mut trailing = [0u8; 80];
        trailing[..SCRIPT.len()].copy_from_slice(SCRIPT);
        assert!(matches!(
            Script::parse(&trailing[..SCRIPT.len() + 1]),
            Err(Error::Script { .. })
        ));
        let mut twice = [0u8; 64];
        let first = &SCRIPT[..20];
        twice[..20].copy_from_slice(first);
        twice[4] = 2;
        twice[20..35].copy_from_slice(&SCRIPT[5..20]);
        twice[35] = 0;
        assert!(matches!(
            Script::parse(&twice[..36]),
            Err(Error::Script { .. })
        ));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn encode_writes_what_parse_reads() {
        let answers = [
            Answer {
                capability: "adc",
                action: "read",
                delay_ms: 5,
                result: Ok(Value::Bool(true)),
            },
            Answer {
                capability: "gpio",
                action: "set",
                delay_ms: 0,
                result: Err(ErrorClass::Timeout),
            },
        ];
        let bytes = encode(
            &[("level", Value::Num(82.5)), ("mode", Value::Str("auto"))],
            &answers,
        )
        .expect("encodes");
        assert_eq!(bytes, SCRIPT);
    }
}
