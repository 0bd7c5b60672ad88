//! The device's verdict on a program is the server's: every vector's program, and every
//! copy of it with one byte changed (three masks) or cut short, gets the same refusal
//! reason (or acceptance) from `Program::load` as from the server's own checks, in the
//! order `eyeflow mcu run` makes them (runtime/src/mcu): decode (canonical encoding),
//! signature, IR version, target, the MCU profile (`eyeflow_ir::validate`).
#![allow(missing_docs)]

use std::path::PathBuf;

use eyeflow_firmware::capability::Capability;
use eyeflow_firmware::program::Program;
use eyeflow_firmware::verify::KEYRING;
use eyeflow_ir::mcu::ViolationKind;
use eyeflow_ir::pb::Target;
use eyeflow_ir::{Error, Keyring, Limits};

/// The QEMU board's capabilities (every capability, version 1.0.0): the server has none
/// to check.
const ANY: &[Capability] = &[Capability {
    id: "*",
    version: (1, 0, 0),
}];

fn server(bytes: &[u8], keyring: &Keyring) -> &'static str {
    let program = match eyeflow_ir::decode(bytes, &Limits::default()) {
        Ok(program) => program,
        Err(Error::TooLarge { .. } | Error::TooManyInstructions { .. }) => return "capacity",
        Err(_) => return "malformed",
    };
    if let Err(e) = keyring.verify(&program) {
        return match e {
            Error::UnknownKey { .. } | Error::RevokedKey { .. } => "unknown_key",
            _ => "bad_signature",
        };
    }
    if eyeflow_ir::version::check_runtime_compatible(&program.ir_version).is_err() {
        return "ir_version";
    }
    if program.target != Target::Mcu as i32 {
        return "not_mcu";
    }
    match eyeflow_ir::validate(&program) {
        Ok(()) => "ok",
        Err(Error::McuProfile(v)) => match v.kind {
            ViolationKind::NotMcu => "not_mcu",
            ViolationKind::Capacity => "capacity",
            ViolationKind::Malformed => "malformed",
        },
        Err(_) => "malformed",
    }
}

fn device(bytes: &[u8]) -> &'static str {
    let mut program = Box::new(Program::new());
    match program.load(bytes.to_vec().leak(), KEYRING, ANY) {
        Ok(()) => "ok",
        Err(reason) => reason.name(),
    }
}

#[test]
fn the_device_refuses_what_the_server_refuses_for_the_same_reason() {
    let mut keyring = Keyring::new();
    keyring.trust_as(
        "test",
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key(),
    );
    let vectors = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors");
    let mut programs = 0;
    let mut differ = Vec::new();
    for entry in std::fs::read_dir(&vectors).expect("firmware/vectors") {
        let path = entry.expect("entry").path().join("program.ir");
        let Ok(good) = std::fs::read(&path) else {
            continue;
        };
        let mut variants = vec![good.clone()];
        for at in 0..good.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= mask;
                variants.push(bad);
            }
            variants.push(good[..at].to_vec());
        }
        for bytes in variants {
            programs += 1;
            let (s, d) = (server(&bytes, &keyring), device(&bytes));
            if s != d {
                differ.push(format!("{}: server {s}, device {d}", path.display()));
            }
        }
    }
    assert!(
        programs > 1000,
        "the vectors are missing ({programs} programs)"
    );
    assert!(
        differ.is_empty(),
        "{} of {programs} differ: {:?}",
        differ.len(),
        &differ[..differ.len().min(10)]
    );
}

/// Changes that a byte flip of the file would leave unsigned, re-signed: every vector's
/// instructions with one byte changed (three masks), where the result still decodes as an
/// instruction, signed again with the test key and encoded canonically by the server's own
/// code. The device reads such programs past its signature check — the structural checks,
/// the MCU profile, the instruction reader, the flow — and must still give the server's
/// verdict (firmware/README.md, "Structural checks").
#[test]
fn re_signed_changes_of_instructions_get_the_servers_verdict() {
    use prost::Message;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut keyring = Keyring::new();
    keyring.trust_as("test", key.verifying_key());
    let vectors = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors");
    let (mut programs, mut accepted) = (0, 0);
    let mut differ = Vec::new();
    for entry in std::fs::read_dir(&vectors).expect("firmware/vectors") {
        let path = entry.expect("entry").path().join("program.ir");
        let Ok(file) = std::fs::read(&path) else {
            continue;
        };
        let Ok(good) = eyeflow_ir::decode(&file, &Limits::default()) else {
            continue;
        };
        for (i, instruction) in good.instructions.iter().enumerate() {
            let raw = instruction.encode_to_vec();
            for at in 0..raw.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut changed = raw.clone();
                    changed[at] ^= mask;
                    let Ok(changed) = eyeflow_ir::pb::IrInstruction::decode(changed.as_slice())
                    else {
                        continue;
                    };
                    let mut program = good.clone();
                    program.instructions[i] = changed;
                    eyeflow_ir::keys::sign_as(&mut program, &key, "test");
                    let bytes = eyeflow_ir::encode(&program);
                    programs += 1;
                    let (s, d) = (server(&bytes, &keyring), device(&bytes));
                    accepted += usize::from(d == "ok");
                    if s != d {
                        let why = eyeflow_ir::decode(&bytes, &Limits::default())
                            .map(|p| eyeflow_ir::validate(&p).map_err(|e| e.to_string()));
                        differ.push(format!(
                            "{} instruction {i} byte {at} ^ {mask:#x}: server {s} ({why:?}), device {d}",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        programs > 1000 && accepted > 100,
        "too few programs ({programs}, {accepted} accepted)"
    );
    assert!(
        differ.is_empty(),
        "{} of {programs} differ: {:#?}",
        differ.len(),
        &differ
    );
}

/// Flow enters and leaves a LOOP's body only through the LOOP: the device refuses, as the
/// server's validator does, a dependency or a BRANCH arm across a body's edge (with the same
/// program's arms kept inside their region as the control).
#[test]
fn flow_across_a_loop_body_is_refused_on_both_sides() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut keyring = Keyring::new();
    keyring.trust_as("test", key.verifying_key());
    let vectors = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors");
    let read = |name: &str| {
        let bytes = std::fs::read(vectors.join(name).join("program.ir")).expect("vector");
        eyeflow_ir::decode(&bytes, &Limits::default()).expect("decodes")
    };
    let looped = read("loop_three");
    let check = read("threshold_open")
        .instructions
        .into_iter()
        .find(|i| i.instruction_id == "check")
        .expect("the threshold vector's BRANCH");
    type Edit = dyn Fn(&mut eyeflow_ir::pb::LlmIrProgram);
    let verdicts = |edit: &Edit| {
        let mut program = looped.clone();
        edit(&mut program);
        eyeflow_ir::keys::sign_as(&mut program, &key, "test");
        let bytes = eyeflow_ir::encode(&program);
        let why = eyeflow_ir::validate(&program).err().map(|e| e.to_string());
        (server(&bytes, &keyring), device(&bytes), why)
    };
    fn find(p: &eyeflow_ir::pb::LlmIrProgram, id: &str) -> usize {
        p.instructions
            .iter()
            .position(|i| i.instruction_id == id)
            .expect("instruction")
    }
    // A BRANCH at the top level, before the LOOP, with its condition on the event.
    let branching = |then: &'static str, otherwise: &'static str| {
        let check = check.clone();
        move |p: &mut eyeflow_ir::pb::LlmIrProgram| {
            let mut fork = check.clone();
            fork.instruction_id = "fork".into();
            fork.branch_true_id = then.into();
            fork.branch_false_id = otherwise.into();
            fork.depends_on.clear();
            let reset = find(p, "reset");
            p.instructions[reset].depends_on = vec!["fork".into()];
            p.instructions.push(fork);
        }
    };
    let control = verdicts(&branching("reset", "total"));
    assert_eq!(control, ("ok", "ok", None), "the control must be accepted");
    let crossing: [(&str, &Edit); 4] = [
        ("a BRANCH arm into the body", &branching("reset", "seen")),
        ("a body member on the top level", &|p| {
            let seen = find(p, "seen");
            p.instructions[seen].depends_on.push("reset".into());
        }),
        ("the top level on a body member", &|p| {
            let total = find(p, "total");
            p.instructions[total].depends_on.push("bump".into());
        }),
        ("the LOOP on its own body", &|p| {
            let spin = find(p, "spin");
            p.instructions[spin].depends_on.push("bump".into());
        }),
    ];
    for (what, edit) in crossing {
        let (server, device, why) = verdicts(edit);
        assert_eq!(
            (server, device),
            ("malformed", "malformed"),
            "{what}: {why:?}"
        );
        let why = why.unwrap_or_default();
        assert!(why.contains("flow region"), "{what}: {why}");
    }
}
