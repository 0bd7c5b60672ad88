//! # eyeflow-compiler: rule source to signed LLM-IR
//!
//! The compiler turns a rule written in YAML (the format is documented in `docs/rules.md`)
//! into an [`LlmIrProgram`], optionally signed. It sits on top of `eyeflow-ir` and below the
//! runtime's CLI (`eyeflow compile`). Phases, one module each:
//!
//! 1. `parse`: YAML to the `ast` with `marked-yaml`, every node keeping its line and column;
//! 2. `opcode` and `dag`: opcodes and their fields, then the instruction graph (petgraph):
//!    references, cycles, reachability, loop bodies, parallelism;
//! 3. `check`: semver, capabilities, CEL, loop bounds, schemas, prompts, parallel side effects;
//! 4. `bind`: priority policies and the frozen LLM context;
//! 5. `ir`: the program, checked with [`eyeflow_ir::validate()`];
//! 6. `mcu` (only for [`Target::Mcu`]): every CEL expression lowered to the MCU bytecode,
//!    then the MCU profile's rules ([`eyeflow_ir::mcu::check`]) with positions in the rule;
//! 7. `sign`: Ed25519 with [`eyeflow_ir::keys::sign`].
//!
//! Every refusal is an [`Error`] reading `FILE:LINE:COL: what is wrong; expected what`.
//! The output is deterministic: the same source and options give the same bytes.
//!
//! ```
//! use eyeflow_compiler::{CompileOptions, compile};
//! let source = "
//! id: hello
//! version: 1.0.0
//! instructions:
//!   - id: answer
//!     op: RETURN
//!     expression: \"'hello'\"
//! ";
//! let options = CompileOptions {
//!     source_name: "hello.yaml".into(),
//!     compiled_by: "docs".into(),
//!     compiled_at: 1_767_225_600,
//! };
//! let program = compile(source, &options)?;
//! assert_eq!(program.instructions.len(), 1);
//!
//! let broken = source.replace("RETURN", "RETURNS");
//! let error = compile(&broken, &options).unwrap_err();
//! assert!(error.to_string().starts_with("hello.yaml:6:9: unknown opcode `RETURNS`"));
//! # Ok::<(), eyeflow_compiler::Error>(())
//! ```

mod ast;
mod bind;
mod cel;
mod check;
mod dag;
mod error;
mod ir;
mod mcu;
mod opcode;
mod parse;
mod sign;

use ed25519_dalek::SigningKey;
use eyeflow_ir::pb::LlmIrProgram;

pub use error::{Error, Position, Result};
pub use eyeflow_ir::pb::Target;

use error::Source;

/// What the compiler records about a compilation besides the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Name of the rule source (usually its path): used in error positions and recorded in
    /// the program's metadata.
    pub source_name: String,
    /// Who compiles (email or user id), recorded as `compiled_by`.
    pub compiled_by: String,
    /// Compilation time, Unix seconds, recorded as `compiled_at` (and covered by the signature).
    pub compiled_at: i64,
}

/// Compiles a rule into an unsigned (draft) program that passes [`eyeflow_ir::validate()`].
pub fn compile(source: &str, options: &CompileOptions) -> Result<LlmIrProgram> {
    compile_for(source, options, Target::Server)
}

/// [`compile`] for `target`: [`Target::Mcu`] refuses what a device cannot run and carries
/// each expression as MCU bytecode beside its CEL text.
pub fn compile_for(source: &str, options: &CompileOptions, target: Target) -> Result<LlmIrProgram> {
    let source = Source {
        name: &options.source_name,
        text: source,
    };
    let rule = parse::parse(&source)?;
    let specs = opcode::resolve(&rule, &source)?;
    let dag = dag::build(&rule, &specs, &source)?;
    check::check(&rule, &specs, &dag, &source)?;
    let mut program = ir::program(&rule, &specs, &dag, options, &source)?;
    if target == Target::Mcu {
        mcu::lower(&mut program, &rule, &source)?;
    }
    eyeflow_ir::validate(&program).map_err(|e| Error::Internal {
        at: source.at_line(1, 1),
        source: e,
    })?;
    Ok(program)
}

/// Compiles a rule and signs it with `key` (see [`eyeflow_ir::keys::sign`]).
pub fn compile_and_sign(
    source: &str,
    options: &CompileOptions,
    key: &SigningKey,
) -> Result<LlmIrProgram> {
    compile_and_sign_for(source, options, Target::Server, key)
}

/// [`compile_for`] `target`, then signs with `key`.
pub fn compile_and_sign_for(
    source: &str,
    options: &CompileOptions,
    target: Target,
    key: &SigningKey,
) -> Result<LlmIrProgram> {
    let mut program = compile_for(source, options, target)?;
    let at = Source {
        name: &options.source_name,
        text: source,
    }
    .at_line(1, 1);
    sign::sign(&mut program, key, at)?;
    Ok(program)
}
