//! The one error type of the IR crate: every refusal of a program, key or file, with
//! the instruction and field it concerns.

/// Why a program, key or keyring entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The encoded program is larger than the configured limit.
    #[error("program is {size} bytes, above the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The program has more instructions than the configured limit.
    #[error("program has {count} instructions, above the limit of {limit}")]
    TooManyInstructions {
        /// Instructions in the program.
        count: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The bytes are not a valid protobuf `LlmIRProgram`.
    #[error("program is not valid LLM-IR protobuf: {0}")]
    Decode(String),
    /// The bytes decode, but are not the canonical encoding of what they decode to.
    #[error(
        "program bytes are not in canonical encoding (first difference at byte {offset}); re-encode it with an eyeflow tool"
    )]
    NonCanonical {
        /// First byte offset where input and canonical encoding differ.
        offset: usize,
    },
    /// The program carries no signature.
    #[error("program \"{program_id}\" is unsigned; only signed programs are accepted")]
    Unsigned {
        /// Program id.
        program_id: String,
    },
    /// The signature field is not 64 bytes.
    #[error("program \"{program_id}\" has a malformed signature of {len} bytes (expected 64)")]
    MalformedSignature {
        /// Program id.
        program_id: String,
        /// Length found.
        len: usize,
    },
    /// The signing key is not in the keyring.
    #[error(
        "program \"{program_id}\" is signed by key \"{key_id}\", which is not in the trusted keyring"
    )]
    UnknownKey {
        /// Program id.
        program_id: String,
        /// Key id named by the program.
        key_id: String,
    },
    /// The signing key is in the keyring but revoked.
    #[error("program \"{program_id}\" is signed by key \"{key_id}\", which has been revoked")]
    RevokedKey {
        /// Program id.
        program_id: String,
        /// Revoked key id.
        key_id: String,
    },
    /// The signature does not match the program content and the named key.
    #[error(
        "program \"{program_id}\": signature does not verify with key \"{key_id}\" (tampered or signed by another key)"
    )]
    BadSignature {
        /// Program id.
        program_id: String,
        /// Key id named by the program.
        key_id: String,
    },
    /// The `ir_version` is not one this runtime knows.
    #[error("ir_version \"{ir_version}\" is unknown to this runtime (known: {known})")]
    UnknownIrVersion {
        /// Version found.
        ir_version: String,
        /// Known versions, comma separated.
        known: String,
    },
    /// The `ir_version` needs a newer runtime.
    #[error("IR {ir_version} needs runtime {required}.x or newer; this runtime is {runtime}")]
    IncompatibleIrVersion {
        /// Program IR version.
        ir_version: String,
        /// Minimum runtime major version.
        required: u32,
        /// This runtime's version.
        runtime: String,
    },
    /// A program-level field is missing or invalid.
    #[error("program field \"{field}\": {reason}")]
    InvalidProgramField {
        /// Field name.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// An instruction has an empty id.
    #[error("instruction #{index} has an empty instruction_id")]
    EmptyInstructionId {
        /// Position in the program.
        index: usize,
    },
    /// Two instructions share an id.
    #[error("instruction id \"{instruction}\" is used more than once (field \"instruction_id\")")]
    DuplicateInstructionId {
        /// The repeated id.
        instruction: String,
    },
    /// The opcode is unspecified or unknown.
    #[error("instruction \"{instruction}\": field \"opcode\" has unknown value {value}")]
    UnknownOpcode {
        /// Instruction id.
        instruction: String,
        /// Raw opcode value.
        value: i32,
    },
    /// A reference to another instruction names no instruction of the program.
    #[error(
        "instruction \"{instruction}\": field \"{field}\" names unknown instruction \"{target}\""
    )]
    UnknownTarget {
        /// Instruction id.
        instruction: String,
        /// Field holding the reference.
        field: &'static str,
        /// The missing id.
        target: String,
    },
    /// The instruction graph has a cycle that is not a declared bounded LOOP.
    #[error(
        "instruction \"{instruction}\": field \"depends_on\" closes a cycle ({path}) that is not a bounded LOOP"
    )]
    Cycle {
        /// An instruction on the cycle.
        instruction: String,
        /// The cycle, as `a -> b -> a`.
        path: String,
    },
    /// A LOOP without `max_iterations`.
    #[error(
        "instruction \"{instruction}\": LOOP needs field \"loop.max_iterations\" greater than 0"
    )]
    UnboundedLoop {
        /// Instruction id.
        instruction: String,
    },
    /// A priority level outside the five levels.
    #[error(
        "instruction \"{instruction}\": field \"{field}\" is {value}; expected one of 0 (CRITICAL), 64 (HIGH), 128 (NORMAL), 192 (LOW), 255 (BACKGROUND)"
    )]
    InvalidPriority {
        /// Instruction id (or `<program>`).
        instruction: String,
        /// Field name.
        field: &'static str,
        /// Value found.
        value: i32,
    },
    /// A timeout or deadline that is zero or negative.
    #[error(
        "instruction \"{instruction}\": field \"{field}\" is {value}; a timeout must be positive"
    )]
    NonPositiveTimeout {
        /// Instruction id (or `<program>`).
        instruction: String,
        /// Field name.
        field: &'static str,
        /// Value found.
        value: i64,
    },
    /// A field the opcode needs is absent.
    #[error("instruction \"{instruction}\": {opcode} needs field \"{field}\"")]
    MissingField {
        /// Instruction id.
        instruction: String,
        /// Opcode name.
        opcode: &'static str,
        /// Missing field.
        field: &'static str,
    },
    /// An instruction needs a permission its program does not carry (signed
    /// `PermissionFlags`).
    #[error(
        "instruction \"{instruction}\": {opcode} needs permission {permission}, which the program does not carry"
    )]
    MissingPermission {
        /// Instruction id.
        instruction: String,
        /// Opcode name.
        opcode: &'static str,
        /// The missing flag (`can_actuate`, ...).
        permission: &'static str,
    },
    /// A field has a value outside its domain.
    #[error("instruction \"{instruction}\": field \"{field}\" {reason}")]
    InvalidField {
        /// Instruction id.
        instruction: String,
        /// Field name.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A program whose target is the MCU profile breaks one of its rules (see [`crate::mcu`]).
    #[error("{0}")]
    McuProfile(crate::mcu::Violation),
    /// A key file could not be read or written, or does not hold a key.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// Path of the file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A key file holds the other kind of key than the one this use needs (a public key
    /// given to sign, a secret key given to trust or verify).
    #[error("key file {path} holds a {found}, but a {expected} is needed here: {hint}")]
    WrongKeyKind {
        /// Path of the file.
        path: String,
        /// What the file holds.
        found: crate::keys::KeyKind,
        /// What was expected.
        expected: crate::keys::KeyKind,
        /// What to give instead.
        hint: &'static str,
    },
}

/// Result with the IR crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
