//! CEL expressions in the rule: each one is parsed with `cel-interpreter` at compile time, and a
//! parse error is reported at the YAML line and column of the offending character.

use std::cell::Cell;
use std::panic::UnwindSafe;
use std::sync::Once;

use marked_yaml::Span;

use crate::ast::Text;
use crate::error::{Error, Position, Result, Source};

/// Parses `expr` as CEL; `what` names the field in messages (e.g. "BRANCH `decide` condition").
pub(crate) fn check(source: &Source<'_>, expr: &Text, what: &str) -> Result<()> {
    if expr.trim().is_empty() {
        return Err(Error::Expression {
            at: source.at(expr.span()),
            message: format!("{what} is empty; expected a CEL expression"),
        });
    }
    // The parser recurses on nesting (deep input overflows the stack and aborts the
    // process) and slows down exponentially with nested calls: bound the text first.
    if let Err(e) = eyeflow_ir::expression::check(expr.as_str()) {
        return Err(Error::Expression {
            at: source.at(expr.span()),
            message: format!(
                "{what}: {e}; expected a simpler expression (split it over several instructions)"
            ),
        });
    }
    // The generated CEL parser panics on some malformed input instead of returning an error:
    // contain it so a bad rule is a compile error, not a crash or a panic message.
    let parsed = quietly(|| {
        cel_interpreter::Program::compile(expr.as_str())
            .map(drop)
            .map_err(|errors| {
                errors
                    .errors
                    .first()
                    .map(|first| (first.pos, first.msg.clone()))
            })
    });
    let (at, problem) = match parsed {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(Some((pos, msg)))) => (locate(source, expr.span(), pos), msg),
        Ok(Err(None)) => (source.at(expr.span()), "it does not parse".to_owned()),
        Err(_) => (
            source.at(expr.span()),
            "the CEL parser cannot make sense of it".to_owned(),
        ),
    };
    Err(Error::Expression {
        at,
        message: format!(
            "{what} is not valid CEL: {problem}; expected a CEL expression such as `reading.value > 80.0`"
        ),
    })
}

thread_local! {
    /// Set while this thread runs the CEL parser under [`quietly`].
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, catching a panic in it, without the panic hook printing its message (or a
/// backtrace): the caller turns it into a compile error. Only this thread's panics inside
/// `f` are silenced; every other panic still reaches the hook that was installed before.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T + UnwindSafe) -> std::thread::Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|quiet| quiet.replace(true));
    let result = std::panic::catch_unwind(f);
    QUIET.with(|quiet| quiet.set(was));
    result
}

/// Maps a CEL position (1-based line and column inside the expression) to the YAML source.
/// A quoted scalar's span starts at its quote, so its text starts one column on; CEL line L
/// is source line L of the scalar, which holds for one-line and block (`|`) scalars. A position that does not land on the source falls back to the
/// scalar's start.
pub(crate) fn locate(source: &Source<'_>, span: &Span, (line, column): (isize, isize)) -> Position {
    let start = source.at(span);
    let (Ok(line), Ok(column)) = (usize::try_from(line), usize::try_from(column)) else {
        return start;
    };
    let Some(first) = source.line_text(start.line) else {
        return start;
    };
    let quoted = matches!(first.chars().nth(start.column - 1), Some('\'' | '"'));
    if line == 0 || column == 0 || (quoted && line > 1) {
        return start;
    }
    let target = start.line + line - 1;
    let target_column = start.column - 1 + column + usize::from(quoted);
    match source.line_text(target) {
        Some(text) if target_column <= text.chars().count() + 1 => {
            source.at_line(target, target_column)
        }
        _ => start,
    }
}

#[cfg(test)]
mod tests {
    use marked_yaml::Spanned;

    use super::*;

    fn at(text: &str, line: usize, column: usize) -> Text {
        let marker = marked_yaml::Marker::new(0, 0, line, column);
        Spanned::new(Span::new_start(marker), text.to_owned())
    }

    #[test]
    fn plain_scalar_column_is_offset() {
        let src = Source {
            name: "r.yaml",
            text: "a: 1\ncondition: x >> 2\n",
        };
        let err = check(&src, &at("x >> 2", 2, 12), "cond").unwrap_err();
        let pos = err.position();
        assert_eq!(pos.line, 2);
        assert!(pos.column > 12, "{err}");
    }

    #[test]
    fn valid_expressions_pass() {
        let src = Source {
            name: "r.yaml",
            text: "x: a\n",
        };
        for expr in ["a > 1 && b.c == 'x'", "[1, 2].exists(i, i > 1)", "{'k': v}"] {
            check(&src, &at(expr, 1, 4), "e").unwrap();
        }
    }

    #[test]
    fn empty_is_refused() {
        let src = Source {
            name: "r.yaml",
            text: "x: ''\n",
        };
        let err = check(&src, &at(" ", 1, 4), "e").unwrap_err();
        assert!(err.to_string().contains("is empty"));
    }
}
