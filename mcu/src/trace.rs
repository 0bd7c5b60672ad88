//! The canonical trace of an execution, which the server and the firmware both write so
//! that a conformance vector can require them identical:
//!
//! ```text
//! step <n> <instruction_id> <OPCODE> <attempts> <outcome> <digest>
//! end <status> <digest>
//! refused <reason>
//! ```
//!
//! `n` counts from 1 in execution order (a loop body's instructions once per
//! iteration); `attempts` is how many times the instruction ran; `outcome` is `ok`,
//! `fallback`, `skipped` or `failed:<class>`; `digest` is [`Value::digest`] of the step's
//! value (null when skipped or failed). `status` is `completed`, `aborted` or
//! `failed:<class>`, with the digest of the RETURN value (null if none). A program or an
//! input that is refused gives the single `refused` line.

use core::fmt::{self, Write};

use crate::Value;

/// The IR's error classes, numbered as in the `.proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The instruction did not finish within its timeout.
    Timeout = 1,
    /// The device or service did not answer.
    Unavailable = 2,
    /// Too many requests.
    RateLimit = 3,
    /// The model is unavailable.
    ModelUnavailable = 4,
    /// The input (an expression's values) is wrong.
    InvalidInput = 5,
    /// The output failed its schema.
    InvalidOutput = 6,
    /// A permission is missing.
    Denied = 7,
    /// The resource could not be acquired in time.
    ResourceTimeout = 8,
    /// A postcondition did not hold.
    PostconditionFailed = 9,
    /// Outside the allowed time window.
    OutsideTimeWindow = 10,
    /// A fault of the runtime itself.
    Internal = 11,
    /// A memory, pool or quota ran out.
    ResourceExhausted = 12,
}

impl ErrorClass {
    const ALL: [Self; 12] = [
        Self::Timeout,
        Self::Unavailable,
        Self::RateLimit,
        Self::ModelUnavailable,
        Self::InvalidInput,
        Self::InvalidOutput,
        Self::Denied,
        Self::ResourceTimeout,
        Self::PostconditionFailed,
        Self::OutsideTimeWindow,
        Self::Internal,
        Self::ResourceExhausted,
    ];

    /// The class with this `.proto` number.
    pub fn from_number(number: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as i32 == number)
    }

    /// The class whose trace name is `name` (as the server's journal names it too).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The trace's name: the `.proto` name without its prefix, in lowercase.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::RateLimit => "rate_limit",
            Self::ModelUnavailable => "model_unavailable",
            Self::InvalidInput => "invalid_input",
            Self::InvalidOutput => "invalid_output",
            Self::Denied => "denied",
            Self::ResourceTimeout => "resource_timeout",
            Self::PostconditionFailed => "postcondition_failed",
            Self::OutsideTimeWindow => "outside_time_window",
            Self::Internal => "internal",
            Self::ResourceExhausted => "resource_exhausted",
        }
    }
}

/// The `.proto` name of an opcode number (`EVAL`, `BRANCH`, …).
pub fn opcode_name(number: i32) -> Option<&'static str> {
    const NAMES: [&str; 14] = [
        "LOAD_RESOURCE",
        "CALL_FUNCTION",
        "CALL_SERVICE",
        "CALL_ACTION",
        "CALL_API",
        "LLM_CALL",
        "EVAL",
        "BRANCH",
        "MERGE",
        "LOOP",
        "RETURN",
        "EMIT_EVENT",
        "STORE",
        "LOAD",
    ];
    let index = usize::try_from(number).ok()?.checked_sub(1)?;
    NAMES.get(index).copied()
}

/// How an instruction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It produced its value.
    Ok,
    /// It failed and FALLBACK_VALUE gave the value.
    Fallback,
    /// It failed and SKIP left it out.
    Skipped,
    /// It failed (then RETRY gave up, ABORT ran, or nothing handled it).
    Failed(ErrorClass),
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It reached its end.
    Completed,
    /// ABORT stopped it (after its compensation).
    Aborted,
    /// An instruction's failure stopped it.
    Failed(ErrorClass),
}

/// Why a program or its input was refused before running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It does not decode.
    Malformed,
    /// The signature is missing or does not verify.
    BadSignature,
    /// The key id names no key of the keyring.
    UnknownKey,
    /// The IR version is not supported.
    IrVersion,
    /// It is not an MCU-profile program, or uses what the profile leaves out.
    NotMcu,
    /// A string, an id, a list or the file exceeds the device's capacities.
    Capacity,
    /// It requires a capability the device lacks.
    Capability,
}

impl Refusal {
    /// The trace's name of the reason.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::IrVersion => "ir_version",
            Self::NotMcu => "not_mcu",
            Self::Capacity => "capacity",
            Self::Capability => "capability",
        }
    }
}

impl Outcome {
    /// Writes the trace's word for the outcome (`ok`, `fallback`, `skipped`,
    /// `failed:<class>`).
    pub fn write(self, out: &mut impl Write) -> fmt::Result {
        match self {
            Self::Ok => out.write_str("ok"),
            Self::Fallback => out.write_str("fallback"),
            Self::Skipped => out.write_str("skipped"),
            Self::Failed(class) => write_failed(out, class),
        }
    }
}

impl Status {
    /// Writes the trace's word for the status (`completed`, `aborted`, `failed:<class>`).
    pub fn write(self, out: &mut impl Write) -> fmt::Result {
        match self {
            Self::Completed => out.write_str("completed"),
            Self::Aborted => out.write_str("aborted"),
            Self::Failed(class) => write_failed(out, class),
        }
    }
}

fn write_failed(out: &mut impl Write, class: ErrorClass) -> fmt::Result {
    out.write_str("failed:")?;
    out.write_str(class.name())
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f)
    }
}

/// Writes `n` in decimal, without `core::fmt`'s formatting machinery (which a device
/// would otherwise carry for these few integers).
pub fn write_decimal(out: &mut impl Write, n: u32) -> fmt::Result {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..]
        .iter()
        .try_for_each(|&d| out.write_char(char::from(d)))
}

/// One executed instruction, as a trace line shows it.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Position in execution order, from 1.
    pub n: u32,
    /// The instruction's id.
    pub instruction_id: &'a str,
    /// Its opcode's `.proto` number.
    pub opcode: i32,
    /// How many times it ran.
    pub attempts: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Its value (ignored unless the outcome is `ok` or `fallback`).
    pub value: Value<'a>,
}

/// Writes the `step` line of `step`.
pub fn write_step(out: &mut impl Write, step: &Step<'_>) -> fmt::Result {
    let value = match step.outcome {
        Outcome::Ok | Outcome::Fallback => step.value,
        Outcome::Skipped | Outcome::Failed(_) => Value::Null,
    };
    out.write_str("step ")?;
    write_decimal(out, step.n)?;
    out.write_char(' ')?;
    out.write_str(step.instruction_id)?;
    out.write_char(' ')?;
    out.write_str(opcode_name(step.opcode).unwrap_or("UNKNOWN"))?;
    out.write_char(' ')?;
    write_decimal(out, step.attempts)?;
    out.write_char(' ')?;
    step.outcome.write(out)?;
    write_digest(out, &value)
}

/// Writes the `end` line; `returned` is the RETURN value (null if none).
pub fn write_end(out: &mut impl Write, status: Status, returned: &Value<'_>) -> fmt::Result {
    out.write_str("end ")?;
    status.write(out)?;
    write_digest(out, returned)
}

/// Writes the `refused` line.
pub fn write_refused(out: &mut impl Write, reason: Refusal) -> fmt::Result {
    out.write_str("refused ")?;
    out.write_str(reason.name())?;
    out.write_char('\n')
}

/// Writes ` <digest>` and ends the line.
fn write_digest(out: &mut impl Write, value: &Value<'_>) -> fmt::Result {
    out.write_char(' ')?;
    value.digest().write(out)?;
    out.write_char('\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-size `fmt::Write` sink.
    struct Line {
        buf: [u8; 128],
        len: usize,
    }

    impl Write for Line {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len + s.len();
            self.buf
                .get_mut(self.len..end)
                .ok_or(fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }

    fn line(write: impl FnOnce(&mut Line) -> fmt::Result) -> Line {
        let mut out = Line {
            buf: [0; 128],
            len: 0,
        };
        write(&mut out).expect("fits");
        out
    }

    #[test]
    fn lines_have_the_documented_shape() {
        let step = Step {
            n: 3,
            instruction_id: "close_valve",
            opcode: 4,
            attempts: 2,
            outcome: Outcome::Failed(ErrorClass::Timeout),
            value: Value::Num(1.0),
        };
        let out = line(|l| write_step(l, &step));
        assert_eq!(
            &out.buf[..out.len],
            b"step 3 close_valve CALL_ACTION 2 failed:timeout 6e340b9cffb37a98\n"
        );
        let out = line(|l| write_end(l, Status::Completed, &Value::Null));
        assert_eq!(&out.buf[..out.len], b"end completed 6e340b9cffb37a98\n");
        let out = line(|l| write_refused(l, Refusal::BadSignature));
        assert_eq!(&out.buf[..out.len], b"refused bad_signature\n");
    }

    #[test]
    fn decimals_are_written_without_padding() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (1_000, "1000"),
            (u32::MAX, "4294967295"),
        ] {
            let out = line(|l| write_decimal(l, n));
            assert_eq!(&out.buf[..out.len], text.as_bytes());
        }
    }

    #[test]
    fn names_follow_the_proto() {
        assert_eq!(opcode_name(7), Some("EVAL"));
        assert_eq!(opcode_name(14), Some("LOAD"));
        assert_eq!(opcode_name(0), None);
        assert_eq!(opcode_name(15), None);
        assert_eq!(
            ErrorClass::from_number(12).map(ErrorClass::name),
            Some("resource_exhausted")
        );
        assert_eq!(ErrorClass::from_number(13), None);
    }
}
