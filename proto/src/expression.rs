//! Limits on the text of the CEL expressions a program carries, checked before any parser
//! sees it. The CEL parser recurses on nesting and its work grows exponentially with nested
//! calls (measured with cel-interpreter 0.10 on the dev VM: 400 nested parentheses or 200
//! nested lists overflow a 2 MiB thread stack and abort the process; 20 nested calls take
//! 0.2 s, 30 more than 20 s; 4,000 chained `+` overflow at evaluation), so the compiler, the
//! node at load and deploy, and the executor refuse an expression past these limits with an
//! error that names the limit.

/// Longest expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest nesting of parentheses, brackets and braces (calls included).
pub const MAX_EXPRESSION_NESTING: usize = 16;
/// Most operator characters (`+ - * / % ! < > = & | ? :` and `.`) in one expression.
pub const MAX_EXPRESSION_OPERATORS: usize = 512;

/// An expression past one of the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the expression {what} (at byte {offset}); the limit is {limit}")]
pub struct TooComplex {
    /// Which limit, e.g. `nests brackets deeper than 16 levels`.
    pub what: String,
    /// The limit.
    pub limit: usize,
    /// Byte offset in the expression where it was passed.
    pub offset: usize,
}

/// Checks `text` against the limits above: its length, its bracket nesting and its number
/// of operators, outside string literals (quotes `'` and `"`, with `\` escapes; triple
/// quotes count as quotes, which only makes the count of what is inside conservative).
pub fn check(text: &str) -> Result<(), TooComplex> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(TooComplex {
            what: format!("is {} bytes long", text.len()),
            limit: MAX_EXPRESSION_BYTES,
            offset: MAX_EXPRESSION_BYTES,
        });
    }
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for (offset, byte) in text.bytes().enumerate() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == q {
                quote = None;
            }
            continue;
        }
        match byte {
            b'\'' | b'"' => quote = Some(byte),
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_EXPRESSION_NESTING {
                    return Err(TooComplex {
                        what: format!("nests brackets deeper than {MAX_EXPRESSION_NESTING} levels"),
                        limit: MAX_EXPRESSION_NESTING,
                        offset,
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'!' | b'<' | b'>' | b'=' | b'&' | b'|' | b'?'
            | b':' | b'.' => {
                operators += 1;
                if operators > MAX_EXPRESSION_OPERATORS {
                    return Err(TooComplex {
                        what: format!("has more than {MAX_EXPRESSION_OPERATORS} operators"),
                        limit: MAX_EXPRESSION_OPERATORS,
                        offset,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_expressions_pass() {
        for ok in [
            "reading.value > 80.0 && event.site == 'a(b[c'",
            "size(items) - 1",
            "{'a': [1, 2, {'b': (3)}]}",
            &format!("{}1{}", "(".repeat(16), ")".repeat(16)),
            &vec!["1"; 400].join("+"),
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn deep_long_or_busy_expressions_are_refused_naming_the_limit() {
        let deep = format!("{}1{}", "(".repeat(300), ")".repeat(300));
        let e = check(&deep).unwrap_err();
        assert_eq!((e.limit, e.offset), (MAX_EXPRESSION_NESTING, 16));
        assert!(e.to_string().contains("deeper than 16"), "{e}");
        let calls = format!("{}1{}", "int(".repeat(30), ")".repeat(30));
        assert!(check(&calls).is_err());
        let long = "x".repeat(MAX_EXPRESSION_BYTES + 1);
        assert!(check(&long).unwrap_err().to_string().contains("bytes long"));
        let busy = vec!["1"; 600].join("+");
        assert!(check(&busy).unwrap_err().to_string().contains("operators"));
        // Brackets inside strings do not count; an escaped quote does not end the string.
        let quoted = format!("'{}\\' {}'", "(".repeat(100), "[".repeat(100));
        assert_eq!(check(&quoted), Ok(()));
    }
}
