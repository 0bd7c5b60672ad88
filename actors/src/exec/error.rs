//! The executor's error: what makes a program unrunnable, named by instruction and field,
//! and what keeps an execution from having a canonical trace.

/// Why [`Program::prepare`](super::Program::prepare) refused a program, or
/// [`canonical_trace`](super::canonical_trace) an execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// One field of one instruction is unusable.
    #[error("instruction `{instruction}`, field `{field}`: {message}")]
    Instruction {
        /// Instruction id.
        instruction: String,
        /// IR field (`expression`, `params.valve`, `dispatch_metadata.output_schema`, ...).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// One field of one trigger is unusable.
    #[error("trigger {index}, field `{field}`: {message}")]
    Trigger {
        /// Index in `triggers`, from 0.
        index: usize,
        /// IR field (`filter`, `key_expr`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An execution's journal holds what the canonical trace cannot show (a list, a
    /// human decision, an unknown instruction or error class).
    #[error("trace: step `{instruction}` {message}")]
    Trace {
        /// The instruction path (`(end)` for the outcome).
        instruction: String,
        /// What is wrong.
        message: String,
    },
    /// The program as a whole is unusable (duplicate ids, cycles, default priority).
    #[error("program `{program}`: {message}")]
    Program {
        /// Program id.
        program: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// An [`Error::Instruction`].
    pub(crate) fn instruction(
        instruction: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Instruction {
            instruction: instruction.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}
