//! The capacities of a device: the firmware's fixed buffers are sized by these, and the
//! compiler's `--target mcu` refuses any program that would not fit them.

/// Instructions in one program.
pub const MAX_INSTRUCTIONS: usize = 32;
/// Bytes of one expression's bytecode.
pub const MAX_CODE_LEN: usize = 256;
/// Depth of the evaluator's value stack.
pub const MAX_STACK: usize = 16;
/// Bytes of any string value (a literal, an event field, a result).
pub const MAX_STR: usize = 32;
/// Bytes of a dotted field path (`event.tank.level`).
pub const MAX_PATH: usize = 48;
/// Bytes of an instruction id, output variable, memory key, capability id, action name
/// or parameter name.
pub const MAX_ID: usize = 32;
/// Named parameters of one hardware call.
pub const MAX_PARAMS: usize = 4;
/// Fields of one event.
pub const MAX_EVENT_FIELDS: usize = 16;
/// Iterations of one LOOP.
pub const MAX_LOOP_ITERATIONS: u32 = 64;
/// Bytes of a signed program file.
pub const MAX_PROGRAM_BYTES: usize = 8192;
/// Keys of the execution memory (L1).
pub const MAX_L1_KEYS: usize = 8;
/// Hardware answers in one conformance script.
pub const MAX_HW_STEPS: usize = 32;
