//! The expression bytecode of MCU programs: its format, its validation and its
//! evaluator (no heap, no jumps: evaluation is linear in the code's length), and with the
//! `alloc` feature the `Builder` the compiler lowers CEL with.
//!
//! Format: the version byte `0x01`, then operations. Pushes: `01` null, `02` true,
//! `03` false, `04` + `f64` little-endian number, `05` + u8 length + UTF-8 string, `06` +
//! u8 length + dotted path (a field read through [`Env`]). Unary: `10` neg, `11` not.
//! Binary (pops `b`, then `a`, pushes `a ∘ b`): `12` add, `13` sub, `14` mul, `15` div,
//! `16` eq, `17` ne, `18` lt, `19` le, `1a` gt, `1b` ge, `1c` and, `1d` or. `1e` select
//! (pops else, then, condition).

use core::cmp::Ordering;

use crate::Error;
use crate::limits::{MAX_CODE_LEN, MAX_PATH, MAX_STACK};
use crate::value::{Value, short_str, take};

/// The bytecode format version, the first byte of every expression.
pub const VERSION: u8 = 0x01;

const NULL: u8 = 0x01;
const TRUE: u8 = 0x02;
const FALSE: u8 = 0x03;
const NUM: u8 = 0x04;
const STR: u8 = 0x05;
const GET: u8 = 0x06;
const SELECT: u8 = 0x1e;

/// The operations on one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// Arithmetic negation of a number.
    Neg = 0x10,
    /// Logical negation of a boolean.
    Not = 0x11,
}

/// The operations on two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `a + b` on numbers.
    Add = 0x12,
    /// `a - b` on numbers.
    Sub = 0x13,
    /// `a * b` on numbers.
    Mul = 0x14,
    /// `a / b` on numbers; dividing by zero is an error.
    Div = 0x15,
    /// Equality of any two values (different types are not equal).
    Eq = 0x16,
    /// Inequality of any two values.
    Ne = 0x17,
    /// `a < b` on two numbers or two strings (bytewise).
    Lt = 0x18,
    /// `a <= b`.
    Le = 0x19,
    /// `a > b`.
    Gt = 0x1a,
    /// `a >= b`.
    Ge = 0x1b,
    /// Logical and; `false && error` is `false`, as in CEL.
    And = 0x1c,
    /// Logical or; `true || error` is `true`, as in CEL.
    Or = 0x1d,
}

impl Unary {
    fn from_byte(op: u8) -> Option<Self> {
        [Self::Neg, Self::Not].into_iter().find(|u| *u as u8 == op)
    }
}

impl Binary {
    const ALL: [Self; 12] = [
        Self::Add,
        Self::Sub,
        Self::Mul,
        Self::Div,
        Self::Eq,
        Self::Ne,
        Self::Lt,
        Self::Le,
        Self::Gt,
        Self::Ge,
        Self::And,
        Self::Or,
    ];

    fn from_byte(op: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|b| *b as u8 == op)
    }
}

/// Where a running expression reads fields: the event, earlier instructions' outputs,
/// a loop's item.
pub trait Env {
    /// The value at `path` (identifiers joined by dots; the first names a variable):
    /// [`Error::MissingField`] if there is none, [`Error::NotScalar`] for an object or a
    /// list.
    fn get(&self, path: &str) -> Result<Value<'_>, Error>;
}

/// One decoded operation.
enum Op<'a> {
    Push(Value<'a>),
    Get(&'a str),
    Unary(Unary),
    Binary(Binary),
    Select,
}

impl Op<'_> {
    /// Values popped, values pushed.
    fn arity(&self) -> (usize, usize) {
        match self {
            Op::Push(_) | Op::Get(_) => (0, 1),
            Op::Unary(_) => (1, 1),
            Op::Binary(_) => (2, 1),
            Op::Select => (3, 1),
        }
    }
}

/// Decodes the operation at `at`; returns it and the offset of the next one.
fn decode(code: &[u8], at: usize) -> Result<(Op<'_>, usize), Error> {
    let op = code[at];
    let next = at + 1;
    Ok(match op {
        NULL => (Op::Push(Value::Null), next),
        TRUE => (Op::Push(Value::Bool(true)), next),
        FALSE => (Op::Push(Value::Bool(false)), next),
        NUM => {
            let raw = take::<8>(code, next)?;
            (Op::Push(Value::Num(f64::from_le_bytes(raw))), next + 8)
        }
        STR => {
            let (raw, end) = short(code, next)?;
            (Op::Push(Value::Str(short_str(raw, next)?)), end)
        }
        GET => {
            let (raw, end) = short(code, next)?;
            let path = core::str::from_utf8(raw).map_err(|_| Error::BadPath { at: next })?;
            if !is_path(path) {
                return Err(Error::BadPath { at: next });
            }
            (Op::Get(path), end)
        }
        SELECT => (Op::Select, next),
        op => match (Unary::from_byte(op), Binary::from_byte(op)) {
            (Some(u), _) => (Op::Unary(u), next),
            (_, Some(b)) => (Op::Binary(b), next),
            _ => return Err(Error::UnknownOp { at, op }),
        },
    })
}

/// The u8-length-prefixed bytes at `at`, and the offset after them.
fn short(code: &[u8], at: usize) -> Result<(&[u8], usize), Error> {
    let len = usize::from(*code.get(at).ok_or(Error::Truncated { at })?);
    let raw = code
        .get(at + 1..at + 1 + len)
        .ok_or(Error::Truncated { at: at + 1 })?;
    Ok((raw, at + 1 + len))
}

/// Whether `path` is identifiers (`[A-Za-z_][A-Za-z0-9_]*`) joined by dots, at most
/// [`MAX_PATH`] bytes.
pub fn is_path(path: &str) -> bool {
    path.len() <= MAX_PATH
        && path.split('.').all(|segment| {
            let mut chars = segment.bytes();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        })
}

/// Walks the operations of `code`, checking the version, the length and the stack's
/// depth; `each` sees every operation with its offset.
fn walk<'a>(
    code: &'a [u8],
    mut each: impl FnMut(Op<'a>, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    if code.len() > MAX_CODE_LEN {
        return Err(Error::TooLong {
            len: code.len(),
            max: MAX_CODE_LEN,
        });
    }
    match code.first() {
        Some(&VERSION) => {}
        found => {
            return Err(Error::Version {
                found: found.copied().unwrap_or(0),
            });
        }
    }
    let mut depth = 0usize;
    let mut at = 1;
    while at < code.len() {
        let (op, next) = decode(code, at)?;
        let (pops, pushes) = op.arity();
        depth = depth.checked_sub(pops).ok_or(Error::Underflow { at })? + pushes;
        if depth > MAX_STACK {
            return Err(Error::Overflow { at });
        }
        each(op, at)?;
        at = next;
    }
    if depth == 1 {
        Ok(())
    } else {
        Err(Error::NotOneResult { depth })
    }
}

/// Checks that `code` is well-formed bytecode leaving exactly one value.
pub fn validate(code: &[u8]) -> Result<(), Error> {
    walk(code, |_, _| Ok(()))
}

/// Evaluates `code` against `env`. A malformed code is refused before anything runs; an
/// evaluation failure is an [`Error`] for which [`Error::is_evaluation`] holds.
pub fn eval<'a, E: Env>(code: &'a [u8], env: &'a E) -> Result<Value<'a>, Error> {
    validate(code)?;
    let mut stack: [Result<Value<'a>, Error>; MAX_STACK] = [Ok(Value::Null); MAX_STACK];
    let mut depth = 0usize;
    walk(code, |op, at| {
        // `walk` has checked the depth before calling: these cannot underflow.
        let (pops, _) = op.arity();
        let base = depth.checked_sub(pops).ok_or(Error::Underflow { at })?;
        let args = &stack[base..depth];
        let result = match op {
            Op::Push(value) => Ok(value),
            Op::Get(path) => env.get(path),
            Op::Unary(u) => unary(u, args[0]),
            Op::Binary(b) => binary(b, args[0], args[1]),
            Op::Select => select(args[0], args[1], args[2]),
        };
        *stack.get_mut(base).ok_or(Error::Overflow { at })? = result;
        depth = base + 1;
        Ok(())
    })?;
    stack[0]
}

type Slot<'a> = Result<Value<'a>, Error>;

fn unary(op: Unary, a: Slot<'_>) -> Slot<'_> {
    match (op, a?) {
        (Unary::Neg, Value::Num(n)) => Ok(Value::Num(-n)),
        (Unary::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
        _ => Err(Error::TypeMismatch),
    }
}

fn binary<'a>(op: Binary, a: Slot<'a>, b: Slot<'a>) -> Slot<'a> {
    match op {
        Binary::And => logic(a, b, false),
        Binary::Or => logic(a, b, true),
        Binary::Eq => Ok(Value::Bool(equal(a?, b?))),
        Binary::Ne => Ok(Value::Bool(!equal(a?, b?))),
        Binary::Lt | Binary::Le | Binary::Gt | Binary::Ge => {
            let ordering = match (a?, b?) {
                (Value::Num(x), Value::Num(y)) => x.partial_cmp(&y),
                (Value::Str(x), Value::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
                _ => return Err(Error::TypeMismatch),
            };
            let holds = ordering.is_some_and(|o| match op {
                Binary::Lt => o == Ordering::Less,
                Binary::Le => o != Ordering::Greater,
                Binary::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            });
            Ok(Value::Bool(holds))
        }
        Binary::Add | Binary::Sub | Binary::Mul | Binary::Div => {
            let (Value::Num(x), Value::Num(y)) = (a?, b?) else {
                return Err(Error::TypeMismatch);
            };
            let result = match op {
                Binary::Add => x + y,
                Binary::Sub => x - y,
                Binary::Mul => x * y,
                _ if y == 0.0 => return Err(Error::DivisionByZero),
                _ => x / y,
            };
            // NaN bits differ between processors, and the server journals values as JSON,
            // which has no infinities: never let either become a value.
            if !result.is_finite() {
                return Err(Error::NotANumber);
            }
            Ok(Value::Num(result))
        }
    }
}

/// `&&` (`absorbing` = false) and `||` (`absorbing` = true), CEL's way: the absorbing
/// value on either side wins over an error on the other.
fn logic<'a>(a: Slot<'a>, b: Slot<'a>, absorbing: bool) -> Slot<'a> {
    if a == Ok(Value::Bool(absorbing)) || b == Ok(Value::Bool(absorbing)) {
        return Ok(Value::Bool(absorbing));
    }
    match (a?, b?) {
        (Value::Bool(_), Value::Bool(_)) => Ok(Value::Bool(!absorbing)),
        _ => Err(Error::TypeMismatch),
    }
}

fn equal(a: Value<'_>, b: Value<'_>) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Num(x), Value::Num(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        _ => false,
    }
}

fn select<'a>(condition: Slot<'a>, then: Slot<'a>, otherwise: Slot<'a>) -> Slot<'a> {
    match condition? {
        Value::Bool(true) => then,
        Value::Bool(false) => otherwise,
        _ => Err(Error::TypeMismatch),
    }
}

#[cfg(feature = "alloc")]
pub use builder::Builder;

#[cfg(feature = "alloc")]
mod builder {
    use alloc::vec::Vec;

    use super::{Binary, FALSE, GET, NULL, NUM, SELECT, STR, TRUE, Unary, VERSION, is_path};
    use crate::Error;
    use crate::limits::MAX_STR;

    /// Emits bytecode in evaluation order (operands before their operation).
    #[derive(Debug, Clone)]
    pub struct Builder {
        code: Vec<u8>,
    }

    impl Default for Builder {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Builder {
        /// An empty expression (the version byte only).
        pub fn new() -> Self {
            Self {
                code: alloc::vec![VERSION],
            }
        }

        /// Pushes `null`.
        pub fn null(&mut self) {
            self.code.push(NULL);
        }

        /// Pushes a boolean.
        pub fn boolean(&mut self, value: bool) {
            self.code.push(if value { TRUE } else { FALSE });
        }

        /// Pushes a number.
        pub fn number(&mut self, value: f64) {
            self.code.push(NUM);
            self.code.extend_from_slice(&value.to_le_bytes());
        }

        /// Pushes a string of at most [`MAX_STR`] bytes.
        pub fn string(&mut self, value: &str) -> Result<(), Error> {
            if value.len() > MAX_STR {
                return Err(Error::BadString {
                    at: self.code.len(),
                });
            }
            self.short(STR, value);
            Ok(())
        }

        /// Pushes the field at `path` (identifiers joined by dots).
        pub fn get(&mut self, path: &str) -> Result<(), Error> {
            if !is_path(path) {
                return Err(Error::BadPath {
                    at: self.code.len(),
                });
            }
            self.short(GET, path);
            Ok(())
        }

        /// Applies a unary operation to the top value.
        pub fn unary(&mut self, op: Unary) {
            self.code.push(op as u8);
        }

        /// Applies a binary operation to the two top values.
        pub fn binary(&mut self, op: Binary) {
            self.code.push(op as u8);
        }

        /// `condition ? then : otherwise`, the three pushed in that order.
        pub fn select(&mut self) {
            self.code.push(SELECT);
        }

        /// The code, once it validates (one result, within the length and stack limits).
        pub fn finish(self) -> Result<Vec<u8>, Error> {
            super::validate(&self.code)?;
            Ok(self.code)
        }

        fn short(&mut self, op: u8, text: &str) {
            self.code.push(op);
            // Both callers bound the length far below 256.
            self.code.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
            self.code.extend_from_slice(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment with a few numeric fields, a string, and an object.
    struct Fields;

    impl Env for Fields {
        fn get(&self, path: &str) -> Result<Value<'_>, Error> {
            match path {
                "event.level" => Ok(Value::Num(82.5)),
                "event.mode" => Ok(Value::Str("auto")),
                "event.tank" => Err(Error::NotScalar),
                _ => Err(Error::MissingField),
            }
        }
    }

    /// Hand-assembled code: version byte + `ops`.
    fn code(ops: &[&[u8]]) -> ([u8; 128], usize) {
        let mut out = [0u8; 128];
        out[0] = VERSION;
        let mut len = 1;
        for op in ops {
            out[len..len + op.len()].copy_from_slice(op);
            len += op.len();
        }
        (out, len)
    }

    fn num(n: f64) -> [u8; 9] {
        let mut out = [NUM; 9];
        out[1..].copy_from_slice(&n.to_le_bytes());
        out
    }

    fn get(path: &str) -> ([u8; 40], usize) {
        let mut out = [0u8; 40];
        out[0] = GET;
        out[1] = path.len() as u8;
        out[2..2 + path.len()].copy_from_slice(path.as_bytes());
        (out, 2 + path.len())
    }

    fn run(ops: &[&[u8]]) -> Result<f64, Error> {
        let (buf, len) = code(ops);
        match eval(&buf[..len], &Fields)? {
            Value::Num(n) => Ok(n),
            Value::Bool(b) => Ok(if b { 1.0 } else { 0.0 }),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn arithmetic_and_comparisons_on_fields() {
        let (level, n) = get("event.level");
        // event.level * 2 - 5
        assert_eq!(
            run(&[&level[..n], &num(2.0), &[0x14], &num(5.0), &[0x13]]),
            Ok(160.0)
        );
        // event.level > 80
        assert_eq!(run(&[&level[..n], &num(80.0), &[0x1a]]), Ok(1.0));
        // event.mode == "auto"
        let (mode, m) = get("event.mode");
        assert_eq!(run(&[&mode[..m], &[STR, 4], b"auto", &[0x16]]), Ok(1.0));
        // "auto" < "manual" (bytewise)
        assert_eq!(
            run(&[&[STR, 4], b"auto", &[STR, 6], b"manual", &[0x18]]),
            Ok(1.0)
        );
    }

    #[test]
    fn errors_are_values_until_an_absorbing_operand_meets_them() {
        let (missing, n) = get("event.nope");
        // false && missing = false; missing && false = false
        assert_eq!(run(&[&[FALSE], &missing[..n], &[0x1c]]), Ok(0.0));
        assert_eq!(run(&[&missing[..n], &[FALSE], &[0x1c]]), Ok(0.0));
        // true && missing = missing; true || missing = true
        assert_eq!(
            run(&[&[TRUE], &missing[..n], &[0x1c]]),
            Err(Error::MissingField)
        );
        assert_eq!(run(&[&[TRUE], &missing[..n], &[0x1d]]), Ok(1.0));
        // a select ignores the error on the side it does not take
        assert_eq!(
            run(&[&[TRUE], &num(1.0), &missing[..n], &[SELECT]]),
            Ok(1.0)
        );
        let (tank, t) = get("event.tank");
        assert_eq!(
            run(&[&tank[..t], &num(1.0), &[0x12]]),
            Err(Error::NotScalar)
        );
    }

    #[test]
    fn type_errors_and_arithmetic_failures() {
        assert_eq!(
            run(&[&num(1.0), &num(0.0), &[0x15]]),
            Err(Error::DivisionByZero)
        );
        assert_eq!(
            run(&[&num(f64::INFINITY), &num(f64::INFINITY), &[0x13]]),
            Err(Error::NotANumber)
        );
        assert_eq!(
            run(&[&[TRUE], &num(1.0), &[0x12]]),
            Err(Error::TypeMismatch)
        );
        assert_eq!(
            run(&[&[STR, 1], b"a", &num(1.0), &[0x18]]),
            Err(Error::TypeMismatch)
        );
        assert_eq!(run(&[&num(1.0), &[0x11]]), Err(Error::TypeMismatch));
        assert_eq!(run(&[&num(1.0), &[STR, 1], b"1", &[0x16]]), Ok(0.0));
        assert_eq!(run(&[&[NULL], &[NULL], &[0x16]]), Ok(1.0));
    }

    #[test]
    fn malformed_code_is_refused_before_it_runs() {
        assert_eq!(validate(&[]), Err(Error::Version { found: 0 }));
        assert_eq!(validate(&[2, NULL]), Err(Error::Version { found: 2 }));
        assert_eq!(validate(&[VERSION]), Err(Error::NotOneResult { depth: 0 }));
        assert_eq!(
            validate(&[VERSION, NULL, NULL]),
            Err(Error::NotOneResult { depth: 2 })
        );
        assert_eq!(validate(&[VERSION, 0x12]), Err(Error::Underflow { at: 1 }));
        assert_eq!(
            validate(&[VERSION, 0x7f]),
            Err(Error::UnknownOp { at: 1, op: 0x7f })
        );
        assert_eq!(
            validate(&[VERSION, NUM, 0, 0]),
            Err(Error::Truncated { at: 2 })
        );
        assert_eq!(
            validate(&[VERSION, STR, 3, b'a']),
            Err(Error::Truncated { at: 3 })
        );
        assert_eq!(
            validate(&[VERSION, GET, 2, b'1', b'a']),
            Err(Error::BadPath { at: 2 })
        );
        assert_eq!(
            validate(&[VERSION, GET, 2, b'a', b'.']),
            Err(Error::BadPath { at: 2 })
        );
        assert_eq!(
            validate(&[VERSION, STR, 2, 0xff, 0xfe]),
            Err(Error::BadString { at: 2 })
        );
        let deep = [NULL; MAX_STACK + 2];
        let mut deep = deep;
        deep[0] = VERSION;
        assert_eq!(validate(&deep), Err(Error::Overflow { at: MAX_STACK + 1 }));
        let long = [NULL; MAX_CODE_LEN + 1];
        assert_eq!(
            validate(&long),
            Err(Error::TooLong {
                len: MAX_CODE_LEN + 1,
                max: MAX_CODE_LEN
            })
        );
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn the_builder_emits_what_the_evaluator_runs() {
        // event.mode == "auto" ? event.level / 2 : -1
        let mut b = Builder::new();
        b.get("event.mode").expect("path");
        b.string("auto").expect("short");
        b.binary(Binary::Eq);
        b.get("event.level").expect("path");
        b.number(2.0);
        b.binary(Binary::Div);
        b.number(1.0);
        b.unary(Unary::Neg);
        b.select();
        let code = b.finish().expect("valid");
        assert_eq!(eval(&code, &Fields), Ok(Value::Num(41.25)));
        assert!(Builder::new().get("event..x").is_err());
        assert!(
            Builder::new()
                .string(&"x".repeat(crate::limits::MAX_STR + 1))
                .is_err()
        );
        assert!(matches!(
            Builder::new().finish(),
            Err(Error::NotOneResult { depth: 0 })
        ));
    }

    #[test]
    fn paths_are_dotted_identifiers() {
        assert!(is_path("event.tank_1.level"));
        assert!(is_path("_x"));
        assert!(!is_path(""));
        assert!(!is_path("event..level"));
        assert!(!is_path("event.1st"));
        assert!(!is_path("event.lev-el"));
    }
}
