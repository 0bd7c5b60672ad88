//! The crate's one error type: malformed bytecode or scripts, and evaluation failures.

/// What went wrong. Evaluation failures ([`Error::is_evaluation`]) fail the instruction
/// with the error class `invalid_input`; the others mean the code or the script itself is
/// malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytecode is empty or does not start with the supported format version.
    #[error("bytecode format version {found:#04x} is not supported (expected 0x01)")]
    Version {
        /// The first byte found (0 for empty code).
        found: u8,
    },
    /// The bytecode is longer than the device takes.
    #[error("bytecode of {len} bytes is longer than the limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// [`crate::limits::MAX_CODE_LEN`].
        max: usize,
    },
    /// An unknown operation byte.
    #[error("unknown bytecode operation {op:#04x} at byte {at}")]
    UnknownOp {
        /// Offset of the operation.
        at: usize,
        /// The byte.
        op: u8,
    },
    /// The code or script ends inside an operand.
    #[error("truncated at byte {at}")]
    Truncated {
        /// Offset where more bytes were expected.
        at: usize,
    },
    /// A string that is not UTF-8 or longer than [`crate::limits::MAX_STR`].
    #[error("bad string at byte {at} (not UTF-8, or longer than the limit)")]
    BadString {
        /// Offset of the string.
        at: usize,
    },
    /// A field path that is empty, too long, or not dot-separated identifiers.
    #[error(
        "bad field path at byte {at} (expected identifiers joined by dots, at most the path limit)"
    )]
    BadPath {
        /// Offset of the path.
        at: usize,
    },
    /// An operation pops more values than the stack holds.
    #[error("operation at byte {at} needs more operands than the stack holds")]
    Underflow {
        /// Offset of the operation.
        at: usize,
    },
    /// The stack would grow past [`crate::limits::MAX_STACK`].
    #[error("operation at byte {at} grows the stack past its limit")]
    Overflow {
        /// Offset of the operation.
        at: usize,
    },
    /// The code leaves other than exactly one value.
    #[error("the code leaves {depth} values instead of one")]
    NotOneResult {
        /// Values left.
        depth: usize,
    },
    /// A value's tag is unknown (scripts).
    #[error("unknown value tag {tag:#04x} at byte {at}")]
    BadValue {
        /// Offset of the value.
        at: usize,
        /// The tag.
        tag: u8,
    },
    /// A script does not start with its magic, or holds more entries than a device takes.
    #[error("malformed script: {what}")]
    Script {
        /// What is wrong.
        what: &'static str,
    },
    /// A gateway frame or message that is malformed, or does not fit its buffer.
    #[error("bad frame: {what}")]
    Frame {
        /// What is wrong.
        what: &'static str,
    },
    /// Evaluation: the path names no field.
    #[error("no such field")]
    MissingField,
    /// Evaluation: an object or a list where a scalar is needed.
    #[error("the field is an object or a list, not a number, boolean, string or null")]
    NotScalar,
    /// Evaluation: an operation applied to values of the wrong types.
    #[error("operands of the wrong types")]
    TypeMismatch,
    /// Evaluation: a division by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// Evaluation: an arithmetic result that is not a finite number (an overflow to
    /// infinity, infinity minus infinity).
    #[error("the result is not a finite number")]
    NotANumber,
}

impl Error {
    /// Whether this is a failure of evaluation (the code was fine, the values were not).
    pub fn is_evaluation(&self) -> bool {
        matches!(
            self,
            Self::MissingField
                | Self::NotScalar
                | Self::TypeMismatch
                | Self::DivisionByZero
                | Self::NotANumber
        )
    }
}
