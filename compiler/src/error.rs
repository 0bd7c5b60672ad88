//! The one error type of the compiler: every refusal points at a place in the rule source
//! and reads `FILE:LINE:COL: what is wrong; expected what`.

use std::fmt;

use marked_yaml::Span;

/// A place in the rule source: file name as given in the options, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The rule's source name ([`CompileOptions::source_name`](crate::CompileOptions)).
    pub file: String,
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a rule did not compile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source is not well-formed YAML (or uses YAML features the format refuses).
    #[error("{at}: {message}")]
    Syntax {
        /// Where the YAML parser stopped.
        at: Position,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The YAML does not have the shape of a rule: unknown field, wrong type, missing field.
    #[error("{at}: {message}")]
    Schema {
        /// The offending node.
        at: Position,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A CEL expression does not parse.
    #[error("{at}: {message}")]
    Expression {
        /// The expression (and, where known, the offending character in it).
        at: Position,
        /// The CEL parser's complaint and what was expected.
        message: String,
    },
    /// The rule is well-formed but breaks a rule of the format: a reference, the graph, a
    /// capability, a priority, a limit.
    #[error("{at}: {message}")]
    Rule {
        /// The offending field.
        at: Position,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The compiled program fails `eyeflow_ir::validate`: a compiler bug, never the rule's fault.
    #[error("{at}: internal compiler error, the compiled program fails IR validation: {source}")]
    Internal {
        /// The rule file (line 1).
        at: Position,
        /// The IR crate's refusal.
        source: eyeflow_ir::Error,
    },
}

impl Error {
    /// Where in the source the error is.
    pub fn position(&self) -> &Position {
        match self {
            Error::Syntax { at, .. }
            | Error::Schema { at, .. }
            | Error::Expression { at, .. }
            | Error::Rule { at, .. }
            | Error::Internal { at, .. } => at,
        }
    }
}

/// Result with the compiler's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The rule source being compiled: its name and text, turning spans into positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) name: &'a str,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// Position of a line/column pair (both 1-based).
    pub(crate) fn at_line(&self, line: usize, column: usize) -> Position {
        Position {
            file: self.name.to_owned(),
            line: line.max(1),
            column: column.max(1),
        }
    }

    /// Position where `span` starts; the start of the file for a span without a start.
    pub(crate) fn at(&self, span: &Span) -> Position {
        match span.start() {
            Some(marker) => self.at_line(marker.line(), marker.column()),
            None => self.at_line(1, 1),
        }
    }

    /// A [`Error::Rule`] at `span`.
    pub(crate) fn rule(&self, span: &Span, message: impl Into<String>) -> Error {
        Error::Rule {
            at: self.at(span),
            message: message.into(),
        }
    }

    /// Text of line `line` (1-based), if there is such a line.
    pub(crate) fn line_text(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)?)
    }
}
