//! The MCU profile: what a program with `target = TARGET_MCU` may hold so that a
//! microcontroller (the `eyeflow-mcu` interpreter, fixed buffers, no heap) runs it exactly
//! as the server does. The one place these rules live: the compiler (`--target mcu`) and
//! [`validate()`](crate::validate()) both call [`check`].

use std::collections::BTreeSet;

use eyeflow_mcu::limits;
use prost::Message;

use crate::pb::{
    FallbackStrategy, IrInstruction, IrOpcode, LlmIrProgram, McuCode, MemoryScope, Target,
};

/// What kind of rule a program breaks: it names the refusal reason of the canonical trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// Something a device does not run (an opcode, a field, a strategy): `not_mcu`.
    NotMcu,
    /// A count or a length beyond the device's fixed buffers: `capacity`.
    Capacity,
    /// Bytecode that does not decode or does not match its CEL field: `malformed`.
    Malformed,
}

/// One broken rule of the MCU profile: where (instruction and IR field) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule.
    pub kind: ViolationKind,
    /// The instruction, or `None` for the program's header.
    pub instruction: Option<String>,
    /// The IR field (`opcode`, `loop.items_expr`, `params.NAME`, `mcu.expression`...).
    pub field: String,
    /// What is wrong and what to do instead.
    pub reason: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.instruction {
            Some(id) => write!(
                f,
                "MCU profile: instruction \"{id}\": field \"{}\": {}",
                self.field, self.reason
            ),
            None => write!(f, "MCU profile: field \"{}\": {}", self.field, self.reason),
        }
    }
}

/// Bytes a signature adds to an unsigned program's encoding (tag, length, 64 bytes).
const SIGNATURE_BYTES: usize = 66;

/// Checks every rule of the MCU profile on `program` (one whose `target` is not
/// `TARGET_MCU` is `not_mcu`); returns the first violation found. An unsigned program is measured as if signed (with a key id of the
/// longest allowed length), so the compiler's check holds for the signed file.
pub fn check(program: &LlmIrProgram) -> Result<(), Violation> {
    let header = |kind, field: &str, reason: String| Violation {
        kind,
        instruction: None,
        field: field.to_owned(),
        reason,
    };
    if program.target != Target::Mcu as i32 {
        return Err(header(
            ViolationKind::NotMcu,
            "target",
            "is not TARGET_MCU; compile the rule with `--target mcu`".to_owned(),
        ));
    }
    if program.instructions.len() > limits::MAX_INSTRUCTIONS {
        return Err(header(
            ViolationKind::Capacity,
            "instructions",
            format!(
                "holds {} instructions, above the device's {}; split the rule",
                program.instructions.len(),
                limits::MAX_INSTRUCTIONS
            ),
        ));
    }
    let mut size = program.encoded_len();
    if program.signature.is_empty() {
        size += SIGNATURE_BYTES;
    }
    if program.signing_key_id.is_empty() {
        size += 2 + limits::MAX_ID;
    }
    if size > limits::MAX_PROGRAM_BYTES {
        return Err(header(
            ViolationKind::Capacity,
            "program",
            format!(
                "encodes to {size} bytes signed, above the device's {}; shorten it or split the rule",
                limits::MAX_PROGRAM_BYTES
            ),
        ));
    }
    for requirement in &program.required_capabilities {
        within(
            None,
            "required_capabilities",
            &requirement.capability_id,
            limits::MAX_ID,
        )?;
    }
    for trigger in &program.triggers {
        if !trigger.filter.is_empty() || !trigger.key_expr.is_empty() {
            return Err(header(
                ViolationKind::NotMcu,
                "triggers",
                "a trigger filter or key is CEL the device does not run; filter in the program with a BRANCH".to_owned(),
            ));
        }
    }
    let mut l1_keys = BTreeSet::new();
    for ins in &program.instructions {
        instruction(ins)?;
        if let Some(memory) = &ins.memory {
            l1_keys.insert(memory.key.as_str());
        }
    }
    if l1_keys.len() > limits::MAX_L1_KEYS {
        return Err(header(
            ViolationKind::Capacity,
            "instructions",
            format!(
                "uses {} execution-memory keys, above the device's {}; reuse keys",
                l1_keys.len(),
                limits::MAX_L1_KEYS
            ),
        ));
    }
    Ok(())
}

/// A violation of instruction `id`.
fn at(kind: ViolationKind, id: &str, field: &str, reason: impl Into<String>) -> Violation {
    Violation {
        kind,
        instruction: Some(id.to_owned()),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// `text` is at most `max` bytes (a `capacity` violation otherwise).
fn within(id: Option<&str>, field: &str, text: &str, max: usize) -> Result<(), Violation> {
    if text.len() <= max {
        return Ok(());
    }
    Err(Violation {
        kind: ViolationKind::Capacity,
        instruction: id.map(str::to_owned),
        field: field.to_owned(),
        reason: format!(
            "\"{}\" is {} bytes, above the device's {max}; shorten it",
            text.escape_debug(),
            text.len()
        ),
    })
}

fn instruction(ins: &IrInstruction) -> Result<(), Violation> {
    let id = ins.instruction_id.as_str();
    within(Some(id), "instruction_id", id, limits::MAX_ID)?;
    within(Some(id), "output_var", &ins.output_var, limits::MAX_ID)?;
    let not_mcu = |field: &str, reason: &str| Err(at(ViolationKind::NotMcu, id, field, reason));
    let opcode = IrOpcode::try_from(ins.opcode).unwrap_or(IrOpcode::Unspecified);
    match opcode {
        IrOpcode::Eval
        | IrOpcode::Branch
        | IrOpcode::Loop
        | IrOpcode::Store
        | IrOpcode::Load
        | IrOpcode::CallAction
        | IrOpcode::LoadResource
        | IrOpcode::Return
        | IrOpcode::LlmCall
        | IrOpcode::EmitEvent => {}
        other => {
            return not_mcu(
                "opcode",
                &format!(
                    "{} is not in the MCU profile; the device runs EVAL, BRANCH, LOOP, STORE, LOAD, CALL_ACTION, LOAD_RESOURCE, RETURN, and LLM_CALL and EMIT_EVENT through the serial gateway",
                    other.as_str_name()
                ),
            );
        }
    }
    if ins.is_parallel {
        return not_mcu(
            "is_parallel",
            "a device runs one instruction at a time; chain the parallel steps with `next`",
        );
    }
    if ins.postcondition.is_some() {
        return not_mcu(
            "postcondition",
            "postconditions are not in the MCU profile; read the value back with LOAD_RESOURCE and BRANCH on it",
        );
    }
    if ins.time_window.is_some() {
        return not_mcu(
            "time_window",
            "time windows are not in the MCU profile (a device has no calendar); drop it",
        );
    }
    if !ins.resource_key.is_empty() {
        return not_mcu(
            "resource_key",
            "the device's arbiter serialises per capability; drop resource_key",
        );
    }
    if let Some(d) = &ins.dispatch_metadata {
        if d.requires_human_validation {
            return not_mcu(
                "dispatch_metadata.requires_human_validation",
                "a device cannot wait for a human decision; drop it",
            );
        }
        if !d.vault_secret_key.is_empty() {
            return not_mcu(
                "dispatch_metadata.vault_secret_key",
                "a device holds no secrets; drop it",
            );
        }
        // An LLM_CALL's output schema is checked by the node that serves the call.
        let output_schema = !d.output_schema.is_empty() && opcode != IrOpcode::LlmCall;
        if !d.input_schema.is_empty() || output_schema {
            return not_mcu(
                "dispatch_metadata.input_schema",
                "JSON schemas are not checked on a device (only an LLM_CALL's output_schema, which the node checks); drop input_schema and output_schema",
            );
        }
        within(
            Some(id),
            "dispatch_metadata.capability_id",
            &d.capability_id,
            limits::MAX_ID,
        )?;
        within(
            Some(id),
            "dispatch_metadata.action_name",
            &d.action_name,
            limits::MAX_ID,
        )?;
    }
    if let Some(l) = &ins.r#loop {
        if !l.items_expr.is_empty() {
            return not_mcu(
                "loop.items_expr",
                "a device has no lists to iterate over; write a `while` loop",
            );
        }
        if l.while_condition.is_empty() {
            return not_mcu(
                "loop.while_condition",
                "an MCU LOOP needs a `while` condition (use `while: \"true\"` for a counted loop)",
            );
        }
        if l.max_iterations > limits::MAX_LOOP_ITERATIONS {
            return Err(at(
                ViolationKind::Capacity,
                id,
                "loop.max_iterations",
                format!(
                    "is {}, above the device's {}; lower it",
                    l.max_iterations,
                    limits::MAX_LOOP_ITERATIONS
                ),
            ));
        }
    }
    if let Some(m) = &ins.memory {
        if m.scope != MemoryScope::Execution as i32 {
            return not_mcu(
                "memory.scope",
                "a device has only execution memory (L1); use `scope: execution`",
            );
        }
        within(Some(id), "memory.key", &m.key, limits::MAX_ID)?;
        scalar(id, "memory.default_json", &m.default_json)?;
    }
    let strategies = ins
        .fallback
        .iter()
        .map(|f| ("fallback.strategy", f.strategy))
        .chain(
            ins.timeout
                .iter()
                .map(|t| ("timeout.on_timeout", t.on_timeout)),
        );
    for (field, strategy) in strategies {
        if strategy == FallbackStrategy::FallbackModel as i32 {
            return not_mcu(
                field,
                "a device has no models; use retry, value, skip or abort",
            );
        }
    }
    if let Some(f) = &ins.fallback {
        scalar(id, "fallback.value_json", &f.value_json)?;
    }
    at_most_params(id, "params", "params", ins.params.len())?;
    for name in ins.params.keys() {
        within(Some(id), &format!("params.{name}"), name, limits::MAX_ID)?;
    }
    match opcode {
        IrOpcode::LlmCall => llm_call(ins)?,
        IrOpcode::EmitEvent => emit_event(ins)?,
        _ => {}
    }
    code(ins)
}

/// `count` named values (`what`: params, slots) in `field`: at most the device's
/// `MAX_PARAMS`.
fn at_most_params(id: &str, field: &str, what: &str, count: usize) -> Result<(), Violation> {
    if count > limits::MAX_PARAMS {
        return Err(at(
            ViolationKind::Capacity,
            id,
            field,
            format!(
                "has {count} {what}, above the device's {}; pass fewer",
                limits::MAX_PARAMS
            ),
        ));
    }
    Ok(())
}

/// A name that goes to the node as a field of a frame (an LLM_CALL's slot, an event's
/// field): letters, digits and `_`, not starting with a digit, at most `MAX_ID` bytes.
fn field_name(id: &str, field: &str, name: &str) -> Result<(), Violation> {
    within(Some(id), field, name, limits::MAX_ID)?;
    if name.contains('.') || !eyeflow_mcu::code::is_path(name) {
        return Err(at(
            ViolationKind::NotMcu,
            id,
            field,
            format!(
                "\"{}\" goes to the node as a field name: use letters, digits and _ (not first a digit)",
                name.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// An LLM_CALL a device sends to the node: its context is at most `MAX_PARAMS` runtime
/// slots (evaluated on the device), its model name at most `MAX_ID` bytes.
fn llm_call(ins: &IrInstruction) -> Result<(), Violation> {
    let id = ins.instruction_id.as_str();
    let empty = crate::pb::DispatchMetadata::default();
    let d = ins.dispatch_metadata.as_ref().unwrap_or(&empty);
    at_most_params(
        id,
        "dispatch_metadata.dynamic_slots",
        "slots",
        d.dynamic_slots.len(),
    )?;
    for slot in &d.dynamic_slots {
        let field = format!("dispatch_metadata.dynamic_slots.{}", slot.slot_id);
        if slot.source_type != "runtime" {
            return Err(at(
                ViolationKind::NotMcu,
                id,
                &field,
                "a device holds no secrets: only `runtime` slots, evaluated on the device",
            ));
        }
        field_name(id, &field, &slot.slot_id)?;
    }
    within(
        Some(id),
        "dispatch_metadata.model",
        &d.model,
        limits::MAX_ID,
    )
}

/// An EMIT_EVENT a device sends to the node: a topic of at most `MAX_PATH` bytes, its
/// payload the named fields of `params`.
fn emit_event(ins: &IrInstruction) -> Result<(), Violation> {
    let id = ins.instruction_id.as_str();
    if !ins.expression.is_empty() {
        return Err(at(
            ViolationKind::NotMcu,
            id,
            "expression",
            "a device's event is named scalar fields: give them as `params` instead of an expression",
        ));
    }
    let topic = ins.emit.as_ref().map_or("", |e| e.topic.as_str());
    within(Some(id), "emit.topic", topic, limits::MAX_PATH)?;
    for name in ins.params.keys() {
        field_name(id, &format!("params.{name}"), name)?;
    }
    Ok(())
}

/// A JSON text that must be empty or a scalar a device holds (null, bool, number, short
/// string).
fn scalar(id: &str, field: &str, json: &str) -> Result<(), Violation> {
    if json.is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::String(s)) => within(Some(id), field, &s, limits::MAX_STR),
        Ok(serde_json::Value::Array(_) | serde_json::Value::Object(_)) => Err(at(
            ViolationKind::NotMcu,
            id,
            field,
            "is a list or an object; a device holds only null, booleans, numbers and strings",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(at(
            ViolationKind::Malformed,
            id,
            field,
            format!("is not JSON: {e}"),
        )),
    }
}

/// The bytecode: present exactly where the CEL field is, and valid.
fn code(ins: &IrInstruction) -> Result<(), Violation> {
    let id = ins.instruction_id.as_str();
    let empty = McuCode::default();
    let mcu = ins.mcu.as_ref().unwrap_or(&empty);
    let while_text = ins
        .r#loop
        .as_ref()
        .map_or("", |l| l.while_condition.as_str());
    let mut fields = vec![
        (
            "expression",
            ins.expression.as_str(),
            mcu.expression.as_slice(),
        ),
        (
            "branch_condition",
            ins.branch_condition.as_str(),
            mcu.branch_condition.as_slice(),
        ),
        (
            "while_condition",
            while_text,
            mcu.while_condition.as_slice(),
        ),
    ];
    let names: Vec<&str> = mcu.params.iter().map(|p| p.name.as_str()).collect();
    if !names
        .iter()
        .copied()
        .eq(ins.params.keys().map(String::as_str))
    {
        return Err(at(
            ViolationKind::Malformed,
            id,
            "mcu.params",
            "does not name the instruction's params, sorted by name",
        ));
    }
    let slots = ins
        .dispatch_metadata
        .as_ref()
        .map_or(&[][..], |d| d.dynamic_slots.as_slice());
    if !mcu
        .slots
        .iter()
        .map(|p| p.name.as_str())
        .eq(slots.iter().map(|s| s.slot_id.as_str()))
    {
        return Err(at(
            ViolationKind::Malformed,
            id,
            "mcu.slots",
            "does not name the LLM_CALL's slots, in their order",
        ));
    }
    let mut named: Vec<(String, &str, &[u8])> = mcu
        .params
        .iter()
        .map(|p| {
            (
                format!("params.{}", p.name),
                ins.params.get(&p.name).map_or("", String::as_str),
                p.code.as_slice(),
            )
        })
        .collect();
    named.extend(slots.iter().zip(&mcu.slots).map(|(slot, code)| {
        (
            format!("slots.{}", slot.slot_id),
            slot.source_key.as_str(),
            code.code.as_slice(),
        )
    }));
    let key_text = ins.emit.as_ref().map_or("", |e| e.key_expr.as_str());
    named.push(("event_key".to_owned(), key_text, mcu.event_key.as_slice()));
    fields.extend(named.iter().map(|(f, t, c)| (f.as_str(), *t, *c)));
    for (field, text, bytes) in fields {
        let field = format!("mcu.{field}");
        if text.is_empty() != bytes.is_empty() {
            return Err(at(
                ViolationKind::Malformed,
                id,
                &field,
                "bytecode is present without its CEL field or missing beside it; recompile with `--target mcu`",
            ));
        }
        if bytes.is_empty() {
            continue;
        }
        if let Err(e) = eyeflow_mcu::code::validate(bytes) {
            let kind = if bytes.len() > limits::MAX_CODE_LEN {
                ViolationKind::Capacity
            } else {
                ViolationKind::Malformed
            };
            return Err(at(
                kind,
                id,
                &field,
                format!("bytecode does not validate: {e}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::McuParam;
    use crate::{Error, testing, validate};

    /// `chain_program(1)` made an MCU program, with the bytecode of `true` for each expression.
    fn mcu_program() -> LlmIrProgram {
        let mut program = testing::chain_program(1);
        program.target = Target::Mcu as i32;
        program.triggers.clear();
        program.required_capabilities.clear();
        for ins in &mut program.instructions {
            ins.mcu = Some(McuCode {
                // `true`: the version byte, then the push of true.
                expression: vec![eyeflow_mcu::code::VERSION, 0x02],
                ..Default::default()
            });
        }
        program
    }

    fn violation(program: &LlmIrProgram) -> Violation {
        match validate(program) {
            Err(Error::McuProfile(v)) => v,
            other => panic!("expected an MCU profile refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_mcu_program_validates() {
        validate(&mcu_program()).unwrap();
        // A server program is not checked against the profile.
        validate(&testing::chain_program(40)).unwrap();
    }

    #[test]
    fn bytecode_must_sit_beside_its_cel_and_validate() {
        let mut program = mcu_program();
        program.instructions[0].mcu = None;
        let v = violation(&program);
        assert_eq!(
            (v.kind, v.field.as_str()),
            (ViolationKind::Malformed, "mcu.expression")
        );
        let mut program = mcu_program();
        program.instructions[0].mcu.as_mut().unwrap().expression = vec![0x01, 0x99];
        let v = violation(&program);
        assert_eq!(v.kind, ViolationKind::Malformed);
        assert!(v.to_string().contains("does not validate"), "{v}");
        let mut program = mcu_program();
        program.instructions[0].mcu.as_mut().unwrap().params = vec![McuParam {
            name: "p".into(),
            code: vec![0x01, 0x02],
        }];
        assert_eq!(violation(&program).field, "mcu.params");
    }

    /// `mcu_program()` with its instruction made an LLM_CALL with `slots` (runtime, the
    /// bytecode of `true` each).
    fn llm_program(slots: &[&str]) -> LlmIrProgram {
        let mut program = mcu_program();
        let ins = &mut program.instructions[0];
        ins.opcode = IrOpcode::LlmCall as i32;
        ins.expression.clear();
        ins.dispatch_metadata = Some(crate::pb::DispatchMetadata {
            model: "tiny".into(),
            prompt_template: "classify".into(),
            output_schema: r#"{"type": "string"}"#.into(),
            dynamic_slots: slots
                .iter()
                .map(|s| crate::pb::DynamicSlot {
                    slot_id: (*s).into(),
                    source_type: "runtime".into(),
                    source_key: "true".into(),
                })
                .collect(),
            ..Default::default()
        });
        ins.mcu = Some(McuCode {
            slots: slots
                .iter()
                .map(|s| McuParam {
                    name: (*s).into(),
                    code: vec![eyeflow_mcu::code::VERSION, 0x02],
                })
                .collect(),
            ..Default::default()
        });
        program
    }

    #[test]
    fn an_llm_call_sends_runtime_slots_within_the_devices_capacity() {
        check(&llm_program(&["level", "site"])).unwrap();
        let mut program = llm_program(&["level"]);
        program.instructions[0]
            .dispatch_metadata
            .as_mut()
            .unwrap()
            .dynamic_slots[0]
            .source_type = "vault".into();
        let v = check(&program).unwrap_err();
        assert_eq!(
            (v.kind, v.field.as_str()),
            (
                ViolationKind::NotMcu,
                "dispatch_metadata.dynamic_slots.level"
            )
        );
        let v = check(&llm_program(&["a", "b", "c", "d", "e"])).unwrap_err();
        assert_eq!(v.kind, ViolationKind::Capacity);
        let v = check(&llm_program(&["a.b"])).unwrap_err();
        assert_eq!(v.kind, ViolationKind::NotMcu);
        assert!(v.reason.contains("field name"), "{v}");
        let mut program = llm_program(&["level"]);
        program.instructions[0].mcu.as_mut().unwrap().slots.clear();
        assert_eq!(check(&program).unwrap_err().field, "mcu.slots");
        let mut program = llm_program(&["level"]);
        program.instructions[0]
            .dispatch_metadata
            .as_mut()
            .unwrap()
            .model = "m".repeat(limits::MAX_ID + 1);
        let v = check(&program).unwrap_err();
        assert_eq!(
            (v.kind, v.field.as_str()),
            (ViolationKind::Capacity, "dispatch_metadata.model")
        );
        // Only an LLM_CALL's output schema is allowed (the node checks it).
        let mut program = mcu_program();
        program.instructions[0].dispatch_metadata = Some(crate::pb::DispatchMetadata {
            output_schema: r#"{"type": "string"}"#.into(),
            ..Default::default()
        });
        assert_eq!(
            check(&program).unwrap_err().field,
            "dispatch_metadata.input_schema"
        );
    }

    #[test]
    fn an_emit_event_sends_named_fields_under_a_short_topic() {
        let mut program = mcu_program();
        let ins = &mut program.instructions[0];
        ins.opcode = IrOpcode::EmitEvent as i32;
        ins.emit = Some(crate::pb::EventEmit {
            topic: "tank.alerts".into(),
            key_expr: "true".into(),
        });
        let v = check(&program).unwrap_err();
        assert_eq!(
            (v.kind, v.field.as_str()),
            (ViolationKind::NotMcu, "expression")
        );
        let ins = &mut program.instructions[0];
        ins.expression.clear();
        ins.params.insert("level".into(), "true".into());
        let true_code = vec![eyeflow_mcu::code::VERSION, 0x02];
        ins.mcu = Some(McuCode {
            params: vec![McuParam {
                name: "level".into(),
                code: true_code.clone(),
            }],
            ..Default::default()
        });
        // The key's bytecode is missing.
        assert_eq!(check(&program).unwrap_err().field, "mcu.event_key");
        program.instructions[0].mcu.as_mut().unwrap().event_key = true_code;
        check(&program).unwrap();
        program.instructions[0].emit.as_mut().unwrap().topic = "t".repeat(limits::MAX_PATH + 1);
        assert_eq!(check(&program).unwrap_err().kind, ViolationKind::Capacity);
    }

    #[test]
    fn what_a_device_cannot_run_or_hold() {
        let mut program = mcu_program();
        program.instructions[0].opcode = IrOpcode::CallApi as i32;
        let v = check(&program).unwrap_err();
        assert_eq!(
            (v.kind, v.field.as_str()),
            (ViolationKind::NotMcu, "opcode")
        );
        let mut program = mcu_program();
        program.instructions[0].resource_key = "valve-1".into();
        assert_eq!(violation(&program).field, "resource_key");
        let mut program = mcu_program();
        program.instructions[0].output_var = "o".repeat(limits::MAX_ID + 1);
        let v = violation(&program);
        assert_eq!(
            (v.kind, v.field.as_str()),
            (ViolationKind::Capacity, "output_var")
        );
        let mut program = testing::chain_program(limits::MAX_INSTRUCTIONS);
        program.target = Target::Mcu as i32;
        let v = check(&program).unwrap_err();
        assert_eq!(
            (v.kind, v.field.as_str()),
            (ViolationKind::Capacity, "instructions")
        );
        let mut program = mcu_program();
        program.target = Target::Server as i32;
        assert_eq!(check(&program).unwrap_err().kind, ViolationKind::NotMcu);
    }
}
