//! Rule compiler.
