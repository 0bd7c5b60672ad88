//! Every refusal has its own error variant, naming the instruction and the field.

use eyeflow_ir::keys::{self, SigningKey};
use eyeflow_ir::pb::{
    IrInstruction, IrOpcode, LlmIrProgram, LoopConfig, MemoryAccess, PriorityPolicy, TimeoutConfig,
};
use eyeflow_ir::testing::{chain_program, sample_program};
use eyeflow_ir::{Error, Keyring, Limits, decode, encode, load, validate};

fn refused(edit: impl FnOnce(&mut LlmIrProgram)) -> Error {
    let mut program = sample_program();
    edit(&mut program);
    validate(&program).expect_err("the edited program must be refused")
}

fn find<'a>(program: &'a mut LlmIrProgram, id: &str) -> &'a mut IrInstruction {
    program
        .instructions
        .iter_mut()
        .find(|i| i.instruction_id == id)
        .expect("instruction exists")
}

#[test]
fn sample_is_valid() {
    validate(&sample_program()).expect("sample program is valid");
    validate(&chain_program(40)).expect("chain program is valid");
}

#[test]
fn duplicate_ids() {
    let err = refused(|p| find(p, "done").instruction_id = "decide".into());
    assert_eq!(
        err,
        Error::DuplicateInstructionId {
            instruction: "decide".into()
        }
    );
    assert!(err.to_string().contains("\"instruction_id\""));
}

#[test]
fn empty_id() {
    let err = refused(|p| p.instructions[1].instruction_id.clear());
    assert_eq!(err, Error::EmptyInstructionId { index: 1 });
}

#[test]
fn unknown_dependency_and_targets() {
    let err = refused(|p| find(p, "too_high").depends_on.push("ghost".into()));
    assert_eq!(
        err.to_string(),
        "instruction \"too_high\": field \"depends_on\" names unknown instruction \"ghost\""
    );
    let err = refused(|p| find(p, "decide").branch_true_id = "nowhere".into());
    assert!(
        matches!(
            err,
            Error::UnknownTarget {
                field: "branch_true_id",
                ..
            }
        ),
        "{err}"
    );
    let err = refused(|p| find(p, "decide").branch_false_id = "nowhere".into());
    assert!(
        matches!(
            err,
            Error::UnknownTarget {
                field: "branch_false_id",
                ..
            }
        ),
        "{err}"
    );
    let err = refused(|p| find(p, "close_valve").compensation_ids.push("undo".into()));
    assert!(
        matches!(
            err,
            Error::UnknownTarget {
                field: "compensation_ids",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn cycles_are_refused_with_their_path() {
    let err = refused(|p| find(p, "read_pressure").depends_on.push("decide".into()));
    match err {
        Error::Cycle { path, .. } => {
            assert!(
                path.contains("read_pressure") && path.contains("decide"),
                "{path}"
            );
        }
        other => panic!("expected a cycle, got {other}"),
    }
    let err = refused(|p| find(p, "too_high").depends_on.push("too_high".into()));
    assert!(matches!(err, Error::Cycle { .. }), "{err}");
}

fn with_loop(max_iterations: Option<u32>) -> LlmIrProgram {
    let mut program = sample_program();
    let body = IrInstruction {
        instruction_id: "sample_one".into(),
        opcode: IrOpcode::Eval as i32,
        expression: "item > 0".into(),
        ..Default::default()
    };
    let mut looped = IrInstruction {
        instruction_id: "each_sensor".into(),
        opcode: IrOpcode::Loop as i32,
        depends_on: vec!["read_pressure".into()],
        ..Default::default()
    };
    looped.r#loop = max_iterations.map(|max_iterations| LoopConfig {
        max_iterations,
        body: vec!["sample_one".into()],
        items_expr: "[1, 2, 3]".into(),
        item_var: "item".into(),
        ..Default::default()
    });
    program.instructions.push(body);
    program.instructions.push(looped);
    program
}

#[test]
fn an_instruction_needing_a_permission_the_program_lacks_is_refused() {
    let mut program = sample_program();
    find(&mut program, "close_valve").permissions = None;
    assert_eq!(
        validate(&program).expect_err("no can_actuate"),
        Error::MissingPermission {
            instruction: "close_valve".into(),
            opcode: "CALL_ACTION",
            permission: "can_actuate",
        }
    );
}

#[test]
fn bounded_loop_is_valid() {
    validate(&with_loop(Some(16))).expect("a bounded loop is valid");
}

/// Flow enters and leaves a LOOP's body only through the LOOP: the executor runs the top
/// level once and a body once per iteration (and the firmware refuses the same programs).
#[test]
fn dependencies_across_a_loop_body_are_refused() {
    let crossing = |edit: fn(&mut LlmIrProgram)| {
        let mut program = with_loop(Some(4));
        edit(&mut program);
        validate(&program).expect_err("crosses a loop body")
    };
    let err = crossing(|p| find(p, "each_sensor").depends_on.push("sample_one".into()));
    assert_eq!(
        err,
        Error::InvalidField {
            instruction: "each_sensor".into(),
            field: "depends_on",
            reason: "names `sample_one`, which is not in its flow region (the top level): flow \
                     enters and leaves a LOOP's body only through the LOOP"
                .into(),
        }
    );
    let err = crossing(|p| {
        find(p, "sample_one")
            .depends_on
            .push("read_pressure".into())
    });
    assert!(
        err.to_string()
            .contains("not in its flow region (the body of LOOP `each_sensor`)"),
        "{err}"
    );
    let err = crossing(|p| find(p, "close_valve").depends_on.push("sample_one".into()));
    assert!(
        err.to_string().contains("\"close_valve\"") && err.to_string().contains("(the top level)"),
        "{err}"
    );
}

/// A BRANCH leads only within its flow region.
#[test]
fn a_branch_leading_across_a_loop_body_is_refused() {
    let mut program = with_loop(Some(4));
    find(&mut program, "decide").branch_false_id = "sample_one".into();
    let err = validate(&program).expect_err("crosses a loop body");
    assert!(
        err.to_string().contains("\"decide\"")
            && err.to_string().contains("branch_false_id")
            && err
                .to_string()
                .contains("leads to `sample_one`, which is in another flow region (the body of LOOP `each_sensor`)"),
        "{err}"
    );
}

/// Without a cycle, the top level lacks an entry only when it is empty: every instruction
/// is another's compensation step.
#[test]
fn a_program_without_an_entry_is_refused() {
    let mut program = sample_program();
    let ids: Vec<String> = program
        .instructions
        .iter()
        .map(|i| i.instruction_id.clone())
        .collect();
    for (n, ins) in program.instructions.iter_mut().enumerate() {
        ins.compensation_ids = vec![ids[(n + 1) % ids.len()].clone()];
    }
    let err = validate(&program).expect_err("no entry");
    assert!(err.to_string().contains("have no entry"), "{err}");
}

#[test]
fn loop_needs_max_iterations() {
    let err = validate(&with_loop(Some(0))).expect_err("zero");
    assert_eq!(
        err,
        Error::UnboundedLoop {
            instruction: "each_sensor".into()
        }
    );
    let err = validate(&with_loop(None)).expect_err("absent");
    assert!(err.to_string().contains("loop.max_iterations"), "{err}");
}

#[test]
fn cycle_is_refused_with_a_loop_present() {
    let mut program = with_loop(Some(4));
    find(&mut program, "read_pressure")
        .depends_on
        .push("each_sensor".into());
    assert!(matches!(
        validate(&program).expect_err("cycle"),
        Error::Cycle { .. }
    ));
}

#[test]
fn priority_levels() {
    let err = refused(|p| {
        find(p, "close_valve").priority_policy = Some(PriorityPolicy {
            priority_level: 100,
            preemptible: false,
            max_wait_ms: 10,
        })
    });
    assert_eq!(
        err,
        Error::InvalidPriority {
            instruction: "close_valve".into(),
            field: "priority_policy.priority_level",
            value: 100
        }
    );
    let err = refused(|p| {
        p.default_priority = Some(PriorityPolicy {
            priority_level: -1,
            preemptible: true,
            max_wait_ms: 10,
        })
    });
    assert!(
        matches!(
            err,
            Error::InvalidPriority {
                field: "default_priority",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn timeouts_must_be_positive() {
    let err = refused(|p| {
        find(p, "close_valve").timeout = Some(TimeoutConfig {
            execution_timeout_ms: 0,
            on_timeout: 5,
        })
    });
    assert_eq!(
        err,
        Error::NonPositiveTimeout {
            instruction: "close_valve".into(),
            field: "timeout.execution_timeout_ms",
            value: 0
        }
    );
    let err = refused(|p| {
        find(p, "close_valve").priority_policy = Some(PriorityPolicy {
            priority_level: 64,
            preemptible: false,
            max_wait_ms: -5,
        })
    });
    assert!(
        matches!(
            err,
            Error::NonPositiveTimeout {
                field: "priority_policy.max_wait_ms",
                value: -5,
                ..
            }
        ),
        "{err}"
    );
    let err = refused(|p| {
        find(p, "read_pressure")
            .dispatch_metadata
            .as_mut()
            .expect("dispatch")
            .timeout_ms = -1
    });
    assert!(
        matches!(
            err,
            Error::NonPositiveTimeout {
                field: "dispatch_metadata.timeout_ms",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn opcodes_need_their_fields() {
    let err = refused(|p| find(p, "too_high").opcode = 99);
    assert_eq!(
        err,
        Error::UnknownOpcode {
            instruction: "too_high".into(),
            value: 99
        }
    );
    let err = refused(|p| find(p, "too_high").opcode = 0);
    assert!(matches!(err, Error::UnknownOpcode { value: 0, .. }));
    let err = refused(|p| find(p, "decide").branch_condition.clear());
    assert_eq!(
        err.to_string(),
        "instruction \"decide\": BRANCH needs field \"branch_condition\""
    );
    let err = refused(|p| {
        let i = find(p, "too_high");
        i.opcode = IrOpcode::Store as i32;
        i.memory = Some(MemoryAccess {
            scope: 0,
            key: "k".into(),
            ..Default::default()
        });
    });
    assert!(
        matches!(
            err,
            Error::InvalidField {
                field: "memory.scope",
                ..
            }
        ),
        "{err}"
    );
    let err = refused(|p| {
        find(p, "close_valve")
            .dispatch_metadata
            .as_mut()
            .expect("dispatch")
            .capability_id = "pump".into()
    });
    assert!(
        err.to_string()
            .contains("not in the program's required_capabilities"),
        "{err}"
    );
}

#[test]
fn program_ids_that_are_paths_are_refused_even_signed() {
    let key = keys::generate().expect("key");
    let mut keyring = Keyring::new();
    keyring.trust(key.verifying_key());
    for id in [
        "../../x",
        "../../../../x",
        "/tmp/x",
        "plant/valve",
        "a\\b",
        ".hidden",
        "a..b",
        "Valve",
        "valve guard",
        "",
    ] {
        let mut program = sample_program();
        program.program_id = id.to_owned();
        keys::sign(&mut program, &key);
        let err = load(&encode(&program), &keyring, &Limits::default())
            .expect_err("a path-like id must be refused");
        assert!(
            matches!(
                err,
                Error::InvalidProgramField {
                    field: "program_id",
                    ..
                }
            ),
            "{id:?}: {err}"
        );
        assert!(err.to_string().contains("\"program_id\""), "{err}");
    }
    let long = "a".repeat(64);
    assert!(
        refused(|p| p.program_id = long)
            .to_string()
            .contains("64 bytes")
    );
    for ok in [
        "valve-guard",
        "a",
        "plant-a.valve_2",
        "0day",
        &"a".repeat(63),
    ] {
        let mut program = sample_program();
        program.program_id = ok.to_owned();
        validate(&program).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
}

#[test]
fn versions_are_strict_semver() {
    for version in ["1.0", "v1.0.0", "01.0.0", "1.0.0+build", "1.0.0 ", ""] {
        let err = refused(|p| p.version = version.to_owned());
        assert!(
            matches!(
                err,
                Error::InvalidProgramField {
                    field: "version",
                    ..
                }
            ),
            "{version:?}: {err}"
        );
    }
    let long = format!("1.0.0-{}", "a".repeat(60));
    assert!(
        refused(|p| p.version = long)
            .to_string()
            .contains("bytes long")
    );
    for ok in ["1.0.0", "0.3.0", "2.1.0-rc.1"] {
        let mut program = sample_program();
        program.version = ok.to_owned();
        validate(&program).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
}

#[test]
fn header_fields() {
    let err = refused(|p| p.version = "one".into());
    assert!(
        matches!(
            err,
            Error::InvalidProgramField {
                field: "version",
                ..
            }
        ),
        "{err}"
    );
    let err = refused(|p| p.program_id.clear());
    assert!(
        matches!(
            err,
            Error::InvalidProgramField {
                field: "program_id",
                ..
            }
        ),
        "{err}"
    );
    let err = refused(|p| p.instructions.clear());
    assert!(
        matches!(
            err,
            Error::InvalidProgramField {
                field: "instructions",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn keyring_refusals() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let other = SigningKey::from_bytes(&[2; 32]);
    let mut keyring = Keyring::new();
    let id = keyring.trust(key.verifying_key());
    let limits = Limits::default();

    let unsigned = encode(&sample_program());
    assert!(matches!(
        load(&unsigned, &keyring, &limits),
        Err(Error::Unsigned { .. })
    ));

    let mut by_other = sample_program();
    keys::sign(&mut by_other, &other);
    assert!(matches!(
        load(&encode(&by_other), &keyring, &limits),
        Err(Error::UnknownKey { .. })
    ));

    // Signed by another key but claiming the trusted key's id.
    by_other.signing_key_id = id.clone();
    assert!(matches!(
        load(&encode(&by_other), &keyring, &limits),
        Err(Error::BadSignature { .. })
    ));

    let mut good = sample_program();
    keys::sign(&mut good, &key);
    load(&encode(&good), &keyring, &limits).expect("trusted key");
    good.signature.truncate(10);
    assert!(matches!(
        load(&encode(&good), &keyring, &limits),
        Err(Error::MalformedSignature { len: 10, .. })
    ));

    let mut good = sample_program();
    keys::sign(&mut good, &key);
    assert!(keyring.revoke(&id));
    assert!(matches!(
        load(&encode(&good), &keyring, &limits),
        Err(Error::RevokedKey { .. })
    ));
    keyring.trust(key.verifying_key());
    assert!(
        matches!(
            load(&encode(&good), &keyring, &limits),
            Err(Error::RevokedKey { .. })
        ),
        "re-trusting must not un-revoke"
    );
}

#[test]
fn incompatible_ir_version_is_refused_after_signature() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let mut keyring = Keyring::new();
    keyring.trust(key.verifying_key());
    let mut program = sample_program();
    program.ir_version = "3.0".into();
    keys::sign(&mut program, &key);
    let err = load(&encode(&program), &keyring, &Limits::default()).expect_err("IR 3.0");
    assert_eq!(
        err.to_string(),
        "IR 3.0 needs runtime 3.x or newer; this runtime is 2.0"
    );
}

#[test]
fn limits() {
    let bytes = encode(&chain_program(100));
    let err = decode(
        &bytes,
        &Limits {
            max_bytes: 1000,
            max_instructions: 4096,
        },
    )
    .expect_err("size");
    assert_eq!(
        err,
        Error::TooLarge {
            size: bytes.len(),
            limit: 1000
        }
    );
    let err = decode(
        &bytes,
        &Limits {
            max_bytes: 1 << 20,
            max_instructions: 50,
        },
    )
    .expect_err("count");
    assert_eq!(
        err,
        Error::TooManyInstructions {
            count: 101,
            limit: 50
        }
    );
    assert!(matches!(
        decode(&[0xff, 0xff, 0xff], &Limits::default()),
        Err(Error::Decode(_))
    ));
}
