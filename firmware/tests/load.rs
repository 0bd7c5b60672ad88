//! Loading programs signed by the server's own code (eyeflow-ir): what the device accepts,
//! the refusal reason of each kind of bad program, and the scripts it refuses.
#![allow(missing_docs)]

use ed25519_dalek::{Signer, SigningKey};
use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::eyeflow_mcu::Value;
use eyeflow_firmware::eyeflow_mcu::code::{Binary, Builder};
use eyeflow_firmware::eyeflow_mcu::script::{Answer, Script, encode};
use eyeflow_firmware::eyeflow_mcu::trace::Refusal;
use eyeflow_firmware::program::Program;
use eyeflow_firmware::state;
use eyeflow_firmware::verify::KEYRING;
use eyeflow_ir::mcu::ViolationKind;
use eyeflow_ir::pb::{
    CapabilityRequirement, DispatchMetadata, DynamicSlot, EventEmit, EventTrigger,
    FallbackStrategy, HttpCall, IrInstruction, IrOpcode, LlmIrProgram, McuCode, McuParam,
    MemoryAccess, MemoryScope, PermissionFlags, Target, TimeoutConfig,
};
use prost::Message;

const BOARD: &[Capability] = &[Capability {
    id: "valve",
    version: (1, 2, 0),
}];

fn code(build: impl FnOnce(&mut Builder)) -> Vec<u8> {
    let mut b = Builder::new();
    build(&mut b);
    b.finish().expect("valid bytecode")
}

fn program() -> LlmIrProgram {
    let eval = IrInstruction {
        instruction_id: "level".into(),
        opcode: IrOpcode::Eval as i32,
        expression: "event.level * 2.0".into(),
        mcu: Some(McuCode {
            expression: code(|b| {
                b.get("event.level").expect("path");
                b.number(2.0);
                b.binary(Binary::Mul);
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let open = IrInstruction {
        instruction_id: "open".into(),
        opcode: IrOpcode::CallAction as i32,
        depends_on: vec!["level".into()],
        dispatch_metadata: Some(DispatchMetadata {
            capability_id: "valve".into(),
            action_name: "open".into(),
            ..Default::default()
        }),
        permissions: Some(PermissionFlags {
            can_actuate: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    LlmIrProgram {
        program_id: "tank".into(),
        version: "1.0.0".into(),
        compiled_at: 1_700_000_000,
        ir_version: "2.0".into(),
        target: Target::Mcu as i32,
        instructions: vec![eval, open],
        required_capabilities: vec![CapabilityRequirement {
            capability_id: "valve".into(),
            version_req: "^1.1".into(),
        }],
        ..Default::default()
    }
}

/// Signs `p` with the seed under key id `key_id`, as the vector generator does.
fn signed(mut p: LlmIrProgram, seed: u8, key_id: &str) -> Vec<u8> {
    p.signing_key_id = key_id.into();
    p.signature.clear();
    let digest = eyeflow_ir::canonical::signing_digest(&p);
    p.signature = SigningKey::from_bytes(&[seed; 32])
        .sign(&digest)
        .to_bytes()
        .to_vec();
    p.encode_to_vec()
}

fn load(bytes: Vec<u8>) -> Result<Program, Refusal> {
    let mut program = Program::new();
    program.load(bytes.leak(), KEYRING, BOARD)?;
    Ok(program)
}

#[test]
fn a_program_signed_by_the_server_loads() {
    let program = load(signed(program(), 7, "test")).expect("loads");
    let ids: Vec<&str> = program.nodes.iter().map(|n| n.id).collect();
    assert_eq!(ids, ["level", "open"]);
    assert_eq!(program.detail(1).capability, "valve");
}

#[test]
fn every_flipped_byte_is_refused() {
    let good = signed(program(), 7, "test");
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        let refused = load(bad).expect_err("a flipped byte is refused");
        assert!(
            matches!(
                refused,
                Refusal::BadSignature | Refusal::Malformed | Refusal::UnknownKey
            ),
            "byte {at}: {refused:?}"
        );
    }
}

#[test]
fn bad_programs_are_refused_with_their_reason() {
    let with = |f: fn(&mut LlmIrProgram)| {
        let mut p = program();
        f(&mut p);
        load(signed(p, 7, "test")).map(|_| ())
    };
    assert_eq!(
        load(signed(program(), 9, "test")).map(|_| ()),
        Err(Refusal::BadSignature)
    );
    assert_eq!(
        load(signed(program(), 7, "other")).map(|_| ()),
        Err(Refusal::UnknownKey)
    );
    let mut unsigned = program();
    unsigned.signing_key_id = "test".into();
    assert_eq!(
        load(unsigned.encode_to_vec()).map(|_| ()),
        Err(Refusal::BadSignature)
    );
    assert_eq!(
        with(|p| p.ir_version = "3.0".into()),
        Err(Refusal::IrVersion)
    );
    assert_eq!(
        with(|p| p.target = Target::Server as i32),
        Err(Refusal::NotMcu)
    );
    // A CALL_API is not for a device; without its URL (or the permission it needs) the
    // server's structural checks, which come first, refuse it as malformed.
    assert_eq!(
        with(|p| {
            let ins = &mut p.instructions[0];
            ins.opcode = IrOpcode::CallApi as i32;
            ins.http = Some(HttpCall {
                method: "GET".into(),
                url: "http://tank.example/level".into(),
                ..Default::default()
            });
            ins.permissions = Some(PermissionFlags {
                can_call_external: true,
                ..Default::default()
            });
        }),
        Err(Refusal::NotMcu)
    );
    assert_eq!(
        with(|p| p.instructions[0].opcode = IrOpcode::CallApi as i32),
        Err(Refusal::Malformed)
    );
    assert_eq!(
        with(|p| p.instructions[1].permissions = None),
        Err(Refusal::Malformed)
    );
    assert_eq!(
        with(|p| {
            if let Some(d) = p.instructions[1].dispatch_metadata.as_mut() {
                d.capability_id = "pump".into();
            }
        }),
        Err(Refusal::Malformed)
    );
    assert_eq!(
        with(|p| p.instructions[0].resource_key = "tank".into()),
        Err(Refusal::NotMcu)
    );
    assert_eq!(
        with(|p| p.instructions[1].instruction_id = "x".repeat(33)),
        Err(Refusal::Capacity)
    );
    assert_eq!(
        with(|p| p.required_capabilities[0].version_req = "^2".into()),
        Err(Refusal::Capability)
    );
    assert_eq!(
        with(|p| p.instructions[1].depends_on = vec!["nowhere".into()]),
        Err(Refusal::Malformed)
    );
    // Bytecode without its CEL field (or the reverse) is not what the compiler writes.
    assert_eq!(
        with(|p| p.instructions[0].expression.clear()),
        Err(Refusal::Malformed)
    );
    assert_eq!(
        with(|p| p.instructions[0].timeout = Some(TimeoutConfig {
            execution_timeout_ms: 10,
            on_timeout: FallbackStrategy::FallbackModel as i32,
        })),
        Err(Refusal::NotMcu)
    );
    assert_eq!(
        with(|p| p.triggers = vec![EventTrigger {
            filter: "event.level > 1".into(),
            ..Default::default()
        }]),
        Err(Refusal::NotMcu)
    );
    assert_eq!(
        with(|p| {
            for n in 0..9 {
                p.instructions.push(IrInstruction {
                    instruction_id: format!("load{n}"),
                    opcode: IrOpcode::Load as i32,
                    depends_on: vec!["open".into()],
                    memory: Some(MemoryAccess {
                        scope: MemoryScope::Execution as i32,
                        key: format!("k{n}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }),
        Err(Refusal::Capacity)
    );
}

#[test]
fn scripts_the_server_refuses_are_not_sound() {
    let answer = |value| Answer {
        capability: "valve",
        action: "open",
        delay_ms: 0,
        result: Ok(value),
    };
    let sound = |fields: &[(&str, Value<'_>)], answers: &[Answer<'_>]| {
        let bytes = encode(fields, answers).expect("encodes");
        state::script_is_sound(&Script::parse(&bytes).expect("parses"))
    };
    assert!(sound(
        &[("a.b", Value::Num(1.0)), ("a.c", Value::Null)],
        &[answer(Value::Bool(true))]
    ));
    assert!(!sound(&[("a", Value::Num(1.0)), ("a.b", Value::Null)], &[]));
    assert!(!sound(&[("a", Value::Num(f64::NAN))], &[]));
    assert!(!sound(&[], &[answer(Value::Num(f64::INFINITY))]));
}

#[test]
fn only_the_canonical_encoding_loads() {
    let good = signed(program(), 7, "test");
    assert!(load(good.clone()).is_ok());
    // An unknown field appended: the server drops it when re-encoding, so refuses it.
    let mut unknown = good.clone();
    unknown.extend_from_slice(&[0xf8, 0x01, 0x01]);
    assert_eq!(load(unknown).map(|_| ()), Err(Refusal::Malformed));
    // An explicit default (target = 0 written out) and a field out of order.
    let mut p = program();
    p.target = Target::Server as i32;
    let mut explicit = signed(p, 7, "test");
    explicit.extend_from_slice(&[0x80, 0x01, 0x00]);
    assert_eq!(load(explicit).map(|_| ()), Err(Refusal::Malformed));
    let mut reordered = good.clone();
    reordered.extend_from_slice(&[0x0a, 0x01, b'x']);
    assert_eq!(load(reordered).map(|_| ()), Err(Refusal::Malformed));
    // A non-minimal length prefix.
    let at = good.iter().position(|&b| b == 0x0a).expect("program_id");
    let mut padded = good[..at + 1].to_vec();
    padded.extend_from_slice(&[good[at + 1] | 0x80, 0x00]);
    padded.extend_from_slice(&good[at + 2..]);
    assert_eq!(load(padded).map(|_| ()), Err(Refusal::Malformed));
}

/// `program()` with an LLM_CALL (one runtime slot) and an EMIT_EVENT (a field, a key) after
/// its valve.
fn linked_program() -> LlmIrProgram {
    let path = |p: &'static str| code(move |b| b.get(p).expect("path"));
    let mut p = program();
    p.instructions.push(IrInstruction {
        instruction_id: "ask".into(),
        opcode: IrOpcode::LlmCall as i32,
        depends_on: vec!["open".into()],
        dispatch_metadata: Some(DispatchMetadata {
            model: "tiny".into(),
            prompt_template: "Level {{level}}".into(),
            output_schema: r#"{"type": "string"}"#.into(),
            dynamic_slots: vec![DynamicSlot {
                slot_id: "level".into(),
                source_type: "runtime".into(),
                source_key: "event.level".into(),
            }],
            ..Default::default()
        }),
        mcu: Some(McuCode {
            slots: vec![McuParam {
                name: "level".into(),
                code: path("event.level"),
            }],
            ..Default::default()
        }),
        permissions: Some(PermissionFlags {
            can_call_external: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    p.instructions.push(IrInstruction {
        instruction_id: "tell".into(),
        opcode: IrOpcode::EmitEvent as i32,
        depends_on: vec!["ask".into()],
        emit: Some(EventEmit {
            topic: "tank.alerts".into(),
            key_expr: "event.site".into(),
        }),
        params: [("answer".to_owned(), "ask".to_owned())].into(),
        mcu: Some(McuCode {
            params: vec![McuParam {
                name: "answer".into(),
                code: path("ask"),
            }],
            event_key: path("event.site"),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

#[test]
fn llm_calls_and_events_are_refused_for_the_servers_reasons() {
    let program = load(signed(linked_program(), 7, "test")).expect("loads");
    let ask = program.detail(2);
    assert_eq!((ask.action, ask.params[0].0), ("tiny", "level"));
    let tell = program.detail(3);
    assert_eq!(tell.topic, "tank.alerts");
    assert!(!tell.event_key.is_empty());
    fn slot(p: &mut LlmIrProgram) -> &mut Vec<DynamicSlot> {
        &mut p.instructions[2]
            .dispatch_metadata
            .as_mut()
            .expect("dispatch")
            .dynamic_slots
    }
    type Change = (&'static str, fn(&mut LlmIrProgram));
    let changes: [Change; 9] = [
        ("a vault slot", |p| slot(p)[0].source_type = "vault".into()),
        ("five slots", |p| {
            let more = slot(p)[0].clone();
            slot(p).extend(std::iter::repeat_n(more, 4));
        }),
        ("a dotted slot name", |p| slot(p)[0].slot_id = "a.b".into()),
        ("a slot without bytecode", |p| {
            p.instructions[2].mcu = None;
        }),
        ("a long model", |p| {
            p.instructions[2]
                .dispatch_metadata
                .as_mut()
                .expect("d")
                .model = "m".repeat(33);
        }),
        ("an output schema outside an LLM_CALL", |p| {
            p.instructions[1]
                .dispatch_metadata
                .as_mut()
                .expect("d")
                .output_schema = r#"{"type": "string"}"#.into();
        }),
        ("an event payload expression", |p| {
            p.instructions[3].expression = "1".into();
        }),
        ("a long topic", |p| {
            p.instructions[3].emit.as_mut().expect("emit").topic = "t".repeat(49);
        }),
        ("a key without bytecode", |p| {
            p.instructions[3]
                .mcu
                .as_mut()
                .expect("mcu")
                .event_key
                .clear();
        }),
    ];
    for (what, change) in changes {
        let mut p = linked_program();
        change(&mut p);
        let server = match eyeflow_ir::mcu::check(&p).map_err(|v| v.kind) {
            Err(ViolationKind::NotMcu) => Refusal::NotMcu,
            Err(ViolationKind::Capacity) => Refusal::Capacity,
            Err(ViolationKind::Malformed) => Refusal::Malformed,
            Ok(()) => panic!("{what}: the server accepts it"),
        };
        assert_eq!(
            load(signed(p, 7, "test")).map(|_| ()),
            Err(server),
            "{what}"
        );
    }
}
