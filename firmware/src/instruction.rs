//! The scalars of an instruction (opcode, order, failure policy, limits, JSON literals),
//! read in place from its encoded bytes within the device's capacities.

use eyeflow_mcu::limits::MAX_STR;
use eyeflow_mcu::trace::Refusal;

use crate::wire::{self, Field};

/// JSON of a FALLBACK_VALUE or a LOAD default: a string of up to `MAX_STR` bytes fits,
/// quoted, with every byte escaped by a backslash (`\"`, `\\`, `\n`); a longer literal
/// (one with many control characters written `\u00XX`) is refused as over capacity.
const JSON_BYTES: usize = 2 + 2 * MAX_STR;

/// Error classes listed by a fallback's `on_errors` or a retry's `retry_on`, at most: each
/// of the twelve once, with room for a repeat.
const CLASSES: usize = 16;

/// An opcode: its `.proto` number (`IROpcode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct IROpcode(pub(crate) i32);

impl IROpcode {
    pub(crate) const LOAD_RESOURCE: Self = Self(1);
    pub(crate) const CALL_ACTION: Self = Self(4);
    pub(crate) const LLM_CALL: Self = Self(6);
    pub(crate) const EVAL: Self = Self(7);
    pub(crate) const BRANCH: Self = Self(8);
    pub(crate) const LOOP: Self = Self(10);
    pub(crate) const RETURN: Self = Self(11);
    pub(crate) const EMIT_EVENT: Self = Self(12);
    pub(crate) const STORE: Self = Self(13);
    pub(crate) const LOAD: Self = Self(14);
}

/// A fallback strategy: its `.proto` number (`FallbackStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FallbackStrategy(pub(crate) i32);

impl FallbackStrategy {
    pub(crate) const FALLBACK_VALUE: Self = Self(2);
    pub(crate) const FALLBACK_MODEL: Self = Self(3);
    pub(crate) const SKIP: Self = Self(4);
    pub(crate) const ABORT: Self = Self(5);
}

/// `MemoryScope.MEMORY_SCOPE_EXECUTION`, the only scope of the MCU profile.
pub(crate) const EXECUTION_SCOPE: i32 = 1;

/// A set of error classes, one bit per `.proto` number 1 to 15 (0 = empty).
pub(crate) type Classes = u16;

/// `fallback` (6).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fallback {
    pub(crate) strategy: FallbackStrategy,
    pub(crate) value_json: &'static str,
    pub(crate) on_errors: Classes,
}

/// `retry` (7).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Retry {
    pub(crate) max_retries: u32,
    pub(crate) backoff_ms: u32,
    pub(crate) multiplier: f32,
    pub(crate) max_backoff_ms: u32,
    pub(crate) on: Classes,
}

/// `timeout` (8).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timeout {
    pub(crate) execution_timeout_ms: u32,
    pub(crate) on_timeout: FallbackStrategy,
}

/// `memory` (17).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    pub(crate) scope: i32,
    pub(crate) default_json: &'static str,
}

/// What loading checks and running needs of an instruction besides its strings and
/// bytecode (those are read in place where used). A sub-message's presence is kept: an
/// empty `fallback` is a fallback with strategy 0.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Instruction {
    pub(crate) opcode: IROpcode,
    pub(crate) sequence: i32,
    pub(crate) is_parallel: bool,
    pub(crate) fallback: Option<Fallback>,
    pub(crate) retry: Option<Retry>,
    pub(crate) timeout: Option<Timeout>,
    pub(crate) can_actuate: bool,
    /// `priority_policy.priority_level`, if the instruction has a priority policy.
    pub(crate) priority: Option<i32>,
    /// `loop.max_iterations`, if the instruction has a loop config.
    pub(crate) max_iterations: Option<u32>,
    pub(crate) memory: Option<Memory>,
}

/// A varint field as an `int32` or an enum: its low 32 bits (a `bool` is them not 0).
fn int32(field: &Field<'_>) -> i32 {
    field.varint as u32 as i32
}

/// A varint field as a `uint32`: its low 32 bits.
fn uint32(field: &Field<'_>) -> u32 {
    field.varint as u32
}

/// A JSON literal: over capacity beyond [`JSON_BYTES`], else UTF-8.
fn json(field: &Field<'static>) -> Result<&'static str, Refusal> {
    if field.bytes.len() > JSON_BYTES {
        return Err(Refusal::Capacity);
    }
    core::str::from_utf8(field.bytes).map_err(|_| Refusal::Malformed)
}

/// A list of error classes (packed, as the canonical encoding has it); over capacity
/// beyond [`CLASSES`] elements, repeats included.
fn classes(field: &Field<'_>) -> Result<Classes, Refusal> {
    let mut set = 0;
    for (count, element) in wire::varints(field.bytes).enumerate() {
        let class = element? as u32 as i32;
        if count == CLASSES {
            return Err(Refusal::Capacity);
        }
        if (1..16).contains(&class) {
            set |= 1 << class;
        }
    }
    Ok(set)
}

impl Instruction {
    /// The scalars of the encoded instruction `raw`: `capacity` when a JSON literal or a
    /// list of error classes is longer than the device holds, `malformed` when the bytes
    /// do not frame. The canonical check (`canonical.rs`) has already made every field
    /// appear at most once, with its schema's wire type, repeated scalars packed.
    pub(crate) fn read(raw: &'static [u8]) -> Result<Self, Refusal> {
        let mut ins = Self::default();
        for f in wire::fields(raw) {
            let f = f?;
            let inner = wire::fields(f.bytes);
            match f.number {
                2 => ins.opcode = IROpcode(int32(&f)),
                6 => {
                    let fallback = ins.fallback.get_or_insert_default();
                    for f in inner {
                        let f = f?;
                        match f.number {
                            1 => fallback.strategy = FallbackStrategy(int32(&f)),
                            2 => fallback.value_json = json(&f)?,
                            4 => fallback.on_errors = classes(&f)?,
                            _ => {}
                        }
                    }
                }
                7 => {
                    let retry = ins.retry.get_or_insert_default();
                    for f in inner {
                        let f = f?;
                        match f.number {
                            1 => retry.max_retries = uint32(&f),
                            2 => retry.backoff_ms = uint32(&f),
                            3 => retry.multiplier = wire::float_of(&f),
                            4 => retry.max_backoff_ms = uint32(&f),
                            5 => retry.on = classes(&f)?,
                            _ => {}
                        }
                    }
                }
                8 => {
                    let timeout = ins.timeout.get_or_insert_default();
                    for f in inner {
                        let f = f?;
                        match f.number {
                            1 => timeout.execution_timeout_ms = uint32(&f),
                            2 => timeout.on_timeout = FallbackStrategy(int32(&f)),
                            _ => {}
                        }
                    }
                }
                9 => {
                    for f in inner {
                        let f = f?;
                        if f.number == 1 {
                            ins.can_actuate = uint32(&f) != 0;
                        }
                    }
                }
                10 => ins.sequence = int32(&f),
                11 => ins.is_parallel = uint32(&f) != 0,
                15 => {
                    let level = ins.priority.get_or_insert(0);
                    for f in inner {
                        let f = f?;
                        if f.number == 1 {
                            *level = int32(&f);
                        }
                    }
                }
                16 => {
                    let max = ins.max_iterations.get_or_insert(0);
                    for f in inner {
                        let f = f?;
                        if f.number == 1 {
                            *max = uint32(&f);
                        }
                    }
                }
                17 => {
                    let memory = ins.memory.get_or_insert_default();
                    for f in inner {
                        let f = f?;
                        match f.number {
                            1 => memory.scope = int32(&f),
                            4 => memory.default_json = json(&f)?,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(ins)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    /// Length-delimited field `tag` (its first byte, number below 16) holding `inner`.
    fn message(tag: u8, inner: &[u8]) -> &'static [u8] {
        let mut bytes = Vec::from([tag, u8::try_from(inner.len()).expect("short")]);
        bytes.extend_from_slice(inner);
        bytes.leak()
    }

    #[test]
    fn scalars_read_as_a_protobuf_decoder_reads_them() {
        let raw: &[u8] = &[
            0x10, 7, // opcode EVAL
            0x32, 9, 0x08, 2, 0x12, 1, b'1', 0x22, 2, 1, 12, // fallback
            0x3a, 15, 0x08, 2, 0x10, 100, 0x1d, 0, 0, 0, 0x40, 0x20, 0xf4, 0x03, 0x2a, 1,
            1, // retry
            0x42, 4, 0x08, 10, 0x10, 4, // timeout
            0x4a, 2, 0x08, 1, // permissions
            0x50, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, // sequence −1
            0x7a, 2, 0x08, 0x40, // priority policy
            0x82, 1, 2, 0x08, 5, // loop
            0x8a, 1, 8, 0x08, 1, 0x22, 4, b't', b'r', b'u', b'e', // memory
        ];
        let ins = Instruction::read(raw).expect("reads");
        assert_eq!(ins.opcode, IROpcode::EVAL);
        assert_eq!(ins.sequence, -1);
        assert!(!ins.is_parallel && ins.can_actuate);
        let fallback = ins.fallback.expect("a fallback");
        assert_eq!(fallback.strategy, FallbackStrategy::FALLBACK_VALUE);
        assert_eq!(
            (fallback.value_json, fallback.on_errors),
            ("1", 1 << 1 | 1 << 12)
        );
        let retry = ins.retry.expect("a retry");
        assert_eq!(
            (
                retry.max_retries,
                retry.backoff_ms,
                retry.max_backoff_ms,
                retry.on
            ),
            (2, 100, 500, 1 << 1)
        );
        assert_eq!(retry.multiplier, 2.0);
        let timeout = ins.timeout.expect("a timeout");
        assert_eq!(timeout.execution_timeout_ms, 10);
        assert_eq!(timeout.on_timeout, FallbackStrategy::SKIP);
        assert_eq!((ins.priority, ins.max_iterations), (Some(64), Some(5)));
        let memory = ins.memory.expect("a memory access");
        assert_eq!(
            (memory.scope, memory.default_json),
            (EXECUTION_SCOPE, "true")
        );
        // Present but empty sub-messages are present.
        let empty = Instruction::read(message(0x32, &[])).expect("reads");
        assert_eq!(
            empty.fallback.map(|f| f.strategy),
            Some(FallbackStrategy(0))
        );
        assert!(empty.retry.is_none() && empty.memory.is_none());
    }

    #[test]
    fn longer_literals_and_lists_than_the_device_holds_are_over_capacity() {
        let json = |len: usize| {
            let mut inner = Vec::from([0x12, u8::try_from(len).expect("short")]);
            inner.resize(2 + len, b' ');
            message(0x32, &inner)
        };
        assert!(Instruction::read(json(JSON_BYTES)).is_ok());
        assert_eq!(
            Instruction::read(json(JSON_BYTES + 1)).map(|_| ()),
            Err(Refusal::Capacity)
        );
        let list = |len: usize| {
            let mut inner = Vec::from([0x2a, u8::try_from(len).expect("short")]);
            inner.resize(2 + len, 3);
            message(0x3a, &inner)
        };
        assert_eq!(
            Instruction::read(list(CLASSES))
                .map(|i| i.retry.map(|r| r.on))
                .ok(),
            Some(Some(1 << 3))
        );
        assert_eq!(
            Instruction::read(list(CLASSES + 1)).map(|_| ()),
            Err(Refusal::Capacity)
        );
        assert_eq!(
            Instruction::read(&[0x32, 2, 0x12]).map(|_| ()),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn the_numbers_are_the_schemas() {
        use eyeflow_ir::pb::{FallbackStrategy as F, IrOpcode as O, MemoryScope};
        let opcodes = [
            (IROpcode::LOAD_RESOURCE, O::LoadResource),
            (IROpcode::CALL_ACTION, O::CallAction),
            (IROpcode::LLM_CALL, O::LlmCall),
            (IROpcode::EVAL, O::Eval),
            (IROpcode::BRANCH, O::Branch),
            (IROpcode::LOOP, O::Loop),
            (IROpcode::RETURN, O::Return),
            (IROpcode::EMIT_EVENT, O::EmitEvent),
            (IROpcode::STORE, O::Store),
            (IROpcode::LOAD, O::Load),
        ];
        for (ours, schema) in opcodes {
            assert_eq!(ours.0, schema as i32, "{schema:?}");
        }
        let strategies = [
            (FallbackStrategy::FALLBACK_VALUE, F::FallbackValue),
            (FallbackStrategy::FALLBACK_MODEL, F::FallbackModel),
            (FallbackStrategy::SKIP, F::Skip),
            (FallbackStrategy::ABORT, F::Abort),
        ];
        for (ours, schema) in strategies {
            assert_eq!(ours.0, schema as i32, "{schema:?}");
        }
        assert_eq!(EXECUTION_SCOPE, MemoryScope::Execution as i32);
    }
}
